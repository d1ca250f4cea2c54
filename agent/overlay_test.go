package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	overlay "github.com/drover/drover/net"
)

// inNS runs f in ns on a thread of its own.
func inNS(ns netns.NsHandle, f func() error) error { return overlay.InNS(ns, f) }

// A Docker container on this machine (host a, the machine's own namespace,
// where the one Docker Engine runs) and a pod on host b (a network
// namespace) talk across VXLAN both ways. Everything the test adds to the
// machine's namespace (a veth, drover0, the VXLAN device, the drover
// nftables table, two FORWARD rules, the Docker network) is removed at the
// end. (On this machine the pod-to-container connection also passes
// without drover's FORWARD rules, so this test does not prove them needed.)
func TestIntegrationDockerContainerAcrossHosts(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.overlay, c.ipamDir, c.agentIP = true, t.TempDir(), "192.168.78.1"

	// Host b's namespace, joined to this one by a veth: the underlay.
	var hostB netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // the thread ends with the goroutine
		var err error
		hostB, err = netns.New()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hostB.Close() })
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "drvt-a"
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(hostB))}); err != nil {
		t.Fatalf("creating the underlay veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName("drvt-a"); err == nil {
			netlink.LinkDel(l)
		}
	})
	ua, _ := netlink.LinkByName("drvt-a")
	mustNL(t, netlink.AddrAdd(ua, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.168.78.1"), Mask: net.CIDRMask(24, 32)}}))
	mustNL(t, netlink.LinkSetUp(ua))
	hb, err := netlink.NewHandleAt(hostB)
	mustNL(t, err)
	defer hb.Close()
	ub, _ := hb.LinkByName("eth0")
	mustNL(t, hb.AddrAdd(ub, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("192.168.78.2"), Mask: net.CIDRMask(24, 32)}}))
	mustNL(t, hb.LinkSetUp(ub))
	lo, _ := hb.LinkByName("lo")
	mustNL(t, hb.LinkSetUp(lo))

	// Host a: the agent (its containers on drover0), host b: registered.
	c.startAgent("a", nil)
	waitHosts(t, c, 1)
	regB, err := c.eng.Register(ctx, api.RegisterRequest{Name: "b", AgentIP: "192.168.78.2"})
	mustNL(t, err)
	hostA, err := c.eng.Hosts().Get(ctx, c.hostIDs()["a"])
	mustNL(t, err)
	if hostA.Status.AgentIP != "192.168.78.1" || hostA.Status.Subnet == "" {
		t.Fatalf("host a: %+v", hostA.Status)
	}
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "x"}, Spec: api.StackSpec{Compose: "services:\n  web:\n    image: drover-test-app:v1\n"}})
	mustNL(t, err)
	var webIP string
	eventually(t, "web running on host a", 60*time.Second, func() error {
		ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(ctrs) != 1 || ctrs[0].Status.State != api.ContainerRunning {
			return fmt.Errorf("%v %v", ctrs, err)
		}
		webIP = ctrs[0].Status.PrimaryIP
		return nil
	})

	// drover net's work on both hosts, from the engine's hosts.
	_, network, _ := net.ParseCIDR("10.42.0.0/16")
	remotes := func() []overlay.Host {
		var out []overlay.Host
		for _, h := range []*api.Host{hostA, &regB.Host} {
			_, sn, _ := net.ParseCIDR(h.Status.Subnet)
			out = append(out, overlay.Host{ID: h.ID, Subnet: sn, AgentIP: net.ParseIP(h.Status.AgentIP).To4(), VTEPMAC: overlay.VTEPMAC(h.ID)})
		}
		return out
	}
	program := func(h *api.Host, ns netns.NsHandle, underlay string) *overlay.Programmer {
		_, sn, _ := net.ParseCIDR(h.Status.Subnet)
		p, err := overlay.New(overlay.Config{Network: network, Local: overlay.Host{ID: h.ID, Subnet: sn, AgentIP: net.ParseIP(h.Status.AgentIP).To4()},
			VNI: 1, Port: 4789, MTU: 1450, Underlay: underlay}, ns)
		mustNL(t, err)
		for _, f := range []func() (int, error){p.Ensure, p.EnsureMasquerade, p.EnsureForward} {
			if _, err := f(); err != nil {
				t.Fatal(err)
			}
		}
		_, _, err = p.Sync(remotes())
		mustNL(t, err)
		return p
	}
	pa := program(hostA, netns.None(), "drvt-a")
	t.Cleanup(func() {
		// After the cluster's cleanup has removed the containers (cleanups
		// run last-registered first, so do it here too).
		c.stopAgent("a")
		for _, id := range c.hostIDs() {
			exec.Command("sh", "-c", "docker ps -aq --filter label="+agent.LabelHostID+"="+id+" | xargs -r docker rm -f").Run()
		}
		exec.Command("docker", "network", "rm", agent.OverlayNetwork).Run()
		pa.RemoveForward()
		pa.RemoveMasquerade()
		pa.Remove()
		pa.Close()
	})
	pb := program(&regB.Host, hostB, "eth0")
	defer pb.Close()

	// A pod on host b.
	pod := make(chan netns.NsHandle, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := netns.New()
		if err != nil {
			t.Error(err)
		}
		pod <- ns
	}()
	podNS := <-pod
	defer podNS.Close()
	_, subB, _ := net.ParseCIDR(regB.Host.Status.Subnet)
	podIP := overlay.Gateway(subB)
	podIP[3]++
	attrs = netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = "vpod", 1450
	mustNL(t, hb.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(podNS))}))
	vp, _ := hb.LinkByName("vpod")
	br, err := hb.LinkByName(overlay.BridgeName)
	mustNL(t, err)
	mustNL(t, hb.LinkSetMaster(vp, br))
	mustNL(t, hb.LinkSetUp(vp))
	hp, err := netlink.NewHandleAt(podNS)
	mustNL(t, err)
	defer hp.Close()
	pe, _ := hp.LinkByName("eth0")
	mustNL(t, hp.LinkSetMTU(pe, 1450))
	mustNL(t, hp.AddrAdd(pe, &netlink.Addr{IPNet: &net.IPNet{IP: podIP, Mask: subB.Mask}}))
	mustNL(t, hp.LinkSetUp(pe))
	mustNL(t, hp.RouteAdd(&netlink.Route{Gw: overlay.Gateway(subB)}))

	// Pod on b -> Docker container on a: a new connection into a container
	// through Docker's FORWARD chain.
	var body string
	mustNL(t, inNS(podNS, func() error {
		cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := cl.Get("http://" + webIP + ":8080/")
		if err != nil {
			return fmt.Errorf("pod on b -> container %s on a: %w", webIP, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return nil
	}))
	if !strings.Contains(body, "version=") {
		t.Fatalf("the container answered %q", body)
	}
	// Host a -> the pod on b.
	var ln net.Listener
	mustNL(t, inNS(podNS, func() (err error) { ln, err = net.Listen("tcp4", podIP.String()+":9000"); return }))
	defer ln.Close()
	go func() {
		if conn, err := ln.Accept(); err == nil {
			io.WriteString(conn, "pod\n")
			conn.Close()
		}
	}()
	conn, err := net.DialTimeout("tcp4", podIP.String()+":9000", 5*time.Second)
	if err != nil {
		t.Fatalf("host a -> pod %s on b: %v", podIP, err)
	}
	conn.Close()
}

func mustNL(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
