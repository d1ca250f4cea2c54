package metadata

import (
	"sort"
	"strconv"
	"sync"

	"github.com/drover/drover/api"
)

// state is the metadata tree, kept current one object at a time: a change
// re-renders that object only (O(1) for a container); the full lists are
// rebuilt lazily, on the next request that reads them.
type state struct {
	mu      sync.RWMutex
	version int64
	changed chan struct{} // closed and replaced on every change

	stacks     map[string]*api.Stack
	services   map[string]*api.Service
	containers map[string]*api.Container
	hosts      map[string]*api.Host
	networks   map[string]*api.Network

	ctrNode   map[string]any
	svcNode   map[string]map[string]any
	hostNode  map[string]any
	byIP      map[string]string          // primary IP -> container id
	svcCtrs   map[string]map[string]bool // service id -> container ids
	stackSvcs map[string]map[string]bool // stack id -> service ids

	// lists caches the full list views ("containers", ...): dropped by a
	// change (under mu's write lock), rebuilt by a reader (under mu's read
	// lock and listMu).
	listMu sync.Mutex
	lists  map[string][]any
}

func newState() *state {
	return &state{
		changed: make(chan struct{}), stacks: map[string]*api.Stack{}, services: map[string]*api.Service{},
		containers: map[string]*api.Container{}, hosts: map[string]*api.Host{}, networks: map[string]*api.Network{},
		ctrNode: map[string]any{}, svcNode: map[string]map[string]any{}, hostNode: map[string]any{},
		byIP: map[string]string{}, svcCtrs: map[string]map[string]bool{}, stackSvcs: map[string]map[string]bool{},
		lists: map[string][]any{},
	}
}

// bump records a change at rev and wakes long-polls. Called locked.
func (s *state) bump(rev int64, lists ...string) {
	if rev > s.version {
		s.version = rev
	} else {
		s.version++
	}
	for _, l := range lists {
		delete(s.lists, l)
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *state) names(c *api.Container) (stack, service string) {
	if st := s.stacks[c.Spec.StackID]; st != nil {
		stack = st.Name
	}
	if sv := s.services[c.Spec.ServiceID]; sv != nil {
		service = sv.Name
	}
	return
}

func (s *state) setContainer(c *api.Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putContainer(c)
	s.bump(c.Revision, "containers", "services", "stacks")
}

func (s *state) putContainer(c *api.Container) {
	if old := s.containers[c.ID]; old != nil && old.Status.PrimaryIP != "" && s.byIP[old.Status.PrimaryIP] == c.ID {
		delete(s.byIP, old.Status.PrimaryIP)
	}
	s.containers[c.ID] = c
	stack, service := s.names(c)
	s.ctrNode[c.ID] = tree(renderContainer(c, stack, service))
	if c.Status.PrimaryIP != "" {
		s.byIP[c.Status.PrimaryIP] = c.ID
	}
	if c.Spec.ServiceID != "" {
		if s.svcCtrs[c.Spec.ServiceID] == nil {
			s.svcCtrs[c.Spec.ServiceID] = map[string]bool{}
		}
		s.svcCtrs[c.Spec.ServiceID][c.ID] = true
	}
}

func (s *state) deleteContainer(c *api.Container, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.containers[c.ID]; old != nil && s.byIP[old.Status.PrimaryIP] == c.ID {
		delete(s.byIP, old.Status.PrimaryIP)
	}
	delete(s.containers, c.ID)
	delete(s.ctrNode, c.ID)
	delete(s.svcCtrs[c.Spec.ServiceID], c.ID)
	s.bump(rev, "containers", "services", "stacks")
}

func (s *state) setService(v *api.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.services[v.ID]
	s.services[v.ID] = v
	stack := ""
	if st := s.stacks[v.Spec.StackID]; st != nil {
		stack = st.Name
	}
	s.svcNode[v.ID] = tree(renderService(v, stack)).(map[string]any)
	if s.stackSvcs[v.Spec.StackID] == nil {
		s.stackSvcs[v.Spec.StackID] = map[string]bool{}
	}
	s.stackSvcs[v.Spec.StackID][v.ID] = true
	if old == nil || old.Name != v.Name {
		// Its containers carry its name.
		for id := range s.svcCtrs[v.ID] {
			s.putContainer(s.containers[id])
		}
	}
	s.bump(v.Revision, "containers", "services", "stacks")
}

func (s *state) deleteService(v *api.Service, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.services, v.ID)
	delete(s.svcNode, v.ID)
	delete(s.stackSvcs[v.Spec.StackID], v.ID)
	s.bump(rev, "services", "stacks")
}

