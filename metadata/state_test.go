package metadata

import (
	"encoding/json"
	"testing"

	"github.com/drover/drover/api"
)

func decode(t *testing.T, f frags) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(f.flat(), &m); err != nil {
		t.Fatalf("rendered bytes are not JSON: %v\n%s", err, f.flat())
	}
	return m
}

func (s *state) view(t *testing.T, kind, id string) map[string]any {
	t.Helper()
	s.mu.RLock()
	defer s.mu.RUnlock()
	s.viewMu.Lock()
	defer s.viewMu.Unlock()
	var f frags
	var ok bool
	switch kind {
	case "service":
		f, ok = s.serviceView(id)
	case "stack":
		f, ok = s.stackView(id)
	}
	if !ok {
		t.Fatalf("no %s %s", kind, id)
	}
	return decode(t, f)
}

// Caches deliver concurrently: a service (and its container) can arrive
// before its stack, and must still end up carrying the stack's name.
func TestStackArrivingAfterItsServices(t *testing.T) {
	st := newTestState()
	st.putService(&api.Service{Meta: api.Meta{ID: "sv", Name: "web"}, Spec: api.ServiceSpec{StackID: "st"}})
	st.putContainer(&api.Container{Meta: api.Meta{ID: "c", Name: "shop-web-1"}, Spec: api.ContainerSpec{ServiceID: "sv", StackID: "st"}, Status: api.ContainerStatus{PrimaryIP: "10.0.0.1"}})
	st.putStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	svc := st.view(t, "service", "sv")
	if svc["stack_name"] != "shop" || svc["fqdn"] != "web.shop.drover.internal" {
		t.Fatalf("service rendered before its stack kept no stack: %v %v", svc["stack_name"], svc["fqdn"])
	}
	if c := decode(t, frags{st.state.ctr["c"].json}); c["stack_name"] != "shop" {
		t.Fatalf("container: stack_name %v", c["stack_name"])
	}
}

