package dns

import (
	"io"
	"log/slog"
	"sort"
	"sync"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
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

// testServer is a server whose stores are memStores, always ready.
type testServer struct {
	*Server
	st  *memStore[api.Stack]
	svc *memStore[api.Service]
	ctr *memStore[api.Container]
}

func newTestServer() *testServer {
	s, err := New(Options{Engine: client.New("http://127.0.0.1:1", "", ""), Upstreams: []string{"127.0.0.1:1"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		panic(err)
	}
	t := &testServer{Server: s,
		st:  newMemStore(func(o *api.Stack) string { return o.ID }, nil),
		svc: newMemStore(func(o *api.Service) string { return o.ID }, serviceIndexes),
		ctr: newMemStore(func(o *api.Container) string { return o.ID }, containerIndexes)}
	s.stacks, s.services, s.ctrs, s.ready = t.st, t.svc, t.ctr, func() bool { return true }
	return t
}

func (t *testServer) putStack(o *api.Stack)         { t.setStack(t.st.put(o), o) }
func (t *testServer) putService(o *api.Service)     { t.setService(t.svc.put(o), o) }
func (t *testServer) putContainer(o *api.Container) { t.setContainer(t.ctr.put(o), o) }
