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
