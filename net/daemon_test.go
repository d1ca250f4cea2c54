package overlay

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// drover net against a real engine: three hosts (namespaces) registered
// with their underlay addresses get subnets, each daemon programs routes to
// the others from the engine alone, containers talk across hosts, a deleted
// host disappears from every other host, and a restarted daemon leaves a
// live connection alone.
func TestIntegrationDaemonsFromTheEngine(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	_, admin := testenv.StartServer(t, apiserver.Options{})
	l := newLab(t)
	names := []string{"a", "b", "c"}
	ids := map[string]string{}
	for i, name := range names {
		r, err := admin.Register(ctx, api.RegisterRequest{Name: name, AgentIP: fmt.Sprintf("192.168.77.%d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		if r.Host.Status.Subnet == "" {
			t.Fatalf("host %s registered without a subnet: %+v", name, r.Host.Status)
		}
		h := l.addHost(name, i+1, r.Host.Status.Subnet)
		h.id = r.Host.ID
		ids[name] = r.Host.ID
	}
	stops := map[string]context.CancelFunc{}
	start := func(name string) {
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := Run(dctx, Options{Engine: admin, Host: name, NS: l.hosts[name].ns, Logger: testenv.Logger()}); err != nil {
				t.Errorf("drover net on %s: %v", name, err)
			}
		}()
		stops[name] = func() { cancel(); <-done }
	}
	for _, name := range names {
		start(name)
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()
	routes := func(name string) int {
		rs, _ := l.hosts[name].h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		return len(rs)
	}
	testenv.Eventually(t, "every host programmed with a route to each other host", 20*time.Second, func() error {
		for _, name := range names {
			if n := routes(name); n != 2 {
				return fmt.Errorf("host %s has %d overlay routes", name, n)
			}
		}
		return nil
	})
	ha, hb := l.hosts["a"], l.hosts["b"]
	ipOf := func(h *labHost, n byte) string {
		ip := Gateway(h.subnet)
		ip[3] = n
		return ip.String()
	}
	c1 := l.addContainer(ha, "c1", ipOf(ha, 2))
	c2 := l.addContainer(hb, "c2", ipOf(hb, 2))
	listen(t, c2, ipOf(hb, 2)+":8080")
	conn, err := dial(c1, ipOf(hb, 2)+":8080")
	if err != nil {
		t.Fatalf("container on a -> container on b: %v", err)
	}
	defer conn.Close()
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, ipOf(ha, 2)+":") {
		t.Fatalf("b's container saw %q (%v), want %s", from, err, ipOf(ha, 2))
	}

	// Host c is deleted in the engine: a and b drop it.
	if _, err := admin.Hosts().Delete(ctx, ids["c"]); err != nil {
		t.Fatal(err)
	}
	stops["c"]()
	delete(stops, "c")
	testenv.Eventually(t, "host c gone from a and b", 20*time.Second, func() error {
		for _, name := range []string{"a", "b"} {
			if n := routes(name); n != 1 {
				return fmt.Errorf("host %s has %d overlay routes", name, n)
			}
		}
		return nil
	})

	// drover net restarted on a: the connection through it lives on.
	stops["a"]()
	start("a")
	time.Sleep(500 * time.Millisecond) // its first pass
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, ipOf(ha, 2)+":") {
		t.Fatalf("the connection after drover net restarted: %q %v", from, err)
	}
}
