package overlay

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ip"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
)

// The CNI plugin: `drover` in /opt/cni/bin (the drover binary, which runs
// as the plugin when CNI_COMMAND is set). CNI 1.1.0: ADD puts a veth into
// the pod's namespace on drover0 with an address of the host's subnet from
// the same allocator as the agent's Docker containers, the gateway as
// default route and 169.254.169.250 as nameserver; DEL undoes it and may be
// called any number of times; CHECK verifies it; STATUS says whether the
// host's overlay is up; GC frees addresses of attachments the runtime no
// longer has.

// CNIConf is the plugin's part of the network configuration drover net
// writes to /etc/cni/net.d.
type CNIConf struct {
	types.PluginConf
	Bridge  string `json:"bridge,omitempty"`
	Subnet  string `json:"subnet"`
	MTU     int    `json:"mtu,omitempty"`
	DataDir string `json:"dataDir,omitempty"`
	// Search is the DNS search list given to pods.
	Search []string `json:"search,omitempty"`
}

func loadConf(b []byte) (*CNIConf, *net.IPNet, error) {
	c := &CNIConf{}
	if err := json.Unmarshal(b, c); err != nil {
		return nil, nil, fmt.Errorf("drover cni: the network configuration is not JSON: %w", err)
	}
	if c.Bridge == "" {
		c.Bridge = BridgeName
	}
	if c.DataDir == "" {
		c.DataDir = DefaultIPAMDir
	}
	if c.MTU == 0 {
		c.MTU = 1450
	}
	_, sn, err := net.ParseCIDR(c.Subnet)
	if err != nil || sn.IP.To4() == nil {
		return nil, nil, fmt.Errorf("drover cni: subnet %q is not an IPv4 CIDR (drover net writes it from the host's status.subnet)", c.Subnet)
	}
	return c, sn, nil
}

// hostVethName is stable for a (container, interface): DEL finds it again.
func hostVethName(id, ifname string) string {
	sum := sha256.Sum256([]byte(id + "/" + ifname))
	return "drv" + hex.EncodeToString(sum[:])[:12]
}

// CNIMain runs the plugin with the CNI environment and stdin.
func CNIMain() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cniAdd, Del: cniDel, Check: cniCheck, GC: cniGC, Status: cniStatus},
		version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "drover: pods on drover's overlay")
}

func cniAdd(args *skel.CmdArgs) error {
	conf, subnet, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ipam, err := NewIPAM(conf.DataDir, subnet)
	if err != nil {
		return err
	}
	addr, err := ipam.Allocate(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		ipam.Release(args.ContainerID, args.IfName)
		return err
	}
	br, err := netlink.LinkByName(conf.Bridge)
	if err != nil {
		return fail(fmt.Errorf("drover cni: bridge %s: %w (is drover net running on this host?)", conf.Bridge, err))
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return fail(fmt.Errorf("drover cni: namespace %s: %w", args.Netns, err))
	}
	defer netns.Close()
	gw := Gateway(subnet)
	hostName := hostVethName(args.ContainerID, args.IfName)
	var contIface current.Interface
	hostIface := current.Interface{Name: hostName}
	err = netns.Do(func(hostNS ns.NetNS) error {
		// An earlier ADD cut short may have left the interface.
		if l, err := netlink.LinkByName(args.IfName); err == nil {
			netlink.LinkDel(l)
		}
		h, c, err := ip.SetupVethWithName(args.IfName, hostName, conf.MTU, "", hostNS)
		if err != nil {
			return err
		}
		hostIface.Mac = h.HardwareAddr.String()
		contIface = current.Interface{Name: c.Name, Mac: c.HardwareAddr.String(), Sandbox: args.Netns}
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: &net.IPNet{IP: addr, Mask: subnet.Mask}}); err != nil {
			return fmt.Errorf("adding %s: %w", addr, err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			return err
		}
		return netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw})
	})
	if err != nil {
		return fail(fmt.Errorf("drover cni: setting up %s in %s: %w", args.IfName, args.Netns, err))
	}
	hv, err := netlink.LinkByName(hostName)
	if err != nil {
		return fail(err)
	}
	if err := netlink.LinkSetMaster(hv, br); err != nil {
		return fail(fmt.Errorf("drover cni: attaching %s to %s: %w", hostName, conf.Bridge, err))
	}
	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{&hostIface, &contIface},
		IPs:        []*current.IPConfig{{Interface: current.Int(1), Address: net.IPNet{IP: addr, Mask: subnet.Mask}, Gateway: gw}},
		Routes:     []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:        types.DNS{Nameservers: []string{ServiceIP}, Search: conf.Search},
	}
	return types.PrintResult(result, conf.CNIVersion)
}

func cniDel(args *skel.CmdArgs) error {
	conf, subnet, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	// The host end goes with the container end; either may be gone.
	if l, err := netlink.LinkByName(hostVethName(args.ContainerID, args.IfName)); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("drover cni: removing %s: %w", l.Attrs().Name, err)
		}
	}
	ipam, err := NewIPAM(conf.DataDir, subnet)
	if err != nil {
		return err
	}
	return ipam.Release(args.ContainerID, args.IfName)
}

func cniCheck(args *skel.CmdArgs) error {
	conf, subnet, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	ipam, err := NewIPAM(conf.DataDir, subnet)
	if err != nil {
		return err
	}
	want, ok, err := ipam.Lookup(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("drover cni: %s/%s holds no address", args.ContainerID, args.IfName)
	}
	if _, err := netlink.LinkByName(hostVethName(args.ContainerID, args.IfName)); err != nil {
		return fmt.Errorf("drover cni: the host end of %s/%s is missing: %w", args.ContainerID, args.IfName, err)
	}
	return ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return fmt.Errorf("drover cni: %s is missing in %s: %w", args.IfName, args.Netns, err)
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.Equal(want) {
				return nil
			}
		}
		return fmt.Errorf("drover cni: %s in %s does not hold %s", args.IfName, args.Netns, want)
	})
}

func cniGC(args *skel.CmdArgs) error {
	conf, subnet, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[owner(a.ContainerID, a.IfName)] = true
	}
	ipam, err := NewIPAM(conf.DataDir, subnet)
	if err != nil {
		return err
	}
	var errs []error
	_, err = ipam.Keep(func(id, ifname string) bool {
		if valid[owner(id, ifname)] || !isPodOwner(id) {
			return true
		}
		if l, err := netlink.LinkByName(hostVethName(id, ifname)); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, err)
			}
		}
		return false
	})
	return errors.Join(append(errs, err)...)
}

// isPodOwner tells the runtime's attachments from the agent's Docker
// containers (owner "docker:<id>"), which GC must leave alone.
func isPodOwner(id string) bool { return len(id) < 7 || id[:7] != "docker:" }

// errPluginNotAvailable is CNI 1.1's STATUS code 50: ADD cannot be served.
const errPluginNotAvailable = 50

func cniStatus(args *skel.CmdArgs) error {
	conf, _, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	br, err := netlink.LinkByName(conf.Bridge)
	if err != nil {
		return types.NewError(errPluginNotAvailable, "bridge "+conf.Bridge+" is missing", "drover net is not running on this host, or has not programmed it yet")
	}
	if br.Attrs().Flags&net.FlagUp == 0 {
		return types.NewError(errPluginNotAvailable, "bridge "+conf.Bridge+" is down", "")
	}
	return nil
}
