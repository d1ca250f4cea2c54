package events

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/store"
)

// event is one object change, with its frame encoded once for every
// subscriber.
type event struct {
	rev        int64
	collection string
	id         string
	remove     bool
	frame      []byte // {"name":...,"revision":N,"resource":{...}}
	cur, prev  Fields
	hasPrev    bool
	prevRaw    []byte // decoded into prev on first use: with no subscriber, never
	prevOnce   sync.Once

	asRemoveOnce sync.Once
	asRemove     []byte // frame as a removal, for subscribers it stopped matching
}

// prevFields is the object's fields before the change (hasPrev only).
func (ev *event) prevFields() *Fields {
	ev.prevOnce.Do(func() {
		if ev.prevRaw != nil {
			decodeFields(ev.prevRaw, &ev.prev)
		}
	})
	return &ev.prev
}

// removalFrame is ev's frame renamed to a removal, encoded once however many
// subscribers need it.
func (ev *event) removalFrame() []byte {
	ev.asRemoveOnce.Do(func() {
		resource := ev.frame[len(`{"name":"`+api.EventChange+`","revision":`)+len(strconv.FormatInt(ev.rev, 10))+len(`,"resource":`) : len(ev.frame)-1]
		ev.asRemove = encodeFrame(true, ev.rev, resource)
	})
	return ev.asRemove
}

// Fields are the parts of an object subscribers filter on.
type Fields struct {
	Labels            map[string]string `json:"labels"`
	DeletionTimestamp *json.RawMessage  `json:"deletionTimestamp"`
	Spec              struct {
		StackID   string `json:"stackId"`
		ServiceID string `json:"serviceId"`
		HostID    string `json:"hostId"`
	} `json:"spec"`
}

// hub fans the store's changes out to subscribers. It runs one etcd watch
// for the whole object prefix, keeps at least the last ringSize events (up
// to twice as many, trimmed in one go) so a client
// resuming a little behind needs no etcd round trip, and replays older
// history from etcd itself (see subscription.catchUp). Each event is offered
// only to the subscribers the index says it may concern, and queued only for
// those whose filter matches it, so a subscriber's queue holds what it will
// send and nothing else.
type Hub struct {
	cli       *clientv3.Client
	objPrefix string // the store's object keys: <prefix><collection>/<id>
	log       *slog.Logger
	metrics   *Metrics
	// OnStart is told the revision the hub watches after, before it
	// watches (a cache built from events loads that revision); OnChange of
	// every object change (the auth cache drops changed keys); OnReset that
	// the hub skipped history and starts again after rev, so caches built
	// from events must reload. Set them before Run.
	OnStart  func(rev int64)
	OnChange func(collection, id string, rev int64, removed, deleting bool)
	OnReset  func(rev int64)

	mu       sync.Mutex
	lastRev  int64    // last revision processed
	floor    int64    // the ring holds every event with rev > floor
	ring     []*event // ordered by rev
	ringSize int
	subs     subIndex
	closed   bool
}

// New returns a hub over the objects under objPrefix in the store cli
// reaches; Run starts it.
func New(cli *clientv3.Client, objPrefix string, log *slog.Logger, m *Metrics, ringSize int) *Hub {
	return &Hub{cli: cli, objPrefix: objPrefix, log: log, metrics: m, ringSize: ringSize, subs: newSubIndex()}
}

// run watches the store from its current revision until ctx ends.
func (h *Hub) Run(ctx context.Context, ready chan<- struct{}) error {
	resp, err := h.cli.Get(ctx, h.objPrefix, clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.lastRev, h.floor = resp.Header.Revision, resp.Header.Revision
	h.mu.Unlock()
	if h.OnStart != nil {
		h.OnStart(resp.Header.Revision)
	}
	close(ready)
	for ctx.Err() == nil {
		h.mu.Lock()
		from := h.lastRev + 1
		h.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := h.cli.Watch(wctx, h.objPrefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithPrevKV())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					h.reset(wr.CompactRevision)
				} else {
					h.log.Warn("store watch failed; rewatching", "err", err, "from", from)
				}
				break
			}
			h.publish(wr.Events)
		}
		cancel()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
	h.Close("server shutting down")
	return nil
}

// reset handles a hub that fell behind compaction: every subscriber is told
// to resync, and the hub starts again from the current revision.
func (h *Hub) reset(compactRev int64) {
	h.log.Warn("store history compacted under the event hub; subscribers must resync", "compactRevision", compactRev)
	resp, err := h.cli.Get(context.Background(), h.objPrefix, clientv3.WithCountOnly())
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs.all {
		s.kill(api.EventResync, "store history compacted")
	}
	h.subs = newSubIndex()
	h.ring = nil
	if err == nil {
		h.lastRev, h.floor = resp.Header.Revision, resp.Header.Revision
	}
	if h.OnReset != nil {
		h.OnReset(h.lastRev)
	}
}

