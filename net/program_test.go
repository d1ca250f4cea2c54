package overlay

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Real namespaces, real packets: hosts are network namespaces joined by
// veths to an underlay bridge in a namespace of its own; containers are
// namespaces with a veth on their host's drover0. All namespaces are
// unnamed and vanish with the test: the machine's own is never touched.

func needRoot(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (network namespaces); run without -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("network namespace tests need root (CAP_NET_ADMIN): run make test as root")
	}
}

// newNS makes an unnamed network namespace, freed when the test ends.
func newNS(t testing.TB) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	errc := make(chan error, 1)
	go func() {
		// netns.New switches the calling thread: do it on a thread that
		// then dies with this goroutine.
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var err error
		ns, err = netns.New()
		errc <- err
	}()
	if err := <-errc; err != nil {
		t.Fatalf("creating a network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func cidr(t testing.TB, s string) *net.IPNet {
	t.Helper()
	ip, n, err := net.ParseCIDR(s)
	must(t, err)
	n.IP = ip
	return n
}

// lab is an underlay with hosts on it.
type lab struct {
	t     testing.TB
	under netns.NsHandle
	uh    *netlink.Handle
	hosts map[string]*labHost
}

type labHost struct {
	ns      netns.NsHandle
	h       *netlink.Handle
	agentIP net.IP
	subnet  *net.IPNet
	id      string
	prog    *Programmer
}

func newLab(t testing.TB) *lab {
	l := &lab{t: t, under: newNS(t), hosts: map[string]*labHost{}}
	l.uh = handle(t, l.under)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "underlay"
	must(t, l.uh.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}))
	br, err := l.uh.LinkByName("underlay")
	must(t, err)
	must(t, l.uh.LinkSetUp(br))
	return l
}

// addHost makes host name (n-th, from 1) with underlay address
// 192.168.77.n and the given subnet, and programs it.
func (l *lab) addHost(name string, n int, subnet string) *labHost {
	t := l.t
	h := &labHost{ns: newNS(t), agentIP: net.IPv4(192, 168, 77, byte(n)).To4(), subnet: cidr(t, subnet), id: "h-" + name}
	h.h = handle(t, h.ns)
	attrs := netlink.NewLinkAttrs()
	attrs.Name = "ul-" + name
	must(t, l.uh.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(h.ns))}))
	end, err := l.uh.LinkByName("ul-" + name)
	must(t, err)
	br, _ := l.uh.LinkByName("underlay")
	must(t, l.uh.LinkSetMaster(end, br))
	must(t, l.uh.LinkSetUp(end))
	eth, err := h.h.LinkByName("eth0")
	must(t, err)
	must(t, h.h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: h.agentIP, Mask: net.CIDRMask(24, 32)}}))
	must(t, h.h.LinkSetUp(eth))
	lo, _ := h.h.LinkByName("lo")
	must(t, h.h.LinkSetUp(lo))
	l.hosts[name] = h
	return h
}

func (l *lab) config(h *labHost) Config {
	return Config{Network: cidr(l.t, "10.42.0.0/16"), Local: Host{ID: h.id, Subnet: h.subnet, AgentIP: h.agentIP}, VNI: 7, Port: 4789, MTU: 1450}
}

// remotes is every host of the lab as the engine would list it.
func (l *lab) remotes() []Host {
	var out []Host
	for _, h := range l.hosts {
		out = append(out, Host{ID: h.id, Subnet: h.subnet, AgentIP: h.agentIP, VTEPMAC: VTEPMAC(h.id)})
	}
	return out
}

func (l *lab) program(h *labHost) (ensure, sync, masq int) {
	t := l.t
	if h.prog == nil {
		p, err := New(l.config(h), h.ns)
		must(t, err)
		t.Cleanup(p.Close)
		h.prog = p
	}
	ensure, err := h.prog.Ensure()
	must(t, err)
	masq, err = h.prog.EnsureMasquerade()
	must(t, err)
	fwd, err := h.prog.EnsureForward()
	must(t, err)
	masq += fwd
	sync, _, err = h.prog.Sync(l.remotes())
	must(t, err)
	return ensure, sync, masq
}

// addContainer puts a container namespace on h's bridge at ip.
func (l *lab) addContainer(h *labHost, name, ip string) netns.NsHandle {
	t := l.t
	c := newNS(t)
	ch := handle(t, c)
	attrs := netlink.NewLinkAttrs()
	attrs.Name, attrs.MTU = "v-"+name, 1450
	must(t, h.h.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(c))}))
	end, err := h.h.LinkByName("v-" + name)
	must(t, err)
	br, err := h.h.LinkByName(BridgeName)
	must(t, err)
	must(t, h.h.LinkSetMaster(end, br))
	must(t, h.h.LinkSetUp(end))
	eth, err := ch.LinkByName("eth0")
	must(t, err)
	must(t, ch.LinkSetMTU(eth, 1450))
	must(t, ch.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(ip).To4(), Mask: h.subnet.Mask}}))
	must(t, ch.LinkSetUp(eth))
	lo, _ := ch.LinkByName("lo")
	must(t, ch.LinkSetUp(lo))
	must(t, ch.RouteAdd(&netlink.Route{Gw: Gateway(h.subnet)}))
	return c
}

// listen starts a line echo server in ns at addr, answering "<remote addr>\n"
// to each connection's first line.
func listen(t testing.TB, ns netns.NsHandle, addr string) {
	t.Helper()
	var ln net.Listener
	must(t, InNS(ns, func() (err error) { ln, err = net.Listen("tcp4", addr); return }))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				rd := bufio.NewReader(c)
				for {
					if _, err := rd.ReadString('\n'); err != nil {
						return
					}
					fmt.Fprintf(c, "%s\n", c.RemoteAddr())
				}
			}()
		}
	}()
}

