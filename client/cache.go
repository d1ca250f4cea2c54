package client

import (
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/internal/backoff"
)

// Handlers are called from the cache's one goroutine, in revision order. Keep
// them fast (push a key to a work queue); objects passed in are shared with
// the cache and must not be modified.
type Handlers[T any] struct {
	OnAdd    func(obj *T)
	OnUpdate func(old, cur *T)
	OnDelete func(obj *T)
}

// objectPtr is *T where *T is an api.Object.
type objectPtr[T any] interface {
	*T
	api.Object
}

// Cache is a local, always-current copy of one collection: it lists, then
// watches from the list's revision; on a broken stream it reconnects and
// resumes from the last revision it applied; on "resync" (the server no
// longer has that history) it lists again and reports the difference as
// adds, updates and deletes, so handlers never miss a change and never see
// one twice. With SetSnapshot it also keeps a copy on disk and starts from
// it, so a host can serve its cache while the server is unreachable.
type Cache[T any, PT objectPtr[T]] struct {
	res      *Resource[T]
	opts     ListOptions
	handlers Handlers[T]
	log      *slog.Logger

	mu       sync.RWMutex
	items    map[string]*T
	indexers map[string]func(*T) []string
	indices  map[string]map[string]map[string]struct{} // index -> value -> ids
	rev      int64
	changes  int64 // bumped on every change to items, so the snapshot writer can tell
	synced   atomic.Bool
	syncedCh chan struct{}

	snapPath string
	fromSnap atomic.Bool
	snap     snapshotState // what the snapshot on disk holds

	// Bad frames already counted, by revision and content: resuming one
	// revision early sends the frames of the last revision again. Only Run's
	// goroutine touches these.
	badFrames map[badFrame]struct{}
	seed      maphash.Seed

	// Relists counts full lists (the first one included); tests and metrics read it.
	Relists atomic.Int64
	// DecodeErrors counts watch frames skipped because they could not be decoded.
	DecodeErrors atomic.Int64
}

type badFrame struct {
	rev  int64
	hash uint64
}

// NewCache builds a cache of res, restricted by opts.
func NewCache[T any, PT objectPtr[T]](res *Resource[T], opts ListOptions, h Handlers[T], log *slog.Logger) *Cache[T, PT] {
	if log == nil {
		log = slog.Default()
	}
	return &Cache[T, PT]{
		res: res, opts: opts, handlers: h, log: log.With("cache", res.collection),
		items: map[string]*T{}, indexers: map[string]func(*T) []string{},
		indices: map[string]map[string]map[string]struct{}{}, syncedCh: make(chan struct{}),
		badFrames: map[badFrame]struct{}{}, seed: maphash.MakeSeed(),
	}
}

// AddIndex registers an index before Run: fn gives the values obj is filed under.
func (c *Cache[T, PT]) AddIndex(name string, fn func(*T) []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.indexers[name] = fn
	c.indices[name] = map[string]map[string]struct{}{}
}

// HasSynced reports whether the first list (or a snapshot) has been applied.
func (c *Cache[T, PT]) HasSynced() bool { return c.synced.Load() }

// WaitForSync blocks until the first list (or a snapshot) is applied or ctx ends.
func (c *Cache[T, PT]) WaitForSync(ctx context.Context) bool {
	select {
	case <-c.syncedCh:
		return true
	case <-ctx.Done():
		return false
	}
}

// Revision is the last store revision applied.
func (c *Cache[T, PT]) Revision() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.rev
}

// Get returns a cached object (shared: do not modify).
func (c *Cache[T, PT]) Get(id string) (*T, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.items[id]
	return o, ok
}

// List returns every cached object, ordered by id.
func (c *Cache[T, PT]) List() []*T {
	c.mu.RLock()
	out := make([]*T, 0, len(c.items))
	for _, o := range c.items {
		out = append(out, o)
	}
	c.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return PT(out[i]).GetMeta().ID < PT(out[j]).GetMeta().ID })
	return out
}

// Len is the number of cached objects.
func (c *Cache[T, PT]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.items)
}

