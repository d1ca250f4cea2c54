// Package overlay (directory net/) is drover's overlay network: one bridge
// per host holding the host's subnet of the managed network, a VXLAN device
// joining the hosts (flannel's VXLAN shape: per remote host one route, one
// neighbour and one FDB entry, so state grows with hosts, not containers),
// masquerade for traffic leaving the overlay, and 169.254.169.250 on every
// host for drover dns and drover metadata. Everything is programmed through
// netlink (github.com/vishvananda/netlink) and nftables
// (github.com/google/nftables), in the namespace a Programmer is given.
//
// The package is named overlay, not net, so that it and the standard
// library's net can be used side by side.
package overlay

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// Defaults.
const (
	BridgeName = "drover0"
	VXLANName  = "drover.vxlan"
	// ServiceIP is where drover dns and drover metadata listen on every host.
	ServiceIP = "169.254.169.250"
	// routeProtocol marks the routes the programmer owns (rtnetlink's
	// protocol field; values above 4 are free for routing daemons).
	routeProtocol = 0x44
	vxlanOverhead = 50
)

// Host is one host of the overlay, as the engine knows it.
type Host struct {
	ID     string
	Subnet *net.IPNet
	// AgentIP is its underlay address: where VXLAN packets to it go.
	AgentIP net.IP
	// VTEPMAC is its VXLAN device's MAC (reported by its drover net).
	VTEPMAC net.HardwareAddr
}

// Config is what a Programmer builds on one host.
type Config struct {
	Network *net.IPNet // the whole overlay, e.g. 10.42.0.0/16
	Local   Host       // this host (Subnet and AgentIP needed; VTEPMAC is ours)
	VNI     int
	Port    int
	// MTU of the overlay (containers, bridge); the VXLAN device gets it
	// too. Zero: the underlay device's MTU minus 50.
	MTU int
	// Underlay is the device VXLAN packets leave by ("": the one holding
	// Local.AgentIP).
	Underlay string
}

// Programmer keeps a host's overlay in the wanted shape. It is not safe for
// concurrent use.
type Programmer struct {
	cfg Config
	h   *netlink.Handle
	ns  netns.NsHandle // -1: the caller's namespace
	mtu int
	vx  netlink.Link
	br  netlink.Link
}

// New returns a programmer for the namespace ns (netns.None() for the
// caller's).
func New(cfg Config, ns netns.NsHandle) (*Programmer, error) {
	if cfg.Network == nil || cfg.Local.Subnet == nil || cfg.Local.AgentIP == nil {
		return nil, errors.New("overlay: the network, the host's subnet and its agent IP are needed")
	}
	if cfg.VNI == 0 {
		cfg.VNI = 1
	}
	if cfg.Port == 0 {
		cfg.Port = 4789
	}
	var h *netlink.Handle
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns)
	} else {
		h, err = netlink.NewHandle()
	}
	if err != nil {
		return nil, fmt.Errorf("overlay: netlink: %w", err)
	}
	return &Programmer{cfg: cfg, h: h, ns: ns}, nil
}

// Close releases the netlink handle; what was programmed stays.
func (p *Programmer) Close() { p.h.Close() }

// Gateway is the first address of a subnet: the bridge's, the containers'
// default gateway.
func Gateway(subnet *net.IPNet) net.IP {
	ip := make(net.IP, 4)
	binary.BigEndian.PutUint32(ip, binary.BigEndian.Uint32(subnet.IP.To4())+1)
	return ip
}

// vtepIP is a host's address on the VXLAN device: its subnet's network
// address, as flannel does, so no address of the subnet is spent.
func vtepIP(subnet *net.IPNet) net.IP { return subnet.IP.To4() }

// VTEPMAC is the MAC to report for this host, stable across restarts: it is
// derived from the host id, so a re-created device keeps it and no other
// host's FDB needs to change.
func VTEPMAC(hostID string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("drover-vtep/" + hostID))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01 // locally administered, unicast
	return mac
}

