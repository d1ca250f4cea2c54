package dns

import (
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
)

// ptrOf is what drover answers for the reverse name of ip ("" for none).
func (t *testServer) ptrOf(ip string) string {
	rev, _ := mdns.ReverseAddr(ip)
	rs, _ := t.recs.Get(rev)
	if rs == nil || len(rs.PTR) == 0 {
		return ""
	}
	if len(rs.PTR) > 1 {
		return "several"
	}
	return rs.PTR[0]
}

// The reverse name of an address shared by several containers (a sidekick
// in its primary's network namespace has the primary's) points at the one
// whose namespace it is, whatever order they came in; it follows stops,
// address changes and health, and pods and strangers get none.
func TestReverseRecordsSharedAddress(t *testing.T) {
	s := newTestServer()
	s.putStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	s.putService(&api.Service{Meta: api.Meta{ID: "web", Name: "web"}, Spec: api.ServiceSpec{StackID: "st"}})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	primary := &api.Container{Meta: api.Meta{ID: "c1", Name: "Shop-Web-1", CreatedAt: t0.Add(time.Second)}, Spec: api.ContainerSpec{ServiceID: "web", StackID: "st", LaunchConfig: &api.LaunchConfig{}},
		Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.5"}}
	sidekick := &api.Container{Meta: api.Meta{ID: "c0", Name: "shop-web-net-1", CreatedAt: t0}, Spec: api.ContainerSpec{ServiceID: "web", StackID: "st", LaunchConfigName: "net",
		LaunchConfig: &api.LaunchConfig{NetworkMode: "container:web"}}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.5"}}
	s.putContainer(sidekick) // first, and older
	s.putContainer(primary)
	if got := s.ptrOf("10.42.0.5"); got != "shop-web-1.drover.internal." {
		t.Fatalf("shared address: %q, want the primary's name", got)
	}
	stopped := *primary
	stopped.Status.State = api.ContainerStopped
	s.putContainer(&stopped)
	if got := s.ptrOf("10.42.0.5"); got != "shop-web-net-1.drover.internal." {
		t.Fatalf("after the primary stopped: %q, want the one still serving there", got)
	}
	moved := *sidekick
	moved.Status.PrimaryIP = "10.42.0.6"
	s.putContainer(&moved)
	if got, now := s.ptrOf("10.42.0.5"), s.ptrOf("10.42.0.6"); got != "" || now != "shop-web-net-1.drover.internal." {
		t.Fatalf("after an address change: old %q, new %q", got, now)
	}
	unhealthy := moved
	unhealthy.Status.Health = "unhealthy"
	s.putContainer(&unhealthy)
	if got := s.ptrOf("10.42.0.6"); got != "" {
		t.Fatalf("an unhealthy container (out of its forward name too): %q", got)
	}
	s.putContainer(&api.Container{Meta: api.Meta{ID: "p", Name: "pod-1"}, Spec: api.ContainerSpec{Kind: api.ContainerKindPod, StackID: "st"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.1.1"}})
	if got := s.ptrOf("10.42.1.1"); got != "" {
		t.Fatalf("a pod's address (Kubernetes names its pods): %q", got)
	}
	s.putContainer(&api.Container{Meta: api.Meta{ID: "v6", Name: "six"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "fd00::5"}})
	if got := s.ptrOf("fd00::5"); got != "six.drover.internal." {
		t.Fatalf("an IPv6 address: %q", got)
	}
}
