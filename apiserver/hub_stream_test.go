package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// stream collects every frame of one NDJSON watch or WebSocket, pings
// included, until the test ends.
type stream struct {
	ch   chan frame
	done chan struct{} // closed when the stream ends
	err  error         // why it ended, once done is closed
}

func collect(t *testing.T, next func() ([]byte, error), closeFn func()) *stream {
	st := &stream{ch: make(chan frame, 1<<16), done: make(chan struct{})}
	go func() {
		defer close(st.done)
		for {
			b, err := next()
			if err != nil {
				st.err = err
				return
			}
			var f frame
			if err := json.Unmarshal(b, &f); err != nil {
				st.err = fmt.Errorf("bad frame %q: %w", b, err)
				return
			}
			st.ch <- f
		}
	}()
	t.Cleanup(func() {
		closeFn()
		<-st.done
	})
	return st
}

// watchNDJSON opens path with the given key and collects its frames.
func watchNDJSON(t *testing.T, url, path, accessKey, secretKey string) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+path, nil)
	req.SetBasicAuth(accessKey, secretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		cancel()
		t.Fatalf("watch %s: %v %v", path, resp, err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	return collect(t, func() ([]byte, error) {
		if sc.Scan() {
			return sc.Bytes(), nil
		}
		if sc.Err() != nil {
			return nil, sc.Err()
		}
		return nil, io.EOF
	}, func() { cancel(); resp.Body.Close() })
}

// subscribeWS opens /v1/subscribe?query with the given key and collects its
// frames.
func subscribeWS(t *testing.T, url, query, accessKey, secretKey string) *stream {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+accessKey+":"+secretKey)
	conn, resp, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(url, "http")+"/v1/subscribe?"+query, h)
	if err != nil {
		t.Fatalf("subscribe %s: %v (%v)", query, err, resp)
	}
	return collect(t, func() ([]byte, error) {
		_, b, err := conn.ReadMessage()
		return b, err
	}, func() { conn.Close() })
}

// until reads frames (pings dropped) until stop says so, and returns them.
// Events must come in revision order; an error or resync frame, or the end
// of the stream, fails the test.
func (st *stream) until(t *testing.T, what string, stop func(frame) bool) []frame {
	t.Helper()
	var out []frame
	var last int64
	for {
		select {
		case f := <-st.ch:
			switch f.Name {
			case api.EventPing:
				continue
			case api.EventChange, api.EventRemove:
			default:
				t.Fatalf("%s: stream sent %+v", what, f)
			}
			if f.Revision <= last {
				t.Fatalf("%s: revision %d after %d", what, f.Revision, last)
			}
			last = f.Revision
			out = append(out, f)
			if stop(f) {
				return out
			}
		case <-st.done:
			t.Fatalf("%s: stream ended after %d events: %v", what, len(out), st.err)
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no event within 60s (after %d)", what, len(out))
		}
	}
}

// parallel runs fn(i) for i in [0,n) on workers goroutines and fails the
// test on the first error.
func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	next := make(chan int)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if first != nil {
		t.Fatal(first)
	}
}

// A subscriber that sees one host is not cut off while 10,000 containers of
// another host are written and deleted in a burst, and gets its own host's
// changes, each once, in order. The queue holds 16 events: offered the
// burst, as the hub did when it filtered late, it would be cut off at once.
func TestIntegrationHostFilteredSubscriberSurvivesBurst(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{SubscriberBuffer: 16, PingInterval: 500 * time.Millisecond})
	creds := readCreds(t, s)
	tok, err := c.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	mine, err := client.New(s.URL(), "", "").Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "mine"})
	if err != nil {
		t.Fatal(err)
	}
	others, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "others"}})
	if err != nil {
		t.Fatal(err)
	}
	stack := mustStack(t, c, "burst")

	agent := subscribeWS(t, s.URL(), "types=container", mine.AccessKey, mine.SecretKey)
	byHost := watchNDJSON(t, s.URL(), "/v1/containers?watch=true&hostId="+mine.Host.ID, creds.AccessKey, creds.SecretKey)

	const burst, ownEvery = 10000, 500
	var mu sync.Mutex
	var theirs, own []string
	create := func(host string) (string, error) {
		ct, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{StackID: stack.ID, HostID: host}})
		if err != nil {
			return "", err
		}
		return ct.ID, nil
	}
	parallel(t, burst, 16, func(i int) error {
		id, err := create(others.ID)
		if err != nil {
			return err
		}
		mu.Lock()
		theirs = append(theirs, id)
		mu.Unlock()
		if i%ownEvery == 0 {
			id, err := create(mine.Host.ID)
			if err != nil {
				return err
			}
			mu.Lock()
			own = append(own, id)
			mu.Unlock()
		}
		return nil
	})
	all := append(append([]string(nil), theirs...), own...)
	parallel(t, len(all), 16, func(i int) error {
		_, err := c.Containers().Delete(ctx, all[i])
		return err
	})
	last, err := create(mine.Host.ID)
	if err != nil {
		t.Fatal(err)
	}

	isOwn := map[string]bool{last: true}
	for _, id := range own {
		isOwn[id] = true
	}
	for name, st := range map[string]*stream{"agent WebSocket": agent, "hostId= watch": byHost} {
		got := st.until(t, name, func(f frame) bool { return f.Resource.ID == last })
		changes, removes := map[string]int{}, map[string]int{}
		for _, f := range got {
			if !isOwn[f.Resource.ID] {
				t.Fatalf("%s: got %s of %s, a container of another host", name, f.Name, f.Resource.ID)
			}
			if f.Name == api.EventChange {
				changes[f.Resource.ID]++
			} else {
				removes[f.Resource.ID]++
				if changes[f.Resource.ID] != 1 {
					t.Fatalf("%s: removal of %s before its creation", name, f.Resource.ID)
				}
			}
		}
		for _, id := range own {
			if changes[id] != 1 || removes[id] != 1 {
				t.Fatalf("%s: container %s: %d changes and %d removals, want 1 and 1", name, id, changes[id], removes[id])
			}
		}
		if len(got) != 2*len(own)+1 {
			t.Fatalf("%s: %d events, want %d", name, len(got), 2*len(own)+1)
		}
		t.Logf("%s: %d events of its own host out of %d writes, still connected", name, len(got), 2*(burst+len(own))+1)
	}
}

