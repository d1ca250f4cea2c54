package metadata

import (
	"sort"
	"sync"

	"github.com/drover/drover/api"
)

// memStore stands in for a client.Cache in tests of record computation:
// put/remove then call the handler, as the cache does.
type memStore[T any] struct {
	mu      sync.RWMutex
	id      func(*T) string
	items   map[string]*T
	indexes map[string]func(*T) []string
	index   map[string]map[string]map[string]bool // index -> value -> ids
}

func newMemStore[T any](id func(*T) string, indexes map[string]func(*T) []string) *memStore[T] {
	m := &memStore[T]{id: id, items: map[string]*T{}, indexes: indexes, index: map[string]map[string]map[string]bool{}}
	for name := range indexes {
		m.index[name] = map[string]map[string]bool{}
	}
	return m
}

func (m *memStore[T]) file(o *T, add bool) {
	for name, fn := range m.indexes {
		for _, v := range fn(o) {
			if add {
				if m.index[name][v] == nil {
					m.index[name][v] = map[string]bool{}
				}
				m.index[name][v][m.id(o)] = true
			} else {
				delete(m.index[name][v], m.id(o))
			}
		}
	}
}

func (m *memStore[T]) put(o *T) (old *T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old = m.items[m.id(o)]
	if old != nil {
		m.file(old, false)
	}
	m.items[m.id(o)] = o
	m.file(o, true)
	return old
}

func (m *memStore[T]) remove(o *T) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old := m.items[m.id(o)]; old != nil {
		m.file(old, false)
	}
	delete(m.items, m.id(o))
}

func (m *memStore[T]) Get(id string) (*T, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	o, ok := m.items[id]
	return o, ok
}

func (m *memStore[T]) ByIndex(index, value string) []*T {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []*T
	for id := range m.index[index][value] {
		out = append(out, m.items[id])
	}
	sort.Slice(out, func(i, j int) bool { return m.id(out[i]) < m.id(out[j]) })
	return out
}

// testState is a state over memStores, fed as the caches feed it.
type testState struct {
	*state
	st  *memStore[api.Stack]
	svc *memStore[api.Service]
	ctr *memStore[api.Container]
}

func newTestState() *testState {
	t := &testState{
		st:  newMemStore(func(o *api.Stack) string { return o.ID }, nil),
		svc: newMemStore(func(o *api.Service) string { return o.ID }, serviceIndexes),
		ctr: newMemStore(func(o *api.Container) string { return o.ID }, containerIndexes)}
	t.state = newState(t.st, t.svc, t.ctr)
	return t
}

func (t *testState) putStack(o *api.Stack)         { t.setStack(t.st.put(o), o) }
func (t *testState) putService(o *api.Service)     { t.setService(t.svc.put(o), o) }
func (t *testState) putContainer(o *api.Container) { t.setContainer(t.ctr.put(o), o) }
func (t *testState) removeContainer(o *api.Container) {
	t.ctr.remove(o)
	t.deleteContainer(o)
}
func (t *testState) removeService(o *api.Service) {
	t.svc.remove(o)
	t.deleteService(o)
}
