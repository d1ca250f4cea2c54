package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// These tests put exact frames on the wire through a fake engine (a break
// between two events of one revision, a bad frame, a duplicate), which the
// real server cannot be made to send. cache_integration_test.go runs the
// cache against a real engine.

// fakeEngine serves one collection's list and watch in the engine's wire
// format, from what the test scripts.
type fakeEngine struct {
	srv     *httptest.Server
	watches chan watchScript
	done    chan struct{}

	mu     sync.Mutex
	lists  []string // list bodies in order; the last one repeats
	nLists int
	sinces []int64 // the since of each watch, in order
}

// watchScript is one watch connection: its frames, then the stream ends
// unless hold is set.
type watchScript struct {
	frames []string
	hold   bool
}

func newFakeEngine(t *testing.T, lists ...string) *fakeEngine {
	t.Helper()
	f := &fakeEngine{watches: make(chan watchScript, 16), done: make(chan struct{}), lists: lists}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		close(f.done)
		f.srv.Close()
	})
	return f
}

func (f *fakeEngine) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/stacks" {
		http.NotFound(w, r)
		return
	}
	if r.URL.Query().Get("watch") != "true" {
		f.mu.Lock()
		body := f.lists[min(f.nLists, len(f.lists)-1)]
		f.nLists++
		f.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
		return
	}
	since, _ := strconv.ParseInt(r.URL.Query().Get("since"), 10, 64)
	f.mu.Lock()
	f.sinces = append(f.sinces, since)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	var s watchScript
	select {
	case s = <-f.watches:
	case <-r.Context().Done():
		return
	case <-f.done:
		return
	}
	for _, fr := range s.frames {
		// Like the server, send only changes after since, so a cache that
		// resumes from the wrong revision misses what it should get.
		var ev api.Event
		if json.Unmarshal([]byte(fr), &ev) == nil && (ev.Name == api.EventChange || ev.Name == api.EventRemove) && since > 0 && ev.Revision <= since {
			continue
		}
		fmt.Fprint(w, fr)
	}
	w.(http.Flusher).Flush()
	if s.hold {
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
	}
}

func (f *fakeEngine) watch(hold bool, frames ...string) {
	f.watches <- watchScript{frames: frames, hold: hold}
}

func (f *fakeEngine) watchSinces() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sinces)
}

func (f *fakeEngine) client() *client.Client { return client.New(f.srv.URL, "ak", "sk") }

func stack(id string, rev int64) *api.Stack {
	return &api.Stack{Meta: api.Meta{Type: "stack", ID: id, Name: id, Revision: rev}}
}

func listBody(rev int64, items ...*api.Stack) string {
	if items == nil {
		items = []*api.Stack{}
	}
	b, _ := json.Marshal(map[string]any{"type": "collection", "resourceType": "stack", "revision": rev, "data": items})
	return string(b)
}

// frame is one line of the stream; obj may be nil.
func frame(name string, rev int64, obj *api.Stack) string {
	ev := api.Event{Name: name, Revision: rev}
	if obj != nil {
		ev.Resource, _ = json.Marshal(obj)
	}
	b, _ := json.Marshal(ev)
	return string(b) + "\n"
}

func change(id string, rev int64) string { return frame(api.EventChange, rev, stack(id, rev)) }

// remove is the removal at rev of an object last written at objRev.
func remove(id string, rev, objRev int64) string {
	return frame(api.EventRemove, rev, stack(id, objRev))
}

// objectPtr is *T where *T is an api.Object, as the cache wants.
type objectPtr[T any] interface {
	*T
	api.Object
}

// recorder keeps every handler call, in order, as text naming objects by
// name (ids are the server's choice).
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recorder) handlers() client.Handlers[api.Stack] { return recordInto[api.Stack](r) }

