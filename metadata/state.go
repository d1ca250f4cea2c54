package metadata

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"sync"

	"sigs.k8s.io/yaml"

	"github.com/drover/drover/api"
)

// frags is a JSON value held as pieces that point into objects' rendered
// bytes, so nesting a container into its service, stack and lists copies
// no bytes. Pieces are never modified once made.
type frags [][]byte

func (f frags) size() int {
	n := 0
	for _, b := range f {
		n += len(b)
	}
	return n
}

func (f frags) flat() []byte {
	if len(f) == 1 {
		return f[0]
	}
	out := make([]byte, 0, f.size())
	for _, b := range f {
		out = append(out, b...)
	}
	return out
}

// node is one object rendered in Rancher's shape.
type node struct {
	name string
	id   string
	json []byte // for services and stacks: without their members
	// what its rendering depends on, to invalidate on change
	stackID, serviceID, hostID string
	// createIndex: a service's create_index as rendered (its containers'
	// highest), so a container change re-renders it only when it moves.
	createIndex int
}

var (
	openObj   = []byte("{")
	closeObj  = []byte("}")
	comma     = []byte(",")
	closeList = []byte("]")
)

// list is a full list view, built once per change of its members.
type list struct {
	items  []listItem // by name, then id
	byName map[string]int
	json   []byte
	text   []byte
	yaml   []byte // made on first ask
}

type listItem struct {
	name, id string
	body     frags
}

// state is the metadata tree. A change renders the one object it touches
// (a container: about 10 µs) and drops the views that contain it; a view
// (a service with its containers, a stack with its services, a full list)
// is put together from rendered bytes on the first read after a change and
// then served as is, never rendered per request.
type state struct {
	mu      sync.RWMutex
	version int64
	changed chan struct{} // closed and replaced on every change

	stacks   store[api.Stack]
	services store[api.Service]
	ctrs     store[api.Container]

	ctr   map[string]*node
	svc   map[string]*node
	stack map[string]*node
	host  map[string]*node
	net   map[string]*node
	byIP  map[string]string // primary IP -> container id
	// What containers' rendering reads besides their stack and service:
	// hosts' hostnames (for containers on the host's network) and the
	// networks' CIDRs (a container's network is the one holding its IP).
	hostnames map[string]string
	cidrs     map[string]netip.Prefix

	// views are built by readers (under mu's read lock and viewMu) and
	// dropped by writers (under mu's write lock).
	viewMu     sync.Mutex
	svcViews   map[string]frags
	stackViews map[string]frags
	lists      map[string]*list
}