// A subscriber filtered by collection and label selector gets exactly the
// matching events: an object that stops matching comes as a removal, one
// that starts matching as a change, and nothing else.
func TestIntegrationLabelFilteredSubscriberGetsExactlyItsEvents(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{PingInterval: 200 * time.Millisecond})
	creds := readCreds(t, s)
	ws := subscribeWS(t, s.URL(), "types=container&labelSelector=tier=web", creds.AccessKey, creds.SecretKey)
	nd := watchNDJSON(t, s.URL(), "/v1/containers?watch=true&labelSelector=tier%3Dweb", creds.AccessKey, creds.SecretKey)

	stack := mustStack(t, c, "labels")
	type want struct{ name, id string }
	var wants []want
	newContainer := func(labels map[string]string) *api.Container {
		ct, err := c.Containers().Create(ctx, &api.Container{Meta: api.Meta{Labels: labels}, Spec: api.ContainerSpec{StackID: stack.ID}})
		if err != nil {
			t.Fatal(err)
		}
		if labels["tier"] == "web" {
			wants = append(wants, want{api.EventChange, ct.ID})
		}
		return ct
	}
	relabel := func(id, tier string) {
		if _, err := c.Containers().Patch(ctx, id, map[string]any{"labels": map[string]any{"tier": tier}}); err != nil {
			t.Fatal(err)
		}
	}
	web := newContainer(map[string]string{"tier": "web"})
	db := newContainer(map[string]string{"tier": "db"})
	plain := newContainer(nil)
	if _, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "web-stack", Labels: map[string]string{"tier": "web"}}}); err != nil {
		t.Fatal(err) // another collection: not wanted
	}
	web2 := newContainer(map[string]string{"tier": "web", "x": "1"})
	relabel(web.ID, "db") // stops matching: a removal
	wants = append(wants, want{api.EventRemove, web.ID})
	relabel(db.ID, "web") // starts matching: a change
	wants = append(wants, want{api.EventChange, db.ID})
	relabel(plain.ID, "cache") // never matches
	relabel(web2.ID, "web")    // no change, no write
	if _, err := c.Containers().Patch(ctx, web2.ID, map[string]any{"labels": map[string]any{"x": "2"}}); err != nil {
		t.Fatal(err)
	}
	wants = append(wants, want{api.EventChange, web2.ID})
	for _, id := range []string{web.ID, plain.ID, db.ID} { // only db matches now
		if _, err := c.Containers().Delete(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	wants = append(wants, want{api.EventRemove, db.ID})
	last := newContainer(map[string]string{"tier": "web"})

	for name, st := range map[string]*stream{"WebSocket": ws, "NDJSON": nd} {
		got := st.until(t, name, func(f frame) bool { return f.Resource.ID == last.ID })
		var gotPairs []want
		for _, f := range got {
			gotPairs = append(gotPairs, want{f.Name, f.Resource.ID})
		}
		if fmt.Sprint(gotPairs) != fmt.Sprint(wants) {
			t.Fatalf("%s:\n got %v\nwant %v", name, gotPairs, wants)
		}
	}
}

// checkBookmarks reads a stream until two pings have reached revision
// until, and checks that ping revisions never go backwards and that no event
// comes after a ping carrying its revision or a later one. It returns the
// number of events seen.
func checkBookmarks(t *testing.T, name string, st *stream, until int64) int {
	t.Helper()
	var lastPing int64
	events, pingsAfter := 0, 0
	for pingsAfter < 2 {
		select {
		case f := <-st.ch:
			switch f.Name {
			case api.EventPing:
				if f.Revision < lastPing {
					t.Fatalf("%s: ping revision went back from %d to %d", name, lastPing, f.Revision)
				}
				lastPing = f.Revision
				if lastPing >= until {
					pingsAfter++
				}
			case api.EventChange, api.EventRemove:
				if f.Revision <= lastPing {
					t.Fatalf("%s: event at %d after a ping at %d, which claimed it was sent", name, f.Revision, lastPing)
				}
				events++
			default:
				t.Fatalf("%s: stream sent %+v", name, f)
			}
		case <-st.done:
			t.Fatalf("%s: stream ended: %v", name, st.err)
		case <-time.After(60 * time.Second):
			t.Fatalf("%s: no ping reached revision %d within 60s (last %d)", name, until, lastPing)
		}
	}
	return events
}

// Pings carry a revision up to which the subscriber has been sent every
// event it wants: it never goes backwards, never passes an event still to
// come, and moves on with writes the subscriber does not see (so a
// filtered watcher can resume from it).
func TestIntegrationPingsCarryRevisionBookmarks(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{PingInterval: 20 * time.Millisecond, RingSize: 5})
	creds := readCreds(t, s)
	first := mustStack(t, c, "bookmarks")
	// History the catching-up watcher replays from etcd (the ring holds 5).
	for i := 0; i < 30; i++ {
		mustStack(t, c, "early"+strconv.Itoa(i))
	}
	streams := map[string]*stream{
		"live WebSocket":     subscribeWS(t, s.URL(), "types=container&labelSelector=tier=web", creds.AccessKey, creds.SecretKey),
		"live NDJSON":        watchNDJSON(t, s.URL(), "/v1/containers?watch=true&labelSelector=tier%3Dweb", creds.AccessKey, creds.SecretKey),
		"catching-up NDJSON": watchNDJSON(t, s.URL(), "/v1/stacks?watch=true&labelSelector=tier%3Dweb&since="+strconv.FormatInt(first.Revision, 10), creds.AccessKey, creds.SecretKey),
	}
	// The streams' frames pile up in their channels (65,536 each) and are
	// checked in order afterwards, pings interleaved as they were sent.
	// Concurrent writers make bursts, so pings also fall while events wait
	// in a subscriber's queue.
	parallel(t, 100, 8, func(i int) error {
		tier := "db"
		if i%3 == 0 {
			tier = "web"
		}
		if _, err := c.Containers().Create(ctx, &api.Container{Meta: api.Meta{Labels: map[string]string{"tier": tier}}, Spec: api.ContainerSpec{StackID: first.ID}}); err != nil {
			return err
		}
		_, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "s" + strconv.Itoa(i), Labels: map[string]string{"tier": tier}}})
		return err
	})
	// The last write matches no stream: pings must still get past it.
	unwatched, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "unwatched"}})
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range streams {
		n := checkBookmarks(t, name, st, unwatched.Revision)
		if n != 34 {
			t.Fatalf("%s: %d events, want 34", name, n)
		}
	}
}