// Ensure creates or repairs the bridge, its addresses and the VXLAN device,
// changing nothing that is already right. It returns how many changes it
// made.
func (p *Programmer) Ensure() (int, error) {
	changes := 0
	under, err := p.underlay()
	if err != nil {
		return 0, err
	}
	mtu := EffectiveMTU(p.cfg.MTU, under.Attrs().MTU)
	p.mtu = mtu
	// The bridge.
	br, err := p.h.LinkByName(BridgeName)
	if _, ok := err.(netlink.LinkNotFoundError); ok {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = BridgeName, mtu
		if err := p.h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
			return changes, fmt.Errorf("overlay: creating bridge %s: %w", BridgeName, err)
		}
		changes++
		if br, err = p.h.LinkByName(BridgeName); err != nil {
			return changes, err
		}
	} else if err != nil {
		return changes, fmt.Errorf("overlay: reading %s: %w", BridgeName, err)
	}
	if br.Type() != "bridge" {
		return changes, fmt.Errorf("overlay: %s exists and is a %s, not a bridge: remove it", BridgeName, br.Type())
	}
	if br.Attrs().MTU != mtu {
		if err := p.h.LinkSetMTU(br, mtu); err != nil {
			return changes, fmt.Errorf("overlay: MTU %d on %s: %w", mtu, BridgeName, err)
		}
		changes++
	}
	gw := &net.IPNet{IP: Gateway(p.cfg.Local.Subnet), Mask: p.cfg.Local.Subnet.Mask}
	svc := &net.IPNet{IP: net.ParseIP(ServiceIP).To4(), Mask: net.CIDRMask(32, 32)}
	n, err := p.ensureAddrs(br, []*net.IPNet{gw, svc})
	changes += n
	if err != nil {
		return changes, err
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		if err := p.h.LinkSetUp(br); err != nil {
			return changes, fmt.Errorf("overlay: bringing %s up: %w", BridgeName, err)
		}
		changes++
	}
	p.br = br

	// The VXLAN device.
	mac := VTEPMAC(p.cfg.Local.ID)
	vx, err := p.h.LinkByName(VXLANName)
	if err == nil {
		v, ok := vx.(*netlink.Vxlan)
		if !ok || v.VxlanId != p.cfg.VNI || v.Port != p.cfg.Port || !v.SrcAddr.Equal(p.cfg.Local.AgentIP) || v.Learning ||
			v.VtepDevIndex != under.Attrs().Index || !bytes.Equal(v.HardwareAddr, mac) {
			// Not ours, or of an older shape: made again.
			if err := p.h.LinkDel(vx); err != nil {
				return changes, fmt.Errorf("overlay: replacing %s: %w", VXLANName, err)
			}
			changes++
			vx = nil
		}
	} else if _, ok := err.(netlink.LinkNotFoundError); ok {
		vx = nil
	} else {
		return changes, fmt.Errorf("overlay: reading %s: %w", VXLANName, err)
	}
	if vx == nil {
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU, attrs.HardwareAddr = VXLANName, mtu, mac
		v := &netlink.Vxlan{LinkAttrs: attrs, VxlanId: p.cfg.VNI, Port: p.cfg.Port, SrcAddr: p.cfg.Local.AgentIP,
			VtepDevIndex: under.Attrs().Index, Learning: false}
		if err := p.h.LinkAdd(v); err != nil {
			return changes, fmt.Errorf("overlay: creating %s: %w", VXLANName, err)
		}
		changes++
		if vx, err = p.h.LinkByName(VXLANName); err != nil {
			return changes, err
		}
	}
	if vx.Attrs().MTU != mtu {
		if err := p.h.LinkSetMTU(vx, mtu); err != nil {
			return changes, fmt.Errorf("overlay: MTU %d on %s: %w", mtu, VXLANName, err)
		}
		changes++
	}
	n, err = p.ensureAddrs(vx, []*net.IPNet{{IP: vtepIP(p.cfg.Local.Subnet), Mask: net.CIDRMask(32, 32)}})
	changes += n
	if err != nil {
		return changes, err
	}
	if vx.Attrs().Flags&net.FlagUp == 0 {
		if err := p.h.LinkSetUp(vx); err != nil {
			return changes, fmt.Errorf("overlay: bringing %s up: %w", VXLANName, err)
		}
		changes++
	}
	p.vx = vx
	// Forwarding, without which nothing leaves a container.
	n, err = p.sysctl("net/ipv4/ip_forward", "1")
	return changes + n, err
}

// sysctl sets /proc/sys/<key> in the programmer's namespace.
func (p *Programmer) sysctl(key, value string) (int, error) {
	changed := 0
	err := p.inNS(func() error {
		path := "/proc/sys/" + key
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(b)) == value {
			return nil
		}
		changed = 1
		return os.WriteFile(path, []byte(value), 0o644)
	})
	if err != nil {
		return 0, fmt.Errorf("overlay: sysctl %s=%s: %w", key, value, err)
	}
	return changed, nil
}