// ByIndex returns the objects filed under value in the named index.
func (c *Cache[T, PT]) ByIndex(name, value string) []*T {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []*T
	for id := range c.indices[name][value] {
		out = append(out, c.items[id])
	}
	sort.Slice(out, func(i, j int) bool { return PT(out[i]).GetMeta().ID < PT(out[j]).GetMeta().ID })
	return out
}

// Run keeps the cache current until ctx ends.
func (c *Cache[T, PT]) Run(ctx context.Context) {
	backoff := backoff.New(100*time.Millisecond, 5*time.Second)
	needList := true
	if c.snapPath != "" {
		// With a snapshot the cache answers at once and catches up by
		// watching from the snapshot's revision; a resync relists as usual.
		needList = !c.loadSnapshot()
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.snapshotLoop(ctx)
		}()
		defer func() {
			wg.Wait()
			c.writeSnapshot(true)
		}()
	}
	for ctx.Err() == nil {
		if needList {
			if err := c.relist(ctx); err != nil {
				c.log.Warn("list failed; retrying", "err", err)
				backoff.Wait(ctx)
				continue
			}
			needList = false
		}
		resync, err := c.watch(ctx, backoff)
		if ctx.Err() != nil {
			return
		}
		if resync {
			c.log.Info("server asked for a resync; listing again")
			needList = true
			continue
		}
		c.log.Debug("watch ended; reconnecting", "err", err, "revision", c.Revision())
		backoff.Wait(ctx)
	}
}

func (c *Cache[T, PT]) relist(ctx context.Context) error {
	items, rev, err := c.res.List(ctx, c.opts)
	if err != nil {
		return err
	}
	c.Relists.Add(1)
	fresh := make(map[string]*T, len(items))
	for i := range items {
		fresh[PT(&items[i]).GetMeta().ID] = &items[i]
	}
	c.mu.Lock()
	var adds, deletes []*T
	var updates [][2]*T
	for id, old := range c.items {
		if _, ok := fresh[id]; !ok {
			deletes = append(deletes, old)
			c.unindex(id, old)
			delete(c.items, id)
		}
	}
	for id, obj := range fresh {
		old, ok := c.items[id]
		switch {
		case !ok:
			adds = append(adds, obj)
		case PT(old).GetMeta().Revision != PT(obj).GetMeta().Revision:
			updates = append(updates, [2]*T{old, obj})
			c.unindex(id, old)
		default:
			continue
		}
		c.items[id] = obj
		c.index(id, obj)
	}
	c.rev = rev
	if len(adds)+len(updates)+len(deletes) > 0 {
		c.changes++
	}
	c.mu.Unlock()
	c.fromSnap.Store(false)
	for _, o := range deletes {
		c.call(func() { c.handlers.OnDelete(o) }, c.handlers.OnDelete != nil)
	}
	for _, o := range adds {
		c.call(func() { c.handlers.OnAdd(o) }, c.handlers.OnAdd != nil)
	}
	for _, u := range updates {
		c.call(func() { c.handlers.OnUpdate(u[0], u[1]) }, c.handlers.OnUpdate != nil)
	}
	c.markSynced()
	return nil
}

func (c *Cache[T, PT]) markSynced() {
	if !c.synced.Swap(true) {
		close(c.syncedCh)
	}
}

func (c *Cache[T, PT]) call(f func(), ok bool) {
	if ok {
		f()
	}
}

