package apiserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/events"
	"github.com/drover/drover/store"
)

func (s *Server) parseSince(r *http.Request) (int64, *api.Error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "since", "since must be a non-negative revision, got %q", v)
	}
	// A revision the store has not reached would wait for nothing, or miss
	// what comes before it: refuse it, saying where the store is.
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.StoreTimeout)
	defer cancel()
	resp, err := s.st.Cli.Get(ctx, s.st.Prefix+"ready", clientv3.WithCountOnly())
	if err != nil {
		return 0, store.Unavailable(err)
	}
	if n > resp.Header.Revision {
		return 0, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "since", "since %d is in the future: the store is at revision %d; list to get a revision to watch from", n, resp.Header.Revision)
	}
	return n, nil
}

// defaultStreamWriteTimeout is Options.StreamWriteTimeout when unset.
const defaultStreamWriteTimeout = 10 * time.Second

func (s *Server) streamWriteTimeout() time.Duration {
	if s.opts.StreamWriteTimeout > 0 {
		return s.opts.StreamWriteTimeout
	}
	return defaultStreamWriteTimeout
}

// ndjsonSink writes one frame per line. Every write to the connection has a
// deadline, so a client that stops reading ends the stream instead of
// pinning its goroutine (and its queue) forever.
type ndjsonSink struct {
	bw      *bufio.Writer
	rc      *http.ResponseController
	timeout time.Duration
	armed   time.Time // when the deadline was last pushed out
}

func newNDJSONSink(w http.ResponseWriter, timeout time.Duration) *ndjsonSink {
	n := &ndjsonSink{rc: http.NewResponseController(w), timeout: timeout}
	n.bw = bufio.NewWriterSize(deadlineWriter{n, w}, 32<<10)
	return n
}

// arm pushes the write deadline out to timeout from now. Moving a deadline
// costs a timer update, so it moves at most every quarter timeout: a write
// may fail after three quarters of the timeout, never later than all of it.
func (n *ndjsonSink) arm() error {
	now := time.Now()
	if now.Sub(n.armed) < n.timeout/4 {
		return nil
	}
	n.armed = now
	if err := n.rc.SetWriteDeadline(now.Add(n.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// deadlineWriter arms the deadline before every write that reaches the
// connection (the bufio.Writer writes through when its buffer fills).
type deadlineWriter struct {
	n *ndjsonSink
	w io.Writer
}

func (d deadlineWriter) Write(b []byte) (int, error) {
	if err := d.n.arm(); err != nil {
		return 0, err
	}
	return d.w.Write(b)
}

func (n *ndjsonSink) WriteFrame(b []byte) error {
	n.bw.Write(b)
	return n.bw.WriteByte('\n')
}

func (n *ndjsonSink) Flush() error {
	if err := n.bw.Flush(); err != nil {
		return err
	}
	if err := n.arm(); err != nil {
		return err
	}
	return n.rc.Flush()
}

func (s *Server) watchNDJSON(w http.ResponseWriter, r *http.Request, f *events.Filter) {
	// A watch lasts: lift the request's read deadline (a GET has no body).
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	since, aerr := s.parseSince(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if _, ok := w.(http.Flusher); !ok {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "streaming unsupported"))
		return
	}
	sub := s.hub.Subscribe(since, f, s.opts.SubscriberBuffer)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	sink := newNDJSONSink(w, s.streamWriteTimeout())
	err := sink.Flush()
	if err == nil {
		err = sub.Stream(r.Context(), sink, s.opts.PingInterval)
	}
	s.streamEnded(r, err)
}

// streamEnded logs why a stream ended. A write that timed out means the
// client stopped reading: it is cut off and counted as a slow subscriber.
func (s *Server) streamEnded(r *http.Request, err error) {
	if err == nil {
		return
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		s.metrics.hub.SlowSubscribers.Inc()
		key := ""
		if p := principalFrom(r.Context()); p != nil {
			key = p.AccessKey
		}
		s.log.Info("event stream cut off: the client took no data within the write timeout", "key", key, "remote", r.RemoteAddr, "timeout", s.streamWriteTimeout())
		return
	}
	s.log.Debug("event stream ended", "err", err)
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 32 << 10,
	CheckOrigin:     sameOrigin,
}

// sameOrigin accepts a WebSocket handshake with no Origin (a program, not a
// browser) or one whose Origin is the host it was sent to. Browsers resend
// Basic credentials to a site on their own, so a page elsewhere must not be
// able to open an authenticated stream.
func sameOrigin(r *http.Request) bool {
	origin := r.Header["Origin"]
	if len(origin) == 0 {
		return true
	}
	u, err := url.Parse(origin[0])
	return err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host)
}

type wsSink struct {
	c       *websocket.Conn
	timeout time.Duration
}

func (wsSink) Flush() error { return nil } // each message is written whole

func (ws wsSink) WriteFrame(b []byte) error {
	ws.c.SetWriteDeadline(time.Now().Add(ws.timeout))
	return ws.c.WriteMessage(websocket.TextMessage, b)
}

// subscribeWS serves GET /v1/subscribe?types=host,container&since=REV.
// Everything that can be refused is refused before the upgrade, with the
// same JSON errors as the NDJSON watch.
func (s *Server) subscribeWS(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "Upgrade", "GET /v1/subscribe is a WebSocket: send Connection: Upgrade and Upgrade: websocket (for a plain HTTP stream, GET /v1/<collection>?watch=1 answers NDJSON)"))
		return
	}
	if !sameOrigin(r) {
		writeError(w, api.NewError(http.StatusForbidden, api.CodeForbidden, "Origin", "a WebSocket from origin %q may not subscribe on %q: only same-origin pages (or clients sending no Origin) may", r.Header.Get("Origin"), r.Host))
		return
	}
	f, aerr := filterFromQuery(r, p)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if types := r.URL.Query().Get("types"); types != "" {
		f.Collections = map[string]bool{}
		for _, t := range strings.Split(types, ",") {
			t = strings.TrimSpace(t)
			k, ok := api.KindByType(t)
			if !ok {
				if k, ok = api.KindByCollection(t); !ok {
					writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "types", "unknown type %q in types", t))
					return
				}
			}
			if !p.CanRead(k.Collection) {
				writeError(w, forbidden(p, "read "+k.Collection))
				return
			}
			f.Collections[k.Collection] = true
		}
	}
	since, aerr := s.parseSince(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	conn.SetReadDeadline(time.Time{}) // the request's deadline does not bind the stream
	defer conn.Close()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Read (and drop) what the client sends, so close and ping frames are
	// handled and a gone client ends the stream.
	go func() {
		defer cancel()
		for {
			if _, _, err := conn.NextReader(); err != nil {
				return
			}
		}
	}()
	sub := s.hub.Subscribe(since, f, s.opts.SubscriberBuffer)
	err = sub.Stream(ctx, wsSink{conn, s.streamWriteTimeout()}, s.opts.PingInterval)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	if cause, dead := sub.Death(); dead {
		msg = websocket.FormatCloseMessage(websocket.CloseTryAgainLater, truncate(cause, 120))
	}
	conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	s.streamEnded(r, err)
}