// dial connects from ns to addr and returns the connection.
func dial(ns netns.NsHandle, addr string) (net.Conn, error) {
	var c net.Conn
	err := InNS(ns, func() (err error) { c, err = net.DialTimeout("tcp4", addr, 3*time.Second); return })
	return c, err
}

// ask sends a line on c and returns the server's answer: the address it
// saw the connection come from.
func ask(c net.Conn) (string, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := io.WriteString(c, "hi\n"); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

func TestIntegrationOverlayAcrossHosts(t *testing.T) {
	needRoot(t)
	l := newLab(t)
	h1 := l.addHost("a", 1, "10.42.1.0/24")
	h2 := l.addHost("b", 2, "10.42.2.0/24")
	h3 := l.addHost("c", 3, "10.42.3.0/24")
	for _, h := range []*labHost{h1, h2, h3} {
		l.program(h)
	}
	c1 := l.addContainer(h1, "c1", "10.42.1.2")
	c2 := l.addContainer(h2, "c2", "10.42.2.2")
	listen(t, c2, "10.42.2.2:8080")
	listen(t, h1.ns, ServiceIP+":80")
	listen(t, h2.ns, "192.168.77.2:9090")

	// Container to container across VXLAN, source kept.
	conn, err := dial(c1, "10.42.2.2:8080")
	if err != nil {
		t.Fatalf("c1 on host a -> c2 on host b: %v", err)
	}
	defer conn.Close()
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, "10.42.1.2:") {
		t.Fatalf("c2 saw the connection from %q (%v), want 10.42.1.2: no masquerade inside the overlay", from, err)
	}
	// It is the overlay that carries it: without host a's route to host
	// b's subnet there is no connection, and programming puts it back.
	r2 := cidr(t, "10.42.2.0/24")
	must(t, h1.h.RouteDel(&netlink.Route{Dst: &net.IPNet{IP: r2.IP.Mask(r2.Mask), Mask: r2.Mask}, Protocol: routeProtocol}))
	if c, err := dial(c1, "10.42.2.2:8080"); err == nil {
		c.Close()
		t.Fatal("c1 reached c2 with host a's overlay route removed")
	}
	if _, n, _ := l.program(h1); n != 1 {
		t.Fatalf("re-programming host a with its route to b gone: %d changes, want 1", n)
	}
	if c, err := dial(c1, "10.42.2.2:8080"); err != nil {
		t.Fatalf("c1 -> c2 once the route is back: %v", err)
	} else {
		c.Close()
	}
	// The service address on the container's own host.
	if c, err := dial(c1, ServiceIP+":80"); err != nil {
		t.Fatalf("c1 -> %s on its host: %v", ServiceIP, err)
	} else {
		c.Close()
	}
	// Leaving the overlay: masqueraded to the host's underlay address.
	eg, err := dial(c1, "192.168.77.2:9090")
	if err != nil {
		t.Fatalf("c1 -> an underlay address: %v", err)
	}
	if from, err := ask(eg); err != nil || !strings.HasPrefix(from, "192.168.77.1:") {
		t.Fatalf("an underlay server saw c1 as %q (%v), want host a's 192.168.77.1", from, err)
	}
	eg.Close()

	// Programming again over a correct state changes nothing, and the
	// open connection lives on (a restarted drover net).
	for _, h := range []*labHost{h1, h2, h3} {
		h.prog.Close()
		h.prog = nil
		if e, s, m := l.program(h); e+s+m != 0 {
			t.Fatalf("re-programming host %s over a correct state made %d+%d+%d changes, want none", h.id, e, s, m)
		}
	}
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, "10.42.1.2:") {
		t.Fatalf("the connection after re-programming: %q %v", from, err)
	}

	// Host c goes: every other host drops its route, neighbour and FDB
	// entry, and nothing else.
	delete(l.hosts, "c")
	for _, h := range []*labHost{h1, h2} {
		_, n, _ := l.program(h)
		if n != 3 {
			t.Fatalf("host %s after host c left: %d changes, want 3 (route, neighbour, FDB)", h.id, n)
		}
		if routes, _ := h.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL); len(routes) != 1 {
			t.Fatalf("host %s holds %d overlay routes, want 1", h.id, len(routes))
		}
		vx, _ := h.h.LinkByName(VXLANName)
		if fdb, _ := h.h.NeighList(vx.Attrs().Index, 7 /* AF_BRIDGE */); countWithIP(fdb) != 1 {
			t.Fatalf("host %s holds %d FDB entries, want 1", h.id, countWithIP(fdb))
		}
	}
	if from, err := ask(conn); err != nil || !strings.HasPrefix(from, "10.42.1.2:") {
		t.Fatalf("the a-b connection after host c left: %q %v", from, err)
	}
}

func countWithIP(ns []netlink.Neigh) int {
	n := 0
	for _, e := range ns {
		if e.IP != nil {
			n++
		}
	}
	return n
}

func TestEffectiveMTU(t *testing.T) {
	for _, c := range []struct{ network, underlay, want int }{
		{1450, 1500, 1450}, // the default on a 1500 underlay
		{1450, 1400, 1350}, // an underlay that cannot carry the network's: the most it can
		{0, 9000, 8950},    // none named: the most the underlay carries
		{1300, 1500, 1300}, // a smaller one asked for
	} {
		if got := EffectiveMTU(c.network, c.underlay); got != c.want {
			t.Errorf("EffectiveMTU(%d, %d) = %d, want %d", c.network, c.underlay, got, c.want)
		}
	}
}