func recordInto[T any, PT objectPtr[T]](r *recorder) client.Handlers[T] {
	return client.Handlers[T]{
		OnAdd: func(o *T) { m := PT(o).GetMeta(); r.add(fmt.Sprintf("add %s@%d", m.Name, m.Revision)) },
		OnUpdate: func(old, cur *T) {
			r.add(fmt.Sprintf("update %s@%d->%d", PT(cur).GetMeta().Name, PT(old).GetMeta().Revision, PT(cur).GetMeta().Revision))
		},
		OnDelete: func(o *T) { r.add("delete " + PT(o).GetMeta().Name) },
	}
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.calls
	r.calls = nil
	return out
}

// sorted returns the calls in order of text, for steps (a relist) whose
// handler order is not defined between objects.
func sorted(calls []string) []string { return slices.Sorted(slices.Values(calls)) }

func wantCalls(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: handler calls\n got  %q\n want %q", what, got, want)
	}
}

// runCache runs c until the test ends, and waits for Run to return.
func runCache[T any, PT objectPtr[T]](t *testing.T, c *client.Cache[T, PT]) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitSynced[T any, PT objectPtr[T]](t *testing.T, c *client.Cache[T, PT], within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if !c.WaitForSync(ctx) {
		t.Fatalf("cache not synced within %v", within)
	}
}

// names lists the names of objects (the fake's objects have id == name).
func names[T any, PT objectPtr[T]](items []*T) []string {
	var out []string
	for _, o := range items {
		out = append(out, PT(o).GetMeta().Name)
	}
	return out
}

func TestCacheAppliesDuplicatesOnce(t *testing.T) {
	f := newFakeEngine(t, listBody(3, stack("a", 2), stack("b", 3)))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	wantCalls(t, "list", sorted(rec.take()), []string{"add a@2", "add b@3"})

	// Every frame twice, and a replay of what the list already held.
	f.watch(true,
		change("b", 3),
		change("c", 4), change("c", 4),
		change("a", 5), change("a", 5),
		remove("b", 6, 3), remove("b", 6, 3),
		change("a", 5),
		change("end", 7),
	)
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"add c@4", "update a@2->5", "delete b", "add end@7"})
	if got := names(c.List()); !slices.Equal(got, []string{"a", "c", "end"}) {
		t.Fatalf("cached %v, want a, c, end", got)
	}
	if r := c.Revision(); r != 7 {
		t.Fatalf("revision %d, want 7", r)
	}
}

func TestCacheIgnoresRemovalOfUnknownObject(t *testing.T) {
	f := newFakeEngine(t, listBody(3, stack("a", 2)))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	rec.take()

	f.watch(true, remove("ghost", 4, 1), change("end", 5))
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"add end@5"})
	if got := names(c.List()); !slices.Equal(got, []string{"a", "end"}) {
		t.Fatalf("cached %v, want a, end", got)
	}
}

// A resync relists, and handlers see only the difference between what was
// cached and what the new list holds.
func TestCacheResyncReportsTheDifference(t *testing.T) {
	f := newFakeEngine(t,
		listBody(3, stack("keep", 1), stack("changed", 2), stack("gone", 3)),
		listBody(9, stack("keep", 1), stack("changed", 7), stack("new", 8)),
	)
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	wantCalls(t, "first list", sorted(rec.take()), []string{"add changed@2", "add gone@3", "add keep@1"})

	f.watch(false, frame(api.EventResync, 0, nil))
	f.watch(true, change("end", 10))
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	calls := rec.take()
	wantCalls(t, "resync", sorted(calls[:len(calls)-1]), []string{"add new@8", "delete gone", "update changed@2->7"})
	wantCalls(t, "after resync", calls[len(calls)-1:], []string{"add end@10"})
	if n := c.Relists.Load(); n != 2 {
		t.Fatalf("%d lists, want 2", n)
	}
	// The watch after the relist resumes at the relist's revision.
	if s := f.watchSinces(); len(s) != 2 || s[1] != 8 {
		t.Fatalf("watches asked for since=%v, want [2 8]", s)
	}
}

