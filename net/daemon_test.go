package overlay

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
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

// drover net as a process: killed with SIGKILL under a live TCP connection
// and started again, it loses no connection and leaves the data path as it
// was (issue 10: no flap on restart).
func TestIntegrationDaemonProcessKilled(t *testing.T) {
	needRoot(t)
	ctx := context.Background()
	srv, admin := testenv.StartServer(t, apiserver.Options{})
	creds := testenv.Credentials(t, srv)
	bin := testenv.DroverBinary(t)
	l := newLab(t)
	for i, name := range []string{"a", "b"} {
		r, err := admin.Register(ctx, api.RegisterRequest{Name: name, AgentIP: fmt.Sprintf("192.168.77.%d", i+1)})
		if err != nil {
			t.Fatal(err)
		}
		h := l.addHost(name, i+1, r.Host.Status.Subnet)
		h.id = r.Host.ID
	}
	start := func(name string) *exec.Cmd {
		cmd := exec.Command(bin, "net", "--netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(l.hosts[name].ns)), "--server", creds.URL, "--access-key", creds.AccessKey,
			"--secret-key", creds.SecretKey, "--host", name, "--listen", "", "--cni-conf-dir", "", "--log-level", "warn")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	da := start("a")
	start("b")
	routes := func(name string) int {
		rs, _ := l.hosts[name].h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		return len(rs)
	}
	testenv.Eventually(t, "both hosts programmed by their drover net processes", 30*time.Second, func() error {
		if routes("a") != 1 || routes("b") != 1 {
			return fmt.Errorf("routes: a %d, b %d", routes("a"), routes("b"))
		}
		return nil
	})
	ha, hb := l.hosts["a"], l.hosts["b"]
	ipA, ipB := Gateway(ha.subnet), Gateway(hb.subnet)
	ipA[3]++
	ipB[3]++
	c1 := l.addContainer(ha, "c1", ipA.String())
	c2 := l.addContainer(hb, "c2", ipB.String())
	listen(t, c2, ipB.String()+":8080")
	conn, err := dial(c1, ipB.String()+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	vx, _ := ha.h.LinkByName(VXLANName)
	before := vx.Attrs().Index
	if err := da.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	da.Wait()
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, ipA.String()+":") {
		t.Fatalf("the connection with drover net dead on a: %q %v", from, err)
	}
	start("a")
	time.Sleep(2 * time.Second) // its first passes
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, ipA.String()+":") {
		t.Fatalf("the connection after drover net restarted on a: %q %v", from, err)
	}
	if vx, _ := ha.h.LinkByName(VXLANName); vx == nil || vx.Attrs().Index != before {
		t.Fatal("the restarted drover net made the VXLAN device again")
	}
}