// watch applies events until the stream ends. It reports whether the server
// asked for a resync.
func (c *Cache[T, PT]) watch(ctx context.Context, backoff *backoff.Backoff) (bool, error) {
	// Resume one revision early: a revision can hold several events (a
	// cascade delete) and the stream may have broken between them. Events
	// already applied are recognised by revision and skipped.
	since := c.Revision()
	if since > 1 {
		since--
	}
	w, err := c.res.Watch(ctx, since, c.opts, 0)
	if err != nil {
		var ae *api.Error
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest && ae.Field == "since" {
			// The store is behind our revision: a snapshot of another or a
			// wiped store. What we hold cannot be trusted: list again.
			c.log.Warn("the engine has not reached the cache's revision; listing again", "revision", since, "err", err)
			return true, nil
		}
		return false, err
	}
	defer w.Close()
	for {
		ev, err := w.Next()
		var fe *FrameError
		if errors.As(err, &fe) {
			backoff.Reset()
			c.skip(fe)
			continue
		}
		if err != nil {
			return false, err
		}
		backoff.Reset()
		switch ev.Name {
		case api.EventChange, api.EventRemove:
			c.fromSnap.Store(false)
			c.apply(ev)
		case api.EventPing:
			c.fromSnap.Store(false)
			c.bookmark(ev.Revision)
		case api.EventResync:
			return true, nil
		case api.EventError:
			c.log.Warn("server ended the watch", "reason", ev.Message)
			return false, nil
		}
	}
}

// skip moves past a frame that cannot be decoded. Reconnecting would only
// fetch the same bytes again, so the cache loses that one event (the object
// stays as it was until its next change or a relist) rather than stop.
func (c *Cache[T, PT]) skip(fe *FrameError) {
	c.mu.Lock()
	if fe.Revision > c.rev {
		c.rev = fe.Revision
	}
	rev := c.rev
	c.mu.Unlock()
	for k := range c.badFrames {
		if k.rev < rev {
			delete(c.badFrames, k) // older than any resume point: cannot come again
		}
	}
	if fe.Revision > 0 {
		k := badFrame{fe.Revision, maphash.Bytes(c.seed, fe.frame)}
		if _, seen := c.badFrames[k]; seen {
			return
		}
		c.badFrames[k] = struct{}{}
	}
	c.DecodeErrors.Add(1)
	c.log.Warn("skipping a watch frame that cannot be decoded", "revision", fe.Revision, "event", fe.Name, "err", fe.Err)
}

// bookmark takes a ping's revision as the resume point: the server has sent
// every matching event up to it, so a filtered cache whose objects rarely
// change still resumes from a revision the server keeps history for.
func (c *Cache[T, PT]) bookmark(rev int64) {
	c.mu.Lock()
	if rev > c.rev {
		c.rev = rev
	}
	c.mu.Unlock()
}

func (c *Cache[T, PT]) apply(ev Event[T]) {
	if ev.Object == nil {
		return
	}
	id := PT(ev.Object).GetMeta().ID
	c.mu.Lock()
	old, had := c.items[id]
	if ev.Revision > c.rev {
		c.rev = ev.Revision
	}
	if ev.Name == api.EventRemove {
		if !had {
			c.mu.Unlock()
			return
		}
		c.unindex(id, old)
		delete(c.items, id)
		c.changes++
		c.mu.Unlock()
		c.call(func() { c.handlers.OnDelete(old) }, c.handlers.OnDelete != nil)
		return
	}
	if had && PT(old).GetMeta().Revision >= PT(ev.Object).GetMeta().Revision {
		c.mu.Unlock()
		return // seen already
	}
	if had {
		c.unindex(id, old)
	}
	c.items[id] = ev.Object
	c.index(id, ev.Object)
	c.changes++
	c.mu.Unlock()
	if had {
		c.call(func() { c.handlers.OnUpdate(old, ev.Object) }, c.handlers.OnUpdate != nil)
	} else {
		c.call(func() { c.handlers.OnAdd(ev.Object) }, c.handlers.OnAdd != nil)
	}
}

func (c *Cache[T, PT]) index(id string, obj *T) {
	for name, fn := range c.indexers {
		for _, v := range fn(obj) {
			set := c.indices[name][v]
			if set == nil {
				set = map[string]struct{}{}
				c.indices[name][v] = set
			}
			set[id] = struct{}{}
		}
	}
}

func (c *Cache[T, PT]) unindex(id string, obj *T) {
	for name, fn := range c.indexers {
		for _, v := range fn(obj) {
			delete(c.indices[name][v], id)
			if len(c.indices[name][v]) == 0 {
				delete(c.indices[name], v)
			}
		}
	}
}
