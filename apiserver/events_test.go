package apiserver_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

type frame struct {
	Name     string `json:"name"`
	Revision int64  `json:"revision"`
	Message  string `json:"message"`
	Resource struct {
		Type     string `json:"type"`
		ID       string `json:"id"`
		Name     string `json:"name"`
		Revision int64  `json:"revision"`
	} `json:"resource"`
}

func dialWS(t *testing.T, s *apiserver.Server, query string) *websocket.Conn {
	t.Helper()
	creds := readCreds(t, s)
	u := "ws" + strings.TrimPrefix(s.URL(), "http") + "/v1/subscribe?" + query
	h := http.Header{}
	h.Set("Authorization", "Bearer "+creds.AccessKey+":"+creds.SecretKey)
	conn, resp, err := websocket.DefaultDialer.Dial(u, h)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", u, err, resp)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// nextEvent reads frames, skipping pings, until one arrives or 10s pass.
func nextEvent(t *testing.T, conn *websocket.Conn) frame {
	t.Helper()
	for {
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("reading event: %v", err)
		}
		var f frame
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("bad frame %s: %v", b, err)
		}
		if f.Name != api.EventPing {
			return f
		}
	}
}

func TestIntegrationWebSocketEvents(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{PingInterval: 200 * time.Millisecond})
	conn := dialWS(t, s, "types=stack,container")
	st := mustStack(t, c, "ev")
	mustService(t, c, st.ID, "web") // type not subscribed: must not arrive
	ct, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{StackID: st.ID}})
	if err != nil {
		t.Fatal(err)
	}
	f := nextEvent(t, conn)
	if f.Name != api.EventChange || f.Resource.ID != st.ID || f.Revision != st.Revision || f.Resource.Revision != st.Revision {
		t.Fatalf("first event = %+v, want change of stack %s at %d", f, st.ID, st.Revision)
	}
	if f = nextEvent(t, conn); f.Resource.ID != ct.ID {
		t.Fatalf("second event = %+v, want container %s (services are filtered out)", f, ct.ID)
	}
	if _, err := c.Stacks().Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	// The stack is marked, its children go, then the stack.
	if f = nextEvent(t, conn); f.Name != api.EventChange || f.Resource.ID != st.ID {
		t.Fatalf("want the stack marked for deletion first, got %+v", f)
	}
	if f = nextEvent(t, conn); f.Name != api.EventRemove || f.Resource.ID != ct.ID {
		t.Fatalf("want removal of container first, got %+v", f)
	}
	if f = nextEvent(t, conn); f.Name != api.EventRemove || f.Resource.ID != st.ID {
		t.Fatalf("want removal of stack, got %+v", f)
	}
	// Pings keep coming on an idle stream.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := conn.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"ping"`) {
		t.Fatalf("want a ping on an idle stream, got %s %v", b, err)
	}

	// since= replays exactly the events after it.
	conn2 := dialWS(t, s, fmt.Sprintf("types=stack&since=%d", st.Revision))
	if f = nextEvent(t, conn2); f.Name != api.EventChange || f.Resource.ID != st.ID {
		t.Fatalf("replay from since: got %+v, want the stack's marking", f)
	}
	if f = nextEvent(t, conn2); f.Name != api.EventRemove || f.Resource.ID != st.ID {
		t.Fatalf("replay from since: got %+v, want the stack's removal", f)
	}
}

// watchLines opens an NDJSON watch and returns a channel of its frames.
func watchLines(t *testing.T, s *apiserver.Server, path string) (<-chan frame, func()) {
	t.Helper()
	creds := readCreds(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+path, nil)
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("watch %s: %v %v", path, resp, err)
	}
	ch := make(chan frame, 100000)
	go func() {
		defer close(ch)
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 4<<20)
		for sc.Scan() {
			var f frame
			json.Unmarshal(sc.Bytes(), &f)
			if f.Name != api.EventPing {
				ch <- f
			}
		}
	}()
	return ch, cancel
}

func recv(t *testing.T, ch <-chan frame) frame {
	t.Helper()
	select {
	case f, ok := <-ch:
		if !ok {
			t.Fatal("watch stream ended")
		}
		return f
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return frame{}
}

// With a tiny ring, a watcher resuming from far back is served from etcd's
// history, then joins the live stream with no gap and no duplicate.
func TestIntegrationWatchCatchUpFromStore(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{RingSize: 5})
	first := mustStack(t, c, "s0")
	var want []string
	for i := 1; i < 60; i++ {
		st := mustStack(t, c, fmt.Sprintf("s%d", i))
		want = append(want, st.ID)
	}
	ch, stop := watchLines(t, s, fmt.Sprintf("/v1/stacks?watch=true&since=%d", first.Revision))
	defer stop()
	// Writes during the catch-up must arrive too, once.
	go func() {
		for i := 60; i < 80; i++ {
			c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("s%d", i)}})
		}
	}()
	seen := map[string]bool{}
	var last int64
	for len(seen) < 79 {
		f := recv(t, ch)
		if f.Name != api.EventChange {
			t.Fatalf("unexpected frame %+v", f)
		}
		if seen[f.Resource.ID] {
			t.Fatalf("stack %s delivered twice", f.Resource.ID)
		}
		if f.Revision <= last {
			t.Fatalf("revision %d after %d: out of order", f.Revision, last)
		}
		seen[f.Resource.ID], last = true, f.Revision
	}
	for _, id := range want {
		if !seen[id] {
			t.Fatalf("stack %s never delivered", id)
		}
	}
}