func newState(stacks store[api.Stack], services store[api.Service], ctrs store[api.Container]) *state {
	return &state{
		changed: make(chan struct{}), stacks: stacks, services: services, ctrs: ctrs,
		ctr: map[string]*node{}, svc: map[string]*node{}, stack: map[string]*node{}, host: map[string]*node{}, net: map[string]*node{},
		byIP: map[string]string{}, hostnames: map[string]string{}, cidrs: map[string]netip.Prefix{}, svcViews: map[string]frags{}, stackViews: map[string]frags{}, lists: map[string]*list{},
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

// dropService forgets the views holding a service. Called locked.
func (s *state) dropService(id string) {
	delete(s.svcViews, id)
	if n := s.svc[id]; n != nil {
		delete(s.stackViews, n.stackID)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("metadata: rendering: " + err.Error()) // plain structs of strings and numbers
	}
	return b
}

// renderContainer renders c with what it shows of its stack, service,
// host and network, as they are now. Called locked.
func (s *state) renderContainer(c *api.Container) {
	x := containerCtx{hostHostname: s.hostnames[c.Spec.HostID], networkUUID: s.networkOf(c.Status.PrimaryIP)}
	if st, ok := s.stacks.Get(c.Spec.StackID); ok {
		x.stackName = st.Name
	}
	if sv, ok := s.services.Get(c.Spec.ServiceID); ok {
		x.service = sv
	}
	s.ctr[c.ID] = &node{name: c.Name, id: c.ID, json: mustJSON(renderContainer(c, x)),
		stackID: c.Spec.StackID, serviceID: c.Spec.ServiceID, hostID: c.Spec.HostID}
}

// renderService renders v with its stack's name and its containers'
// highest create index. Called locked.
func (s *state) renderService(v *api.Service) {
	stackName := ""
	if st, ok := s.stacks.Get(v.Spec.StackID); ok {
		stackName = st.Name
	}
	ci := s.maxCreateIndex(v.ID)
	s.svc[v.ID] = &node{name: v.Name, id: v.ID, json: mustJSON(renderService(v, stackName, ci)), stackID: v.Spec.StackID, createIndex: ci}
}

func (s *state) maxCreateIndex(serviceID string) int {
	m := 0
	for _, c := range s.ctrs.ByIndex(byService, serviceID) {
		m = max(m, createIndex(c))
	}
	return m
}

// serviceIndexChanged re-renders a service whose create_index may have
// moved: a container with a higher index came, or the one holding the
// highest changed or went. Called locked.
func (s *state) serviceIndexChanged(serviceID string, came, went int) {
	n := s.svc[serviceID]
	if n == nil || (came <= n.createIndex && went != n.createIndex) {
		return
	}
	if v, ok := s.services.Get(serviceID); ok && s.maxCreateIndex(serviceID) != n.createIndex {
		s.renderService(v)
		s.dropService(serviceID)
	}
}

func (s *state) setContainer(old, c *api.Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old != nil && old.Status.PrimaryIP != c.Status.PrimaryIP && s.byIP[old.Status.PrimaryIP] == c.ID {
		delete(s.byIP, old.Status.PrimaryIP)
	}
	if prev := s.ctr[c.ID]; prev != nil {
		s.dropService(prev.serviceID)
		delete(s.stackViews, prev.stackID)
	}
	s.renderContainer(c)
	if c.Status.PrimaryIP != "" {
		s.byIP[c.Status.PrimaryIP] = c.ID
	}
	went := 0
	if old != nil {
		went = createIndex(old)
		if old.Spec.ServiceID != c.Spec.ServiceID {
			s.serviceIndexChanged(old.Spec.ServiceID, 0, went)
			went = 0
		}
	}
	s.serviceIndexChanged(c.Spec.ServiceID, createIndex(c), went)
	s.dropService(c.Spec.ServiceID)
	delete(s.stackViews, c.Spec.StackID)
	s.bump(c.Revision, "containers", "services", "stacks")
}

func (s *state) deleteContainer(c *api.Container) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byIP[c.Status.PrimaryIP] == c.ID {
		delete(s.byIP, c.Status.PrimaryIP)
	}
	if prev := s.ctr[c.ID]; prev != nil {
		s.dropService(prev.serviceID)
		delete(s.stackViews, prev.stackID)
	}
	delete(s.ctr, c.ID)
	s.serviceIndexChanged(c.Spec.ServiceID, 0, createIndex(c))
	s.bump(0, "containers", "services", "stacks")
}

func (s *state) setService(old, v *api.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropService(v.ID) // under its old stack
	s.renderService(v)
	s.dropService(v.ID)
	lists := []string{"services", "stacks"}
	if old == nil || showsInContainers(old, v) {
		for _, c := range s.ctrs.ByIndex(byService, v.ID) {
			s.renderContainer(c)
		}
		lists = append(lists, "containers")
	}
	s.bump(v.Revision, lists...)
}

// showsInContainers says whether a service changed in what its containers
// show of it: its name, links and health check.
func showsInContainers(old, v *api.Service) bool {
	return old.Name != v.Name || old.Spec.StackID != v.Spec.StackID || !slices.Equal(old.Spec.Links, v.Spec.Links) ||
		!reflect.DeepEqual(old.Spec.HealthCheck, v.Spec.HealthCheck)
}

func (s *state) deleteService(v *api.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropService(v.ID)
	delete(s.svc, v.ID)
	s.bump(0, "services", "stacks")
}

func (s *state) setStack(old, st *api.Stack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stack[st.ID] = &node{name: st.Name, id: st.ID, json: mustJSON(renderStack(st))}
	delete(s.stackViews, st.ID)
	lists := []string{"stacks"}
	// Services and containers may have arrived before their stack: a new
	// stack, like a renamed one, re-renders what carries its name.
	if old == nil || old.Name != st.Name {
		for _, v := range s.services.ByIndex(byStack, st.ID) {
			s.renderService(v)
			delete(s.svcViews, v.ID)
		}
		for _, c := range s.ctrs.ByIndex(byStack, st.ID) {
			s.renderContainer(c)
		}
		lists = append(lists, "services", "containers")
	}
	s.bump(st.Revision, lists...)
}

func (s *state) deleteStack(st *api.Stack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.stack, st.ID)
	delete(s.stackViews, st.ID)
	s.bump(0, "stacks")
}

// byNameThenID sorts like every Rancher list: by name; the id only makes
// equal names come out the same way every time.
func byNameThenID(items []listItem) {
	sort.Slice(items, func(i, j int) bool {
		if items[i].name != items[j].name {
			return items[i].name < items[j].name
		}
		return items[i].id < items[j].id
	})
}

// withMembers is a head (a service or stack rendered alone) with its
// members' JSON added under key.
func withMembers(head []byte, key string, members []listItem) frags {
	byNameThenID(members)
	out := make(frags, 0, 2*len(members)+3)
	out = append(out, head[:len(head)-1], []byte(`,"`+key+`":[`))
	for i, m := range members {
		if i > 0 {
			out = append(out, comma)
		}
		out = append(out, m.body...)
	}
	return append(out, closeList, closeObj)
}

