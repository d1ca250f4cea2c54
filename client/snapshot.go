package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// Snapshot timing: changes reach the disk within snapshotEvery; a revision
// that moved with no change to the objects (pings, removals of objects the
// cache never had) is written less often, since a stale revision costs at
// worst one relist after a restart.
var (
	snapshotEvery    = 2 * time.Second
	snapshotRevEvery = time.Minute
)

// snapshotFile is a cache on disk.
type snapshotFile[T any] struct {
	Collection string `json:"collection"`
	// Filter is the cache's list options as a query string, so a snapshot
	// of a filtered cache is never loaded into a cache with another filter.
	Filter string `json:"filter,omitempty"`
	// Engine is the URL the snapshot was taken from: a snapshot of another
	// engine is never loaded.
	Engine   string `json:"engine,omitempty"`
	Revision int64  `json:"revision"`
	Items    []*T   `json:"items"`
}

// snapshotState is what was last written.
type snapshotState struct {
	written bool
	changes int64
	rev     int64
	at      time.Time
}

// SetSnapshot makes Run start from the snapshot at path when there is a
// usable one, and keep it current (written within a couple of seconds of a
// change, and when Run ends). Call it before Run.
func (c *Cache[T, PT]) SetSnapshot(path string) { c.snapPath = path }

// FromSnapshot reports whether the cache holds what the snapshot held and
// has not heard from the server since: no list, change or ping yet.
func (c *Cache[T, PT]) FromSnapshot() bool { return c.fromSnap.Load() }

// loadSnapshot fills the cache from its snapshot and reports whether it did.
// A missing, corrupt or foreign file is not an error: the cache lists instead.
func (c *Cache[T, PT]) loadSnapshot() bool {
	b, err := os.ReadFile(c.snapPath)
	if errors.Is(err, fs.ErrNotExist) {
		c.log.Info("no snapshot yet; listing", "path", c.snapPath)
		return false
	}
	if err != nil {
		c.log.Warn("cannot read snapshot; listing instead", "path", c.snapPath, "err", err)
		return false
	}
	f, err := c.decodeSnapshot(b)
	if err != nil {
		c.log.Warn("ignoring snapshot; listing instead", "path", c.snapPath, "err", err)
		return false
	}
	sort.Slice(f.Items, func(i, j int) bool { return PT(f.Items[i]).GetMeta().ID < PT(f.Items[j]).GetMeta().ID })
	c.mu.Lock()
	for _, o := range f.Items {
		id := PT(o).GetMeta().ID
		if old, ok := c.items[id]; ok {
			c.unindex(id, old)
		}
		c.items[id] = o
		c.index(id, o)
	}
	c.rev = f.Revision
	c.changes++
	c.snap = snapshotState{written: true, changes: c.changes, rev: c.rev, at: time.Now()}
	c.mu.Unlock()
	c.fromSnap.Store(true)
	for _, o := range f.Items {
		c.call(func() { c.handlers.OnAdd(o) }, c.handlers.OnAdd != nil)
	}
	c.markSynced()
	c.log.Info("started from snapshot", "path", c.snapPath, "objects", len(f.Items), "revision", f.Revision)
	return true
}

func (c *Cache[T, PT]) decodeSnapshot(b []byte) (*snapshotFile[T], error) {
	var f snapshotFile[T]
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("client: decoding snapshot: %w", err)
	}
	if f.Collection != c.res.collection {
		return nil, fmt.Errorf("client: snapshot is of %q, not %q", f.Collection, c.res.collection)
	}
	if f.Engine != c.res.c.base {
		return nil, fmt.Errorf("client: snapshot is of engine %q, not %q", f.Engine, c.res.c.base)
	}
	if want := c.opts.values().Encode(); f.Filter != want {
		return nil, fmt.Errorf("client: snapshot was taken with filter %q, not %q", f.Filter, want)
	}
	if f.Revision <= 0 {
		return nil, fmt.Errorf("client: snapshot has no revision")
	}
	for i, o := range f.Items {
		if o == nil || PT(o).GetMeta().ID == "" {
			return nil, fmt.Errorf("client: snapshot item %d has no id", i)
		}
	}
	return &f, nil
}

func (c *Cache[T, PT]) snapshotLoop(ctx context.Context) {
	t := time.NewTicker(snapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.writeSnapshot(false)
		}
	}
}

// writeSnapshot saves the cache if it changed since the last write. Errors
// are logged, and the next tick tries again.
func (c *Cache[T, PT]) writeSnapshot(final bool) {
	if !c.synced.Load() {
		return // an empty file would later pass for a synced cache
	}
	c.mu.RLock()
	changes, rev := c.changes, c.rev
	last := c.snap
	switch {
	case last.written && changes == last.changes && rev == last.rev:
		c.mu.RUnlock()
		return
	case last.written && changes == last.changes && !final && time.Since(last.at) < snapshotRevEvery:
		c.mu.RUnlock()
		return
	}
	// Objects in the cache are never modified, only replaced, so they can
	// be encoded after the lock is let go.
	f := snapshotFile[T]{Collection: c.res.collection, Filter: c.opts.values().Encode(), Engine: c.res.c.base, Revision: rev, Items: make([]*T, 0, len(c.items))}
	for _, o := range c.items {
		f.Items = append(f.Items, o)
	}
	c.mu.RUnlock()
	sort.Slice(f.Items, func(i, j int) bool { return PT(f.Items[i]).GetMeta().ID < PT(f.Items[j]).GetMeta().ID })
	b, err := json.Marshal(&f)
	if err == nil {
		err = writeFileAtomic(c.snapPath, b)
	}
	if err != nil {
		c.log.Warn("cannot write snapshot", "path", c.snapPath, "err", err)
		return
	}
	c.mu.Lock()
	c.snap = snapshotState{written: true, changes: changes, rev: rev, at: time.Now()}
	c.mu.Unlock()
}

// writeFileAtomic replaces path with b so that a crash leaves either the old
// file or the new one, never a torn one.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("client: creating snapshot dir: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("client: creating snapshot: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("client: writing snapshot: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