// inNS runs f on a thread in the programmer's namespace.
func (p *Programmer) inNS(f func() error) error {
	if !p.ns.IsOpen() {
		return f()
	}
	return InNS(p.ns, f)
}

// InNS runs f on an OS thread switched into ns. The thread is switched
// back afterwards, or, if that fails, ends with the goroutine that ran f, so
// no goroutine ever runs in a namespace it did not ask for.
func InNS(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// EffectiveMTU is the overlay's MTU: the network's, unless the underlay
// cannot carry it with VXLAN's 50 bytes (then the most it can), or the most
// it can when the network names none.
func EffectiveMTU(network, underlay int) int {
	most := underlay - vxlanOverhead
	if network == 0 || network > most {
		return most
	}
	return network
}

// UnderlayMTU is the MTU of the device holding ip, in our namespace.
func UnderlayMTU(ip net.IP) (int, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	for _, a := range addrs {
		if a.IP.Equal(ip) {
			l, err := netlink.LinkByIndex(a.LinkIndex)
			if err != nil {
				return 0, err
			}
			return l.Attrs().MTU, nil
		}
	}
	return 0, fmt.Errorf("overlay: no device holds %s", ip)
}

// MTU is the overlay MTU the last Ensure settled on (0 before).
func (p *Programmer) MTU() int { return p.mtu }

func (p *Programmer) underlay() (netlink.Link, error) {
	if p.cfg.Underlay != "" {
		l, err := p.h.LinkByName(p.cfg.Underlay)
		if err != nil {
			return nil, fmt.Errorf("overlay: underlay device %s: %w", p.cfg.Underlay, err)
		}
		return l, nil
	}
	addrs, err := p.h.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.Equal(p.cfg.Local.AgentIP) {
			return p.h.LinkByIndex(a.LinkIndex)
		}
	}
	return nil, fmt.Errorf("overlay: no device holds the agent IP %s: pass the underlay device (--iface)", p.cfg.Local.AgentIP)
}

// ensureAddrs makes want the addresses of l, removing other IPv4 addresses.
func (p *Programmer) ensureAddrs(l netlink.Link, want []*net.IPNet) (int, error) {
	have, err := p.h.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return 0, err
	}
	changes := 0
	for _, w := range want {
		found := false
		for _, a := range have {
			if a.IPNet.String() == w.String() {
				found = true
			}
		}
		if !found {
			if err := p.h.AddrAdd(l, &netlink.Addr{IPNet: w}); err != nil && !errors.Is(err, syscall.EEXIST) {
				return changes, fmt.Errorf("overlay: adding %s to %s: %w", w, l.Attrs().Name, err)
			}
			changes++
		}
	}
	for _, a := range have {
		keep := false
		for _, w := range want {
			if a.IPNet.String() == w.String() {
				keep = true
			}
		}
		if !keep {
			if err := p.h.AddrDel(l, &a); err != nil {
				return changes, fmt.Errorf("overlay: removing %s from %s: %w", a.IPNet, l.Attrs().Name, err)
			}
			changes++
		}
	}
	return changes, nil
}

// State counts what the programmer holds for remote hosts.
type State struct {
	Routes, Neighbours, FDB int
}

