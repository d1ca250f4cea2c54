package store

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// parents is what the store knows of the objects others refer to (stacks,
// services, hosts): whether each exists and whether it is being deleted.
// The event hub keeps it current (LoadParents, ParentChanged), so a create
// checks its references with a map lookup instead of comparing parent keys
// inside its transaction: in etcd a transaction with compares costs about
// twice a plain put, and containers, the objects created most, have three
// parents. A parent the map has not seen yet (created a moment ago) is read
// from etcd, so a client always sees its own writes. What a lookup cannot
// close — a parent marked for deletion between the lookup and the write — the
// garbage collector does: a child of a deleted parent is collected with it.
type parents struct {
	mu     sync.RWMutex
	m      map[string]parentState // by "collection/id"
	loaded bool
}

// parentState is what the map knows of one parent, as of revision rev.
type parentState struct {
	deleting bool
	rev      int64
}

// parentCollections are the collections references point into.
func parentCollections() []string {
	seen := map[string]bool{}
	var out []string
	for _, rs := range refs {
		for _, r := range rs {
			if !seen[r.parent] {
				seen[r.parent] = true
				out = append(out, r.parent)
			}
		}
	}
	return out
}

// deletionMark is the part of a stored object that says it is going.
type deletionMark struct {
	DeletionTimestamp *json.RawMessage `json:"deletionTimestamp"`
}

// LoadParents reads every parent at revision rev, the revision the event
// hub starts watching after, so no change falls between the two.
func (s *Store) LoadParents(ctx context.Context, rev int64) error {
	m := map[string]parentState{}
	for _, coll := range parentCollectionList() {
		prefix := s.ObjectPrefix(coll)
		resp, err := s.Cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			var d deletionMark
			json.Unmarshal(kv.Value, &d)
			m[coll+"/"+strings.TrimPrefix(string(kv.Key), prefix)] = parentState{d.DeletionTimestamp != nil, kv.ModRevision}
		}
	}
	s.parents.mu.Lock()
	s.parents.m, s.parents.loaded = m, true
	s.parents.mu.Unlock()
	return nil
}

// ForgetParents stops using the map (the hub lost track) until the next load.
func (s *Store) ForgetParents() {
	s.parents.mu.Lock()
	s.parents.m, s.parents.loaded = nil, false
	s.parents.mu.Unlock()
}

// ParentChanged applies one object change seen by the event hub, at rev.
func (s *Store) ParentChanged(coll, id string, rev int64, removed, deleting bool) {
	s.parents.mu.Lock()
	defer s.parents.mu.Unlock()
	if !s.parents.loaded {
		return
	}
	if !isParentCollection(coll) {
		return
	}
	key := coll + "/" + id
	if removed {
		delete(s.parents.m, key)
	} else if s.parents.m[key].rev <= rev {
		s.parents.m[key] = parentState{deleting, rev}
	}
}

// parentMarked notes at once that this server marked a parent for deletion
// at rev, so that its own next create under that parent is refused: the
// hub's copy of the change may still be on its way. Only a parent the map
// holds is changed: one it does not hold (already removed, or never seen)
// is read from etcd when asked for.
func (s *Store) parentMarked(coll, id string, rev int64) {
	s.parents.mu.Lock()
	defer s.parents.mu.Unlock()
	key := coll + "/" + id
	if st, ok := s.parents.m[key]; ok && st.rev < rev {
		s.parents.m[key] = parentState{true, rev}
	}
}

var parentCollectionList = sync.OnceValue(parentCollections)

func isParentCollection(coll string) bool {
	for _, c := range parentCollectionList() {
		if c == coll {
			return true
		}
	}
	return false
}

// checkParents checks obj's references; ok false means the map is not
// loaded and the caller must compare inside its transaction instead.
func (s *Store) checkParents(ctx context.Context, coll string, obj api.Object) (bool, *api.Error) {
	s.parents.mu.RLock()
	loaded := s.parents.loaded
	s.parents.mu.RUnlock()
	if !loaded {
		return false, nil
	}
	for _, r := range refs[coll] {
		pid := r.get(obj)
		if pid == "" {
			continue
		}
		s.parents.mu.RLock()
		st, known := s.parents.m[r.parent+"/"+pid]
		deleting := st.deleting
		s.parents.mu.RUnlock()
		if !known {
			raw, _, err := s.Get(ctx, r.parent, pid)
			if err == ErrNotFound {
				return true, api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidReference, r.field, "%s: %s %q does not exist", r.field, strings.TrimSuffix(r.parent, "s"), pid)
			} else if err != nil {
				return true, Unavailable(err)
			}
			var d deletionMark
			json.Unmarshal(raw, &d)
			deleting = d.DeletionTimestamp != nil
		}
		if deleting {
			return true, api.NewError(http.StatusConflict, api.CodeInvalidReference, r.field, "%s: %s %q is being deleted", r.field, strings.TrimSuffix(r.parent, "s"), pid)
		}
	}
	return true, nil
}
