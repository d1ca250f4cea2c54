package lb

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// udpEcho answers every datagram on ip:port (0: any) with "<name>
// <datagram>" and returns its port.
func udpEcho(t *testing.T, name, ip string, port int) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDP(buf)
			if err != nil {
				return
			}
			c.WriteToUDP([]byte(name+" "+string(buf[:n])), from)
		}
	}()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// ask sends one datagram from a new socket (a new client) and returns the answer.
func ask(port int, msg string) (string, error) {
	c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// UDP rules are balanced by drover lb itself, beside HAProxy: every new
// client goes to the next backend, replies come back from the LB's port, a
// backend that goes stops getting clients, idle sessions are closed.
func TestIntegrationUDP(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, haproxy)")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is missing (make deps installs Debian's)")
	}
	old := UDPIdleTimeout
	UDPIdleTimeout = 500 * time.Millisecond
	t.Cleanup(func() { UDPIdleTimeout = old })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, eng := testenv.StartServer(t, apiserver.Options{})
	p1 := udpEcho(t, "dns-1", "127.0.0.2", 0)
	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "net"}})
	if err != nil {
		t.Fatal(err)
	}
	lbPort := testenv.FreePort(t)
	lbSvc, err := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "lb"}, Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceLoadBalancer,
		LaunchConfig: &api.LaunchConfig{Image: "rancher/lb-service-haproxy"},
		LBConfig:     &api.LBConfig{PortRules: []api.PortRule{{SourcePort: lbPort, Protocol: "udp", TargetPort: p1, Addresses: []string{"127.0.0.2"}}}}}})
	if err != nil {
		t.Fatal(err)
	}
	startLB(t, ctx, Options{Engine: eng, ServiceID: lbSvc.ID, HAProxy: haproxy})
	testenv.Eventually(t, "a datagram through the LB and its answer back", 30*time.Second, func() error {
		got, err := ask(lbPort, "hello")
		if err == nil && got != "dns-1 hello" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	// A second backend (same port on another address): new clients are
	// spread over both.
	if _, err := eng.Services().Patch(ctx, lbSvc.ID, map[string]any{"spec": map[string]any{"lbConfig": map[string]any{"portRules": []api.PortRule{
		{SourcePort: lbPort, Protocol: "udp", TargetPort: p1, Addresses: []string{"127.0.0.2", "127.0.0.3"}}}}}}); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, "dns-2", "127.0.0.3", p1)
	testenv.Eventually(t, "new clients spread over both backends", 30*time.Second, func() error {
		seen := map[string]int{}
		for i := 0; i < 6; i++ {
			got, err := ask(lbPort, "x")
			if err != nil {
				return err
			}
			seen[strings.Fields(got)[0]]++
		}
		if seen["dns-1"] == 0 || seen["dns-2"] == 0 {
			return fmt.Errorf("answers by %v", seen)
		}
		return nil
	})
	// dns-1 leaves: every client goes to dns-2.
	if _, err := eng.Services().Patch(ctx, lbSvc.ID, map[string]any{"spec": map[string]any{"lbConfig": map[string]any{"portRules": []api.PortRule{
		{SourcePort: lbPort, Protocol: "udp", TargetPort: p1, Addresses: []string{"127.0.0.3"}}}}}}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "only dns-2 answers", 30*time.Second, func() error {
		for i := 0; i < 4; i++ {
			got, err := ask(lbPort, "y")
			if err != nil {
				return err
			}
			if !strings.HasPrefix(got, "dns-2 ") {
				return fmt.Errorf("answer %q", got)
			}
		}
		return nil
	})
}

// A session idle for UDPIdleTimeout is closed; a port no rule names closes.
func TestUDPSessionsExpire(t *testing.T) {
	old := UDPIdleTimeout
	UDPIdleTimeout = 200 * time.Millisecond
	t.Cleanup(func() { UDPIdleTimeout = old })
	port := udpEcho(t, "echo", "127.0.0.1", 0)
	p := newUDPProxy(testenv.Logger())
	defer p.close()
	front := testenv.FreePort(t)
	if err := p.set([]Rule{{PortRule: api.PortRule{SourcePort: front, Protocol: "udp"}, Targets: []Target{{IP: "127.0.0.1", Port: port}}}}); err != nil {
		t.Fatal(err)
	}
	if got, err := ask(front, "a"); err != nil || got != "echo a" {
		t.Fatalf("answer %q, %v", got, err)
	}
	if n := p.sessions()[fmt.Sprint(front)]; n != 1 {
		t.Fatalf("%d sessions, want 1", n)
	}
	testenv.Eventually(t, "the idle session closed", 5*time.Second, func() error {
		if n := p.sessions()[fmt.Sprint(front)]; n != 0 {
			return fmt.Errorf("%d sessions", n)
		}
		return nil
	})
	if err := p.set(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(front, "b"); err == nil {
		t.Fatal("a port no rule names still answers")
	}
}