// Sync makes the routes, neighbours and FDB entries of the VXLAN device
// those of remotes (the other hosts; ones without subnet, agent IP or VTEP
// MAC are skipped), adding what is missing and removing what is not wanted,
// and nothing else. Ensure must have run. It returns the number of changes.
func (p *Programmer) Sync(remotes []Host) (int, State, error) {
	if p.vx == nil {
		return 0, State{}, errors.New("overlay: Sync before Ensure")
	}
	idx := p.vx.Attrs().Index
	type want struct {
		subnet  *net.IPNet
		vtep    net.IP
		mac     net.HardwareAddr
		agentIP net.IP
	}
	wanted := map[string]want{} // by subnet
	for _, r := range remotes {
		if r.ID == p.cfg.Local.ID || r.Subnet == nil || r.AgentIP == nil || len(r.VTEPMAC) != 6 {
			continue
		}
		wanted[r.Subnet.String()] = want{r.Subnet, vtepIP(r.Subnet), r.VTEPMAC, r.AgentIP}
	}
	changes := 0

	// FDB: MAC -> underlay address, on the VXLAN device.
	fdb, err := p.h.NeighList(idx, syscall.AF_BRIDGE)
	if err != nil {
		return changes, State{}, err
	}
	haveFDB := map[string]bool{}
	for _, n := range fdb {
		if n.IP != nil && n.HardwareAddr != nil {
			haveFDB[n.HardwareAddr.String()+" "+n.IP.String()] = true
		}
	}
	wantFDB := map[string]bool{}
	for _, w := range wanted {
		k := w.mac.String() + " " + w.agentIP.String()
		wantFDB[k] = true
		if !haveFDB[k] {
			if err := p.h.NeighAppend(&netlink.Neigh{LinkIndex: idx, Family: syscall.AF_BRIDGE, State: netlink.NUD_PERMANENT,
				Flags: netlink.NTF_SELF, IP: w.agentIP, HardwareAddr: w.mac}); err != nil && !errors.Is(err, syscall.EEXIST) {
				return changes, State{}, fmt.Errorf("overlay: FDB entry %s: %w", k, err)
			}
			changes++
		}
	}
	for _, n := range fdb {
		if n.IP == nil || n.HardwareAddr == nil || wantFDB[n.HardwareAddr.String()+" "+n.IP.String()] {
			continue
		}
		if err := p.h.NeighDel(&n); err != nil {
			return changes, State{}, fmt.Errorf("overlay: removing FDB entry %s %s: %w", n.HardwareAddr, n.IP, err)
		}
		changes++
	}

	// Neighbours: remote VTEP address -> its MAC.
	neigh, err := p.h.NeighList(idx, netlink.FAMILY_V4)
	if err != nil {
		return changes, State{}, err
	}
	haveNeigh := map[string]string{}
	for _, n := range neigh {
		haveNeigh[n.IP.String()] = n.HardwareAddr.String()
	}
	wantNeigh := map[string]bool{}
	for _, w := range wanted {
		wantNeigh[w.vtep.String()] = true
		if haveNeigh[w.vtep.String()] != w.mac.String() {
			if err := p.h.NeighSet(&netlink.Neigh{LinkIndex: idx, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
				IP: w.vtep, HardwareAddr: w.mac}); err != nil {
				return changes, State{}, fmt.Errorf("overlay: neighbour %s: %w", w.vtep, err)
			}
			changes++
		}
	}
	for _, n := range neigh {
		if wantNeigh[n.IP.String()] {
			continue
		}
		if err := p.h.NeighDel(&n); err != nil {
			return changes, State{}, fmt.Errorf("overlay: removing neighbour %s: %w", n.IP, err)
		}
		changes++
	}

	// Routes: remote subnet via its VTEP address, on the VXLAN device,
	// marked as ours.
	routes, err := p.h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
	if err != nil {
		return changes, State{}, err
	}
	haveRoute := map[string]netlink.Route{}
	for _, r := range routes {
		if r.Dst != nil {
			haveRoute[r.Dst.String()] = r
		}
	}
	for k, w := range wanted {
		if r, ok := haveRoute[k]; ok && r.LinkIndex == idx && r.Gw.Equal(w.vtep) {
			continue
		}
		if err := p.h.RouteReplace(&netlink.Route{LinkIndex: idx, Dst: w.subnet, Gw: w.vtep, Flags: int(netlink.FLAG_ONLINK),
			Protocol: routeProtocol}); err != nil {
			return changes, State{}, fmt.Errorf("overlay: route to %s: %w", k, err)
		}
		changes++
	}
	for k, r := range haveRoute {
		if _, ok := wanted[k]; ok {
			continue
		}
		if err := p.h.RouteDel(&r); err != nil {
			return changes, State{}, fmt.Errorf("overlay: removing route to %s: %w", k, err)
		}
		changes++
	}
	return changes, State{Routes: len(wanted), Neighbours: len(wanted), FDB: len(wanted)}, nil
}

// Remove deletes what the programmer made (the VXLAN device with its
// routes, neighbours and FDB entries, and the bridge), for a host leaving
// the overlay. Masquerade is removed by RemoveMasquerade.
func (p *Programmer) Remove() error {
	for _, name := range []string{VXLANName, BridgeName} {
		l, err := p.h.LinkByName(name)
		if _, ok := err.(netlink.LinkNotFoundError); ok {
			continue
		} else if err != nil {
			return err
		}
		if err := p.h.LinkDel(l); err != nil {
			return fmt.Errorf("overlay: removing %s: %w", name, err)
		}
	}
	return nil
}