func (s *state) setStack(st *api.Stack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.stacks[st.ID]
	s.stacks[st.ID] = st
	// Services (and their containers) may have arrived before their stack:
	// a new stack, like a renamed one, re-renders what carries its name.
	if old == nil || old.Name != st.Name {
		for id := range s.stackSvcs[st.ID] {
			v := s.services[id]
			s.svcNode[id] = tree(renderService(v, st.Name)).(map[string]any)
			for cid := range s.svcCtrs[id] {
				s.putContainer(s.containers[cid])
			}
		}
	}
	s.bump(st.Revision, "stacks", "services", "containers")
}

func (s *state) deleteStack(st *api.Stack, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.stacks, st.ID)
	s.bump(rev, "stacks")
}

func (s *state) setHost(h *api.Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hosts[h.ID] = h
	s.hostNode[h.ID] = tree(renderHost(h))
	s.bump(h.Revision, "hosts")
}

func (s *state) deleteHost(h *api.Host, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.hosts, h.ID)
	delete(s.hostNode, h.ID)
	s.bump(rev, "hosts")
}

func (s *state) setNetwork(n *api.Network) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.networks[n.ID] = n
	s.bump(n.Revision, "networks")
}

func (s *state) deleteNetwork(n *api.Network, rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.networks, n.ID)
	s.bump(rev, "networks")
}

// serviceNode is a service with its containers; called with at least a
// read lock.
func (s *state) serviceNode(id string, withToken bool, key []byte) map[string]any {
	base := s.svcNode[id]
	if base == nil {
		return nil
	}
	out := make(map[string]any, len(base)+1)
	for k, v := range base {
		out[k] = v
	}
	ctrs := make([]any, 0, len(s.svcCtrs[id]))
	for cid := range s.svcCtrs[id] {
		if n := s.ctrNode[cid]; n != nil {
			ctrs = append(ctrs, n)
		}
	}
	sortByName(ctrs)
	out["containers"] = ctrs
	if withToken {
		out["token"] = serviceToken(key, id)
	}
	return out
}

func (s *state) stackNode(id string, key []byte) map[string]any {
	st := s.stacks[id]
	if st == nil {
		return nil
	}
	svcs := make([]any, 0, len(s.stackSvcs[id]))
	for sid := range s.stackSvcs[id] {
		if n := s.serviceNode(sid, false, key); n != nil {
			svcs = append(svcs, n)
		}
	}
	sortByName(svcs)
	return map[string]any{"name": st.Name, "uuid": st.ID, "environment_name": "default", "services": svcs, "system": st.Labels["io.drover.system"] == "true"}
}

// list returns a full list view, rebuilding it if a change invalidated it.
// Called with the read lock held.
func (s *state) list(name string, key []byte) []any {
	s.listMu.Lock()
	defer s.listMu.Unlock()
	if l, ok := s.lists[name]; ok {
		return l
	}
	var out []any
	switch name {
	case "containers":
		for _, n := range s.ctrNode {
			out = append(out, n)
		}
	case "services":
		for id := range s.services {
			out = append(out, s.serviceNode(id, false, key))
		}
	case "stacks":
		for id := range s.stacks {
			out = append(out, s.stackNode(id, key))
		}
	case "hosts":
		for _, n := range s.hostNode {
			out = append(out, n)
		}
	case "networks":
		for _, n := range s.networks {
			out = append(out, tree(&Network{Name: n.Name, UUID: n.ID, CIDR: n.Spec.CIDR, MTU: n.Spec.MTU}))
		}
	}
	if out == nil {
		out = []any{}
	}
	sortByName(out)
	s.lists[name] = out
	return out
}

// self builds the caller's own view; only, if part is set, that part
// (container, service, stack or host), so self/container/primary_ip does not
// pay for rendering the caller's whole stack.
func (s *state) self(ip, part string, key []byte) (map[string]any, bool) {
	id, ok := s.byIP[ip]
	if !ok {
		return nil, false
	}
	c := s.containers[id]
	out := map[string]any{}
	want := func(p string) bool { return part == "" || part == p }
	if want("container") {
		out["container"] = s.ctrNode[id]
	}
	if want("service") && c.Spec.ServiceID != "" {
		if n := s.serviceNode(c.Spec.ServiceID, true, key); n != nil {
			out["service"] = n
		}
	}
	if want("stack") {
		if n := s.stackNode(c.Spec.StackID, key); n != nil {
			out["stack"] = n
		}
	}
	if want("host") {
		if n := s.hostNode[c.Spec.HostID]; n != nil {
			out["host"] = n
		}
	}
	return out, true
}

func (s *state) versionString() string { return strconv.FormatInt(s.version, 10) }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