func (h *Hub) publish(evs []*clientv3.Event) {
	batch := make([]*event, 0, len(evs))
	for _, e := range evs {
		if ev := convertEvent(h.objPrefix, e); ev != nil {
			batch = append(batch, ev)
		}
	}
	if len(batch) == 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range batch {
		h.ring = append(h.ring, ev)
		h.lastRev = ev.rev
		if h.OnChange != nil {
			h.OnChange(ev.collection, ev.id, ev.rev, ev.remove, ev.cur.DeletionTimestamp != nil)
		}
		h.subs.each(ev, func(s *Subscription) {
			if !s.offer(ev) {
				h.subs.remove(s)
				h.metrics.SlowSubscribers.Inc()
			}
		})
	}
	// Trim only once the ring holds twice its size, so the copy (into a new
	// array: subscribers' backlogs may share the old one) costs O(1) per
	// event; copying the whole ring on every batch cost the server 14% of
	// its CPU under 4,000 writes/s with no subscriber at all.
	if len(h.ring) >= 2*h.ringSize {
		over := len(h.ring) - h.ringSize
		h.floor = h.ring[over-1].rev
		// A revision may hold several events (a cascade delete); never cut
		// one in half.
		for over < len(h.ring) && h.ring[over].rev == h.floor {
			over++
		}
		h.ring = append(h.ring[:0:0], h.ring[over:]...)
	}
	h.metrics.Events.Add(float64(len(batch)))
}

// convertEvent turns an etcd event into a hub event, or nil for keys that
// are not objects.
func convertEvent(objPrefix string, e *clientv3.Event) *event {
	rest := strings.TrimPrefix(string(e.Kv.Key), objPrefix)
	coll, id, ok := strings.Cut(rest, "/")
	if !ok {
		return nil
	}
	ev := &event{rev: e.Kv.ModRevision, collection: coll, id: id}
	var resource []byte
	if e.Type == mvccpb.DELETE {
		ev.remove = true
		if e.PrevKv == nil {
			return nil
		}
		resource = store.WithRevision(e.PrevKv.Value, e.PrevKv.ModRevision)
		decodeFields(e.PrevKv.Value, &ev.cur)
		ev.prev, ev.hasPrev = ev.cur, true
	} else {
		resource = store.WithRevision(e.Kv.Value, e.Kv.ModRevision)
		decodeFields(e.Kv.Value, &ev.cur)
		if e.PrevKv != nil {
			ev.prevRaw, ev.hasPrev = e.PrevKv.Value, true
		}
	}
	ev.frame = encodeFrame(ev.remove, ev.rev, resource)
	return ev
}

// decodeFields reads the fields filters use from a stored object, with the
// encoding/json v2 decoder: every write passes here once, and v2 skips the
// members Fields does not name about twice as fast as v1. A stored object
// that does not decode (it was written by this server, so never) matches
// only filters that ask for nothing.
func decodeFields(b []byte, f *Fields) {
	_ = jsonv2.Unmarshal(b, f)
}

func encodeFrame(remove bool, rev int64, resource []byte) []byte {
	name := api.EventChange
	if remove {
		name = api.EventRemove
	}
	out := make([]byte, 0, len(resource)+64)
	out = append(out, `{"name":"`...)
	out = append(out, name...)
	out = append(out, `","revision":`...)
	out = strconv.AppendInt(out, rev, 10)
	out = append(out, `,"resource":`...)
	out = append(out, resource...)
	return append(out, '}')
}

// subscribe registers a subscriber that wants every event after since
// (0: from now). If the ring no longer reaches back that far, the
// subscription first replays from etcd.
func (h *Hub) Subscribe(since int64, f *Filter, buffer int) *Subscription {
	s := &Subscription{hub: h, filter: f, ch: make(chan delivery, buffer), dead: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		s.kill(api.EventError, "server shutting down")
		return s
	}
	if since == 0 || since > h.lastRev {
		if since == 0 {
			since = h.lastRev
		}
		s.minRev = since
		h.subs.add(s)
		return s
	}
	if since >= h.floor {
		s.backlog = h.ringAfter(since)
		s.minRev = h.lastRev
		h.subs.add(s)
		return s
	}
	s.catchUpFrom = since
	return s
}

func (h *Hub) ringAfter(rev int64) []*event {
	// binary search for the first event with rev > since
	lo, hi := 0, len(h.ring)
	for lo < hi {
		mid := (lo + hi) / 2
		if h.ring[mid].rev <= rev {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return append([]*event(nil), h.ring[lo:]...)
}

// join attaches a catching-up subscription to the live stream once it has
// delivered everything up to a revision the ring still holds.
func (h *Hub) join(s *Subscription, delivered int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || delivered < h.floor {
		return false
	}
	s.backlog = h.ringAfter(delivered)
	// The catch-up watch may be ahead of the hub's own: what it delivered
	// must not come again from the live stream.
	s.minRev = max(h.lastRev, delivered)
	h.subs.add(s)
	return true
}

func (h *Hub) Unsubscribe(s *Subscription) {
	h.mu.Lock()
	h.subs.remove(s)
	h.mu.Unlock()
}

func (h *Hub) Close(reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for s := range h.subs.all {
		s.kill(api.EventError, reason)
	}
	h.subs = newSubIndex()
}

func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.subs.len()
}
