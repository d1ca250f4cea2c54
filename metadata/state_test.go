package metadata

import (
	"testing"

	"github.com/drover/drover/api"
)

// Caches deliver concurrently: a service (and its container) can arrive
// before its stack, and must still end up carrying the stack's name.
func TestStackArrivingAfterItsServices(t *testing.T) {
	st := newState()
	st.setService(&api.Service{Meta: api.Meta{ID: "sv", Name: "web"}, Spec: api.ServiceSpec{StackID: "st"}})
	st.setContainer(&api.Container{Meta: api.Meta{ID: "c", Name: "shop-web-1"}, Spec: api.ContainerSpec{ServiceID: "sv", StackID: "st"}, Status: api.ContainerStatus{PrimaryIP: "10.0.0.1"}})
	st.setStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	st.mu.RLock()
	defer st.mu.RUnlock()
	svc := st.serviceNode("sv", false, nil)
	if svc["stack_name"] != "shop" || svc["fqdn"] != "web.shop.drover.internal" {
		t.Fatalf("service rendered before its stack kept no stack: %v %v", svc["stack_name"], svc["fqdn"])
	}
	if c := st.ctrNode["c"].(map[string]any); c["stack_name"] != "shop" {
		t.Fatalf("container: stack_name %v", c["stack_name"])
	}
}