func TestIntegrationSlowSubscriberIsCutOff(t *testing.T) {
	integration(t)
	ctx := context.Background()
	// The write timeout is long: this test is about the queue, and the
	// client reads nothing until all is written.
	s, c := testenv.StartServer(t, apiserver.Options{SubscriberBuffer: 10, MaxBodyBytes: 1 << 20, StreamWriteTimeout: 10 * time.Minute})
	creds := readCreds(t, s)
	// A subscriber that never reads.
	req, _ := http.NewRequest("GET", s.URL()+"/v1/stacks?watch=true", nil)
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Big events fill the socket buffers, then the queue.
	big := strings.Repeat("x", 200<<10)
	st := mustStack(t, c, "big")
	for i := 0; i < 200; i++ {
		if _, err := c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"answers": map[string]any{"payload": fmt.Sprintf("%d%s", i, big)}}}); err != nil {
			t.Fatal(err)
		}
	}
	// Now read it all: the stream must end with the reason.
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	var lastFrame frame
	n := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sc.Scan() {
			json.Unmarshal(sc.Bytes(), &lastFrame)
			n++
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("slow subscriber was never disconnected")
	}
	if lastFrame.Name != api.EventError || !strings.Contains(lastFrame.Message, "behind") {
		t.Fatalf("stream ended after %d frames with %+v; want an error frame giving the reason", n, lastFrame)
	}
	if n >= 201 {
		t.Fatalf("got all %d events: the subscriber was not cut off", n)
	}
}

// A client watching through a server restart, while others keep writing,
// sees every acknowledged write exactly once.
func TestIntegrationRestartWhileWatching(t *testing.T) {
	integration(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	s, c := testenv.StartServer(t, apiserver.Options{DataDir: dir, PingInterval: 500 * time.Millisecond})
	addr := strings.TrimPrefix(s.URL(), "http://")

	var mu sync.Mutex
	adds := map[string]int{}
	cache := client.NewCache(c.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: func(o *api.Stack) { mu.Lock(); adds[o.ID]++; mu.Unlock() },
	}, testenv.Logger())
	go cache.Run(ctx)
	if !cache.WaitForSync(ctx) {
		t.Fatal("cache never synced")
	}
	var acked sync.Map
	var nAcked atomic.Int64
	stopWriting := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopWriting:
					return
				default:
				}
				st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("w%d-%d", w, i)}})
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue // server down: the write was not acknowledged
				}
				acked.Store(st.ID, true)
				nAcked.Add(1)
			}
		}(w)
	}
	time.Sleep(time.Second)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	testenv.StartServer(t, apiserver.Options{DataDir: dir, Listen: addr, PingInterval: 500 * time.Millisecond})
	time.Sleep(time.Second)
	close(stopWriting)
	wg.Wait()
	if nAcked.Load() < 20 {
		t.Fatalf("only %d writes were acknowledged; the test did not exercise the stream", nAcked.Load())
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		acked.Range(func(k, _ any) bool {
			if _, ok := cache.Get(k.(string)); !ok {
				missing++
			}
			return true
		})
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d acknowledged writes never reached the watching client", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, n := range adds {
		if n != 1 {
			t.Fatalf("stack %s was delivered %d times", id, n)
		}
	}
	if cache.Relists.Load() != 1 {
		t.Fatalf("the cache relisted %d times; resuming by revision should need no relist", cache.Relists.Load())
	}
	t.Logf("%d acknowledged writes across the restart, each seen once", nAcked.Load())
}

// Watchers that resume from a compacted revision are told to resync.
func TestIntegrationResyncAfterCompaction(t *testing.T) {
	integration(t)
	ctx := context.Background()
	cluster := testenv.StartEtcdCluster(t, 1)
	s, c := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), RingSize: 2})
	first := mustStack(t, c, "a")
	var last *api.Stack
	for i := 0; i < 10; i++ {
		last = mustStack(t, c, fmt.Sprintf("b%d", i))
	}
	if _, err := cluster.Client(t).Compact(ctx, last.Revision); err != nil {
		t.Fatal(err)
	}
	ch, stop := watchLines(t, s, fmt.Sprintf("/v1/stacks?watch=true&since=%d", first.Revision))
	defer stop()
	if f := recv(t, ch); f.Name != api.EventResync {
		t.Fatalf("want resync, got %+v", f)
	}
}

// A cache whose server comes back after the history it needs was compacted
// relists, and ends up exactly equal to the store.
func TestIntegrationCacheRelistsAfterCompaction(t *testing.T) {
	integration(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster := testenv.StartEtcdCluster(t, 1)
	dir := t.TempDir()
	s1, c1 := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), DataDir: dir, RingSize: 2})
	_, c2 := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints()})
	doomed := mustStack(t, c2, "doomed")
	cache := client.NewCache(c1.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{}, testenv.Logger())
	go cache.Run(ctx)
	if !cache.WaitForSync(ctx) {
		t.Fatal("no sync")
	}
	addr := strings.TrimPrefix(s1.URL(), "http://")
	s1.Close()
	var last *api.Stack
	for i := 0; i < 10; i++ {
		last = mustStack(t, c2, fmt.Sprintf("later%d", i))
	}
	if _, err := c2.Stacks().Delete(ctx, doomed.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := cluster.Client(t).Compact(ctx, last.Revision+1); err != nil {
		t.Fatal(err)
	}
	testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), DataDir: dir, Listen: addr, RingSize: 2})
	deadline := time.Now().Add(20 * time.Second)
	for cache.Relists.Load() < 2 || cache.Len() != 10 {
		if time.Now().After(deadline) {
			t.Fatalf("cache: %d relists, %d stacks; want a relist and 10 stacks", cache.Relists.Load(), cache.Len())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, ok := cache.Get(doomed.ID); ok {
		t.Fatal("a stack deleted during the outage is still cached")
	}
}