// A revision can hold several events (a cascade delete); a stream that
// breaks between them is resumed one revision early, and what was applied
// already is not applied again.
func TestCacheResumesMidRevision(t *testing.T) {
	f := newFakeEngine(t, listBody(5, stack("a", 2), stack("b", 3), stack("c", 4)))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	rec.take()

	f.watch(false, remove("a", 10, 2), remove("b", 10, 3))
	f.watch(false, remove("a", 10, 2), remove("b", 10, 3), remove("c", 10, 4), change("end", 11))
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"delete a", "delete b", "delete c", "add end@11"})
	// The same with changes: what was seen before the break is not
	// reported again.
	f.watch(false, change("x", 12), change("y", 12))
	f.watch(true, change("x", 12), change("y", 12), change("z", 12), change("end2", 13))
	eventually(t, "the second marker", func() bool { _, ok := c.Get("end2"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"add x@12", "add y@12", "add z@12", "add end2@13"})
	if s := f.watchSinces(); !slices.Equal(s, []int64{4, 9, 10, 11}) {
		t.Fatalf("watches asked for since=%v, want [4 9 10 11]", s)
	}
}

// A stream that breaks in the middle of a frame is a broken stream, not a
// bad frame: the cache reconnects and gets the whole frame again.
func TestCacheReconnectsAfterTornFrame(t *testing.T) {
	f := newFakeEngine(t, listBody(3))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)

	whole := change("a", 4)
	f.watch(false, whole[:len(whole)/2])
	f.watch(true, whole, change("end", 5))
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"add a@4", "add end@5"})
	if n := c.DecodeErrors.Load(); n != 0 {
		t.Fatalf("%d decode errors for a torn frame, want 0", n)
	}
}

// A frame that cannot be decoded is skipped and counted, once, and the
// cache goes on; it does not reconnect to the same frame forever.
func TestCacheSkipsUndecodableFrames(t *testing.T) {
	f := newFakeEngine(t, listBody(3, stack("a", 2)))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	rec.take()

	badSpec := `{"name":"resource.change","revision":5,"resource":{"type":"stack","id":"b","revision":5,"spec":7}}` + "\n"
	f.watch(false,
		change("a", 4),
		"\n", // blank: not a frame, not an error
		"this is not json\n",
		badSpec,
	)
	// Resuming at 4 sends revision 5 again: the same bad frame is not
	// counted twice.
	f.watch(true, badSpec, change("c", 6))
	eventually(t, "the object after the bad frames", func() bool { _, ok := c.Get("c"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"update a@2->4", "add c@6"})
	if n := c.DecodeErrors.Load(); n != 2 {
		t.Fatalf("%d decode errors, want 2 (one garbage line, one bad resource)", n)
	}
	if _, ok := c.Get("b"); ok {
		t.Fatal("an undecodable object was cached")
	}
	if s := f.watchSinces(); len(s) != 2 || s[1] != 4 {
		t.Fatalf("watches asked for since=%v, want the second at 4 (past the bad frame's revision 5, one early)", s)
	}
	if n := c.Relists.Load(); n != 1 {
		t.Fatalf("%d lists, want 1", n)
	}
}

// A ping's revision is a bookmark: nothing matching the cache's filter
// happened up to it, so the cache resumes from there and a filtered cache
// does not fall behind the history the server keeps.
func TestCachePingBookmark(t *testing.T) {
	f := newFakeEngine(t, listBody(3, stack("a", 2)))
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{LabelSelector: "tier=web"}, rec.handlers(), testenv.Logger())
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	rec.take()

	f.watch(true, frame(api.EventPing, 0, nil), frame(api.EventPing, 50, nil))
	eventually(t, "the bookmark", func() bool { return c.Revision() == 50 })
	if calls := rec.take(); len(calls) != 0 {
		t.Fatalf("a ping called handlers: %q", calls)
	}
	// Break the stream: the cache resumes from the bookmark. An older
	// bookmark and a bare ping then leave it where it is.
	f.watch(false, frame(api.EventPing, 40, nil), frame(api.EventPing, 0, nil))
	f.srv.CloseClientConnections()
	f.watch(true, change("end", 60))
	eventually(t, "the marker object", func() bool { _, ok := c.Get("end"); return ok })
	wantCalls(t, "stream", rec.take(), []string{"add end@60"})
	if s := f.watchSinces(); !slices.Equal(s, []int64{2, 49, 49}) {
		t.Fatalf("watches asked for since=%v, want [2 49 49]", s)
	}
	if n := c.Relists.Load(); n != 1 {
		t.Fatalf("%d lists, want 1", n)
	}
}

