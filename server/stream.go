package server

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover/drover/api"
)

func parseSince(r *http.Request) (int64, *api.Error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "since", "since must be a non-negative revision, got %q", v)
	}
	return n, nil
}

// ndjsonSink writes one frame per line.
type ndjsonSink struct {
	bw *bufio.Writer
	fl http.Flusher
}

func (n *ndjsonSink) writeFrame(b []byte) error {
	n.bw.Write(b)
	return n.bw.WriteByte('\n')
}

func (n *ndjsonSink) flush() error {
	if err := n.bw.Flush(); err != nil {
		return err
	}
	n.fl.Flush()
	return nil
}

func (s *Server) watchNDJSON(w http.ResponseWriter, r *http.Request, f *filter) {
	since, aerr := parseSince(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "streaming unsupported"))
		return
	}
	sub := s.hub.subscribe(since, f, s.opts.SubscriberBuffer)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	fl.Flush()
	sink := &ndjsonSink{bw: bufio.NewWriterSize(w, 32<<10), fl: fl}
	if err := sub.stream(r.Context(), sink, s.opts.PingInterval); err != nil {
		s.log.Debug("watch ended", "err", err)
	}
}

var upgrader = websocket.Upgrader{
	ReadBufferSize:  1024,
	WriteBufferSize: 32 << 10,
	// Requests are authenticated by header, which browsers do not attach
	// cross-site on their own, so the origin need not be checked.
	CheckOrigin: func(*http.Request) bool { return true },
}

type wsSink struct{ c *websocket.Conn }

func (wsSink) flush() error { return nil } // each message is written whole

func (ws wsSink) writeFrame(b []byte) error {
	ws.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return ws.c.WriteMessage(websocket.TextMessage, b)
}

// subscribeWS serves GET /v1/subscribe?types=host,container&since=REV.
func (s *Server) subscribeWS(w http.ResponseWriter, r *http.Request) {
	p := principalFrom(r.Context())
	f, aerr := filterFromQuery(r, p)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	if types := r.URL.Query().Get("types"); types != "" {
		f.collections = map[string]bool{}
		for _, t := range strings.Split(types, ",") {
			t = strings.TrimSpace(t)
			k, ok := api.KindByType(t)
			if !ok {
				if k, ok = api.KindByCollection(t); !ok {
					writeError(w, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "types", "unknown type %q in types", t))
					return
				}
			}
			f.collections[k.Collection] = true
		}
	}
	since, aerr := parseSince(r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
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
	sub := s.hub.subscribe(since, f, s.opts.SubscriberBuffer)
	err = sub.stream(ctx, wsSink{conn}, s.opts.PingInterval)
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	select {
	case <-sub.dead: // closed before deathCause is read: no race
		msg = websocket.FormatCloseMessage(websocket.CloseTryAgainLater, truncate(sub.deathCause, 120))
	default:
	}
	conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
	if err != nil {
		s.log.Debug("subscription ended", "err", err)
	}
}