// syncBuffer collects a server's log for a test to search.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) count(all ...string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, line := range strings.Split(s.b.String(), "\n") {
		ok := true
		for _, sub := range all {
			ok = ok && strings.Contains(line, sub)
		}
		if ok {
			n++
		}
	}
	return n
}

// A client that stops reading is cut off once a write has waited the write
// timeout, on both kinds of stream, with the reason logged; it does not
// hold a goroutine and a queue for as long as it keeps the connection.
func TestIntegrationStreamWriteDeadline(t *testing.T) {
	integration(t)
	ctx := context.Background()
	logs := &syncBuffer{}
	// The queue is long enough for every event: only the deadline can end
	// these streams.
	s, c := testenv.StartServer(t, apiserver.Options{
		StreamWriteTimeout: 500 * time.Millisecond, SubscriberBuffer: 1000, MaxBodyBytes: 1 << 20,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	creds := readCreds(t, s)
	// Clients with a small receive buffer, so the server's writes block
	// sooner; they read nothing until the end.
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}); err != nil {
			return err
		}
		return serr
	}}
	hc := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequest("GET", s.URL()+"/v1/stacks?watch=true", nil)
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch: %v %v", resp, err)
	}
	defer resp.Body.Close()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+creds.AccessKey+":"+creds.SecretKey)
	wsd := &websocket.Dialer{NetDialContext: dialer.DialContext}
	conn, _, err := wsd.Dial("ws"+strings.TrimPrefix(s.URL(), "http")+"/v1/subscribe?types=stack", h)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	cutOff := func() int {
		return logs.count("event stream cut off", `"key":"`+creds.AccessKey+`"`)
	}
	big := strings.Repeat("x", 200<<10)
	st := mustStack(t, c, "big")
	const writes = 150 // 30 MB: more than the socket buffers of both ends hold
	for i := 0; i < writes && cutOff() < 2; i++ {
		if _, err := c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"answers": map[string]any{"payload": strconv.Itoa(i) + big}}}); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(60 * time.Second); cutOff() < 2; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 streams that stopped reading were cut off; log:\n%s", cutOff(), logs.b.String())
		}
	}
	// What was sent before the cut can still be read; then both end.
	ended := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		n := 0
		for sc.Scan() {
			n++
		}
		ended <- fmt.Sprintf("NDJSON after %d frames (%v)", n, sc.Err())
	}()
	go func() {
		n := 0
		for {
			if _, _, err := conn.ReadMessage(); err != nil {
				ended <- fmt.Sprintf("WebSocket after %d frames (%v)", n, err)
				return
			}
			n++
		}
	}()
	for i := 0; i < 2; i++ {
		select {
		case how := <-ended:
			t.Logf("stream ended: %s", how)
		case <-time.After(60 * time.Second):
			t.Fatal("a stream cut off by the server still delivers after 60s")
		}
	}
}