// A view built once is served until something in it changes; then only
// what holds the change is built again, from current data.
func TestViewsFollowChanges(t *testing.T) {
	st := newTestState()
	st.putStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	st.putService(&api.Service{Meta: api.Meta{ID: "web", Name: "web"}, Spec: api.ServiceSpec{StackID: "st"}})
	st.putService(&api.Service{Meta: api.Meta{ID: "db", Name: "db"}, Spec: api.ServiceSpec{StackID: "st"}})
	c1 := &api.Container{Meta: api.Meta{ID: "c1", Name: "shop-web-1"}, Spec: api.ContainerSpec{ServiceID: "web", StackID: "st"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.0.0.1"}}
	st.putContainer(c1)
	st.putContainer(&api.Container{Meta: api.Meta{ID: "c2", Name: "shop-db-1"}, Spec: api.ContainerSpec{ServiceID: "db", StackID: "st"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.0.0.2"}})
	containerState := func() any {
		stack := st.view(t, "stack", "st")
		for _, s := range stack["services"].([]any) {
			if s.(map[string]any)["name"] == "web" {
				return s.(map[string]any)["containers"].([]any)[0].(map[string]any)["state"]
			}
		}
		return nil
	}
	if got := containerState(); got != "running" {
		t.Fatalf("state in the stack view: %v", got)
	}
	st.mu.RLock()
	before := string(st.list("containers").json)
	st.mu.RUnlock()
	stopped := *c1
	stopped.Status.State = "stopped"
	st.putContainer(&stopped)
	if got := containerState(); got != "stopped" {
		t.Fatalf("stack view after a container change: %v", got)
	}
	st.mu.RLock()
	after := st.list("containers")
	st.mu.RUnlock()
	if string(after.json) == before || after.text == nil || string(after.text) != "0=shop-db-1\n1=shop-web-1\n" {
		t.Fatalf("containers list after the change: %s / %q", after.json, after.text)
	}
	// A renamed service renames its containers' service_name.
	st.putService(&api.Service{Meta: api.Meta{ID: "web", Name: "front"}, Spec: api.ServiceSpec{StackID: "st"}})
	if c := decode(t, frags{st.state.ctr["c1"].json}); c["service_name"] != "front" {
		t.Fatalf("container after its service's rename: %v", c["service_name"])
	}
	st.removeContainer(&stopped)
	if cs := st.view(t, "service", "web")["containers"].([]any); len(cs) != 0 {
		t.Fatalf("deleted container still in its service: %v", cs)
	}
	st.removeService(&api.Service{Meta: api.Meta{ID: "db", Name: "db"}, Spec: api.ServiceSpec{StackID: "st"}})
	if ss := st.view(t, "stack", "st")["services"].([]any); len(ss) != 1 {
		t.Fatalf("deleted service still in its stack: %d services", len(ss))
	}
}

// A service's create_index is its containers' highest, kept as containers
// come, change and go, with only the changes that move it re-rendering it.
func TestServiceCreateIndexFollowsContainers(t *testing.T) {
	st := newTestState()
	st.putStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	st.putService(&api.Service{Meta: api.Meta{ID: "web", Name: "web"}, Spec: api.ServiceSpec{StackID: "st"}})
	ctr := func(id string, idx int) *api.Container {
		return &api.Container{Meta: api.Meta{ID: id, Name: "shop-web-" + id}, Spec: api.ContainerSpec{ServiceID: "web", StackID: "st", ServiceIndex: idx}, Status: api.ContainerStatus{State: "running"}}
	}
	index := func() any { return st.view(t, "service", "web")["create_index"] }
	st.putContainer(ctr("a", 1))
	st.putContainer(ctr("b", 2))
	if got := index(); got != 2.0 {
		t.Fatalf("create_index with containers 1 and 2: %v", got)
	}
	c5 := ctr("c", 5)
	st.putContainer(c5)
	stopped := *c5
	stopped.Status.State = "stopped"
	st.putContainer(&stopped)
	if got := index(); got != 5.0 {
		t.Fatalf("create_index after 5 came and changed: %v", got)
	}
	st.removeContainer(&stopped)
	if got := index(); got != 2.0 {
		t.Fatalf("create_index after 5 went: %v", got)
	}
	// Without spec.serviceIndex the name's suffix counts.
	st.putContainer(&api.Container{Meta: api.Meta{ID: "d", Name: "shop-web-7"}, Spec: api.ContainerSpec{ServiceID: "web", StackID: "st"}})
	if got := index(); got != 7.0 {
		t.Fatalf("create_index from a name's suffix: %v", got)
	}
	if c := decode(t, frags{st.state.ctr["d"].json}); c["create_index"] != 7.0 {
		t.Fatalf("container create_index from its name: %v", c["create_index"])
	}
}

// network_uuid and a host network container's hostname come from other
// objects: containers that came first are rendered again when they come
// or change.
func TestNetworksAndHostsRerenderContainers(t *testing.T) {
	st := newTestState()
	st.putContainer(&api.Container{Meta: api.Meta{ID: "c1", Name: "one"}, Spec: api.ContainerSpec{HostID: "h1", LaunchConfig: &api.LaunchConfig{NetworkMode: "host"}}, Status: api.ContainerStatus{State: "running"}})
	st.putContainer(&api.Container{Meta: api.Meta{ID: "c2", Name: "two"}, Spec: api.ContainerSpec{HostID: "h1"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.3.4", DockerID: "abcdefabcdef0123"}})
	field := func(id, key string) any { return decode(t, frags{st.state.ctr[id].json})[key] }
	if field("c2", "network_uuid") != "" || field("c1", "hostname") != "" {
		t.Fatalf("before networks and hosts: %v %v", field("c2", "network_uuid"), field("c1", "hostname"))
	}
	st.setNetwork(&api.Network{Meta: api.Meta{ID: "managed", Name: "managed"}, Spec: api.NetworkSpec{CIDR: "10.42.0.0/16"}})
	if got := field("c2", "network_uuid"); got != "managed" {
		t.Fatalf("network_uuid after the network came: %v", got)
	}
	st.setNetwork(&api.Network{Meta: api.Meta{ID: "narrow", Name: "narrow"}, Spec: api.NetworkSpec{CIDR: "10.42.3.0/24"}})
	if got := field("c2", "network_uuid"); got != "narrow" {
		t.Fatalf("the most specific network: %v", got)
	}
	st.deleteNetwork(&api.Network{Meta: api.Meta{ID: "narrow"}})
	if got := field("c2", "network_uuid"); got != "managed" {
		t.Fatalf("network_uuid after the narrow network went: %v", got)
	}
	st.setHost(&api.Host{Meta: api.Meta{ID: "h1", Name: "node1"}})
	if got := field("c1", "hostname"); got != "node1" {
		t.Fatalf("host network hostname before the agent reports one: %v", got)
	}
	st.setHost(&api.Host{Meta: api.Meta{ID: "h1", Name: "node1"}, Status: api.HostStatus{Hostname: "node1.example"}})
	if got := field("c1", "hostname"); got != "node1.example" {
		t.Fatalf("host network hostname after the host's changed: %v", got)
	}
	if got := field("c2", "hostname"); got != "abcdefabcdef" {
		t.Fatalf("a bridged container's hostname: %v", got)
	}
}