// serviceView is a service with its containers. Called with the read
// lock and viewMu held.
func (s *state) serviceView(id string) (frags, bool) {
	if f, ok := s.svcViews[id]; ok {
		return f, true
	}
	head := s.svc[id]
	if head == nil {
		return nil, false
	}
	var members []listItem
	for _, c := range s.ctrs.ByIndex(byService, id) {
		if n := s.ctr[c.ID]; n != nil {
			members = append(members, listItem{n.name, n.id, frags{n.json}})
		}
	}
	f := withMembers(head.json, "containers", members)
	s.svcViews[id] = f
	return f, true
}

// stackView is a stack with its services and theirs containers. Called
// with the read lock and viewMu held.
func (s *state) stackView(id string) (frags, bool) {
	if f, ok := s.stackViews[id]; ok {
		return f, true
	}
	head := s.stack[id]
	if head == nil {
		return nil, false
	}
	var members []listItem
	for _, v := range s.services.ByIndex(byStack, id) {
		if f, ok := s.serviceView(v.ID); ok {
			members = append(members, listItem{s.svc[v.ID].name, v.ID, f})
		}
	}
	f := withMembers(head.json, "services", members)
	s.stackViews[id] = f
	return f, true
}

// list returns a full list view. Called with the read lock held.
func (s *state) list(name string) *list {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if l, ok := s.lists[name]; ok {
		return l
	}
	var items []listItem
	plain := func(m map[string]*node) {
		items = make([]listItem, 0, len(m))
		for _, n := range m {
			items = append(items, listItem{n.name, n.id, frags{n.json}})
		}
	}
	switch name {
	case "containers":
		plain(s.ctr)
	case "hosts":
		plain(s.host)
	case "networks":
		plain(s.net)
	case "services":
		for id, n := range s.svc {
			f, _ := s.serviceView(id)
			items = append(items, listItem{n.name, id, f})
		}
	case "stacks":
		for id, n := range s.stack {
			f, _ := s.stackView(id)
			items = append(items, listItem{n.name, id, f})
		}
	}
	byNameThenID(items)
	l := &list{items: items, byName: make(map[string]int, len(items))}
	size := 2
	for i, it := range items {
		size += it.body.size() + 1
		if _, dup := l.byName[it.name]; !dup {
			l.byName[it.name] = i
		}
	}
	var text bytes.Buffer
	l.json = make([]byte, 0, size)
	l.json = append(l.json, '[')
	for i, it := range items {
		if i > 0 {
			l.json = append(l.json, ',')
		}
		for _, b := range it.body {
			l.json = append(l.json, b...)
		}
		text.WriteString(strconv.Itoa(i))
		if it.name != "" {
			text.WriteByte('=')
			text.WriteString(it.name)
		}
		text.WriteByte('\n')
	}
	l.json = append(l.json, ']')
	l.text = text.Bytes()
	s.lists[name] = l
	return l
}

// listYAML is a list's YAML, made once per change. Called with the read
// lock held.
func (s *state) listYAML(l *list) []byte {
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	if l.yaml == nil {
		l.yaml, _ = yaml.JSONToYAML(l.json)
	}
	return l.yaml
}

// item finds a list's item by index or by name (the first of that name).
func (l *list) item(seg string) (frags, bool) {
	if i, err := strconv.Atoi(seg); err == nil {
		if i < 0 || i >= len(l.items) {
			return nil, false
		}
		return l.items[i].body, true
	}
	i, ok := l.byName[seg]
	if !ok {
		return nil, false
	}
	return l.items[i].body, true
}

// self parts a caller reads, as JSON. Called with the read lock held.
func (s *state) selfContainer(ip string) *node {
	id, ok := s.byIP[ip]
	if !ok {
		return nil
	}
	return s.ctr[id]
}

func (s *state) selfPart(c *node, part string, key []byte) (frags, bool) {
	switch part {
	case "container":
		return frags{c.json}, true
	case "service":
		if c.serviceID == "" {
			return nil, false
		}
		s.viewMu.Lock()
		f, ok := s.serviceView(c.serviceID)
		s.viewMu.Unlock()
		if !ok {
			return nil, false
		}
		// Only the service's own containers see its token.
		tok := []byte(`],"token":"` + serviceToken(key, c.serviceID) + `"}`)
		return append(f[:len(f)-2:len(f)-2], tok), true
	case "stack":
		s.viewMu.Lock()
		defer s.viewMu.Unlock()
		return s.stackView(c.stackID)
	case "host":
		if h := s.host[c.hostID]; h != nil {
			return frags{h.json}, true
		}
	}
	return nil, false
}

var selfParts = []string{"container", "host", "service", "stack"}

// self is the caller's whole view, keyed by part. Called with the read
// lock held.
func (s *state) self(c *node, key []byte) (frags, []string) {
	out := frags{openObj}
	var keys []string
	for _, p := range selfParts {
		f, ok := s.selfPart(c, p, key)
		if !ok {
			continue
		}
		if len(keys) > 0 {
			out = append(out, comma)
		}
		out = append(out, []byte(`"`+p+`":`))
		out = append(out, f...)
		keys = append(keys, p)
	}
	return append(out, closeObj), keys
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