// WebSocket upgrades from a page of another origin are refused: browsers
// attach Basic credentials to them on their own. No Origin (a program) and
// the server's own origin are accepted.
func TestIntegrationWebSocketOriginChecked(t *testing.T) {
	integration(t)
	s, _ := testenv.StartServer(t, apiserver.Options{})
	creds := readCreds(t, s)
	u := "ws" + strings.TrimPrefix(s.URL(), "http") + "/v1/subscribe?types=stack"
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{s.URL(), true},
		{"http://evil.example", false},
		{"http://" + strings.TrimPrefix(s.URL(), "http://") + ".evil.example", false},
		{"null", false},
	} {
		h := http.Header{}
		h.Set("Authorization", "Bearer "+creds.AccessKey+":"+creds.SecretKey)
		if tc.origin != "" {
			h.Set("Origin", tc.origin)
		}
		conn, resp, err := websocket.DefaultDialer.Dial(u, h)
		if tc.ok {
			if err != nil {
				t.Fatalf("origin %q: %v (%v)", tc.origin, err, resp)
			}
			conn.Close()
			continue
		}
		if err == nil {
			conn.Close()
			t.Fatalf("origin %q: upgraded, want 403", tc.origin)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %q: %v (%v), want 403", tc.origin, err, resp)
		}
		var e api.Error
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Code != api.CodeForbidden || e.Field != "Origin" {
			t.Fatalf("origin %q: body %+v (%v), want a Forbidden error naming Origin", tc.origin, e, err)
		}
	}
}

// A key that may not read a collection is refused a stream of it the same
// way on both transports, before any WebSocket upgrade.
func TestIntegrationStreamsRefuseUnreadableCollections(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{})
	key, err := c.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: "svc"}, Spec: api.APIKeySpec{Role: api.RoleService}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &api.Credentials{AccessKey: key.ID, SecretKey: key.Status.SecretKey}
	code, body := raw(t, s.URL(), "GET", "/v1/apikeys?watch=true", "", svc)
	if code != http.StatusForbidden {
		t.Fatalf("NDJSON watch of apikeys by a service key: %d %s, want 403", code, body)
	}
	var ndErr api.Error
	if err := json.Unmarshal(body, &ndErr); err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+svc.AccessKey+":"+svc.SecretKey)
	base := "ws" + strings.TrimPrefix(s.URL(), "http") + "/v1/subscribe?types="
	for _, types := range []string{"apikey", "stack,apikeys", "registrationtoken"} {
		conn, resp, err := websocket.DefaultDialer.Dial(base+types, h)
		if err == nil {
			conn.Close()
			t.Fatalf("types=%s: a service key got a WebSocket upgrade, want 403", types)
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("types=%s: %v (%v), want 403", types, err, resp)
		}
		var wsErr api.Error
		if err := json.NewDecoder(resp.Body).Decode(&wsErr); err != nil {
			t.Fatal(err)
		}
		if types == "apikey" && wsErr != ndErr {
			t.Fatalf("WebSocket refusal %+v differs from the NDJSON one %+v", wsErr, ndErr)
		}
	}
	// What it may read, it may stream.
	conn, resp, err := websocket.DefaultDialer.Dial(base+"stack,service", h)
	if err != nil {
		t.Fatalf("service key streaming stacks: %v (%v)", err, resp)
	}
	conn.Close()
}