func TestCacheIgnoresBadSnapshots(t *testing.T) {
	good := func(collection string) string {
		b, _ := json.Marshal(map[string]any{"collection": collection, "revision": 9, "items": []*api.Stack{stack("old", 9)}})
		return string(b)
	}
	for name, content := range map[string]string{
		"corrupt":          `{"collection":"stacks","revision":9,"items":[{"id":"old"`,
		"other collection": good("hosts"),
		"other filter":     `{"collection":"stacks","filter":"hostId=h1","revision":9,"items":[{"type":"stack","id":"old","revision":9}]}`,
		"other engine":     `{"collection":"stacks","engine":"http://elsewhere:1","revision":9,"items":[{"type":"stack","id":"old","revision":9}]}`,
		"no revision":      `{"collection":"stacks","items":[]}`,
		"item without id":  `{"collection":"stacks","revision":9,"items":[{"name":"x"}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeEngine(t, listBody(3, stack("a", 2)))
			path := filepath.Join(t.TempDir(), "stacks.json")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			var rec recorder
			c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
			c.SetSnapshot(path)
			runCache(t, c)
			waitSynced(t, c, 15*time.Second)
			wantCalls(t, "start", rec.take(), []string{"add a@2"})
			if c.FromSnapshot() {
				t.Fatal("FromSnapshot after a normal list")
			}
			if got := names(c.List()); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("cached %v, want only the listed a", got)
			}
		})
	}
}

// A good snapshot is served at once and followed by a watch from its
// revision; a resync then reports the difference between the snapshot and
// the server. (This is also the contrast that shows the test above would
// fail if snapshots were never loaded.)
func TestCacheStartsFromSnapshotThenResyncs(t *testing.T) {
	f := newFakeEngine(t, listBody(12, stack("a", 11), stack("kept", 5)))
	path := filepath.Join(t.TempDir(), "stacks.json")
	snap := `{"collection":"stacks","engine":"` + f.srv.URL + `","revision":9,"items":[{"type":"stack","id":"old","name":"old","revision":9},{"type":"stack","id":"kept","name":"kept","revision":5}]}`
	if err := os.WriteFile(path, []byte(snap), 0o600); err != nil {
		t.Fatal(err)
	}
	var rec recorder
	c := client.NewCache(f.client().Stacks(), client.ListOptions{}, rec.handlers(), testenv.Logger())
	c.SetSnapshot(path)
	runCache(t, c)
	waitSynced(t, c, 15*time.Second)
	wantCalls(t, "snapshot", rec.take(), []string{"add kept@5", "add old@9"})
	if _, ok := c.Get("old"); !ok || !c.FromSnapshot() {
		t.Fatalf("snapshot not loaded: cached %v, FromSnapshot %v", names(c.List()), c.FromSnapshot())
	}
	eventually(t, "the watch from the snapshot's revision", func() bool { return len(f.watchSinces()) > 0 })
	if s := f.watchSinces(); s[0] != 8 {
		t.Fatalf("watch asked for since=%v, want 8 (one before the snapshot's 9)", s)
	}
	if n := c.Relists.Load(); n != 0 {
		t.Fatalf("%d lists; a good snapshot needs none", n)
	}

	f.watch(false, frame(api.EventResync, 0, nil))
	eventually(t, "the relist", func() bool { return c.Relists.Load() == 1 })
	wantCalls(t, "resync", sorted(rec.take()), []string{"add a@11", "delete old"})
	if c.FromSnapshot() {
		t.Fatal("FromSnapshot after a list")
	}
}
