package agent

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/network"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	overlay "github.com/drover/drover/net"
)

// The overlay, seen from the agent: service containers join the Docker
// network "drover", a bridge network on drover0 with the host's subnet of
// the managed network (Rancher's "managed" network), at an address the
// agent takes from the host's allocator (shared with the CNI plugin, so
// containers and pods never overlap, and kept on disk, so a restarted agent
// never hands out an address still in use). They get 169.254.169.250 as
// nameserver (drover dns) and the stack's search list. network_mode host,
// none and container:<name> keep their meaning. drover net, on the same
// host, joins drover0 to the other hosts.

// OverlayNetwork is the Docker network the agent puts containers on.
const OverlayNetwork = "drover"

// setupOverlay makes the Docker network for the host's subnet and opens
// the allocator. It returns nil, nil when the host has no subnet.
func (a *Agent) setupOverlay(ctx context.Context) (*overlay.IPAM, error) {
	if a.host.Status.Subnet == "" {
		a.log.Warn("the host has no subnet of the managed network; containers stay on Docker's default bridge", "message", a.host.Status.Message)
		return nil, nil
	}
	_, subnet, err := net.ParseCIDR(a.host.Status.Subnet)
	if err != nil {
		return nil, fmt.Errorf("host subnet %q: %w", a.host.Status.Subnet, err)
	}
	gw := overlay.Gateway(subnet).String()
	mtu := strconv.Itoa(a.overlayMTU(ctx))
	insp, err := a.docker.NetworkInspect(ctx, OverlayNetwork, network.InspectOptions{})
	switch {
	case err == nil:
		ok := insp.Driver == "bridge" && len(insp.IPAM.Config) == 1 && insp.IPAM.Config[0].Subnet == subnet.String() &&
			insp.Options["com.docker.network.driver.mtu"] == mtu
		if ok {
			break
		}
		if len(insp.Containers) > 0 {
			return nil, fmt.Errorf("docker network %s is on %v, not this host's subnet %s, and has containers: remove them and the network", OverlayNetwork, insp.IPAM.Config, subnet)
		}
		if err := a.docker.NetworkRemove(ctx, OverlayNetwork); err != nil {
			return nil, fmt.Errorf("replacing docker network %s: %w", OverlayNetwork, err)
		}
		fallthrough
	case cerrdefs.IsNotFound(err):
		_, err := a.docker.NetworkCreate(ctx, OverlayNetwork, network.CreateOptions{
			Driver: "bridge",
			IPAM:   &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String(), Gateway: gw}}},
			Options: map[string]string{
				"com.docker.network.bridge.name": overlay.BridgeName,
				// drover net masquerades what leaves the overlay, and only that.
				"com.docker.network.bridge.enable_ip_masquerade": "false",
				"com.docker.network.driver.mtu":                  mtu,
			},
			Labels: map[string]string{LabelHostID: a.host.ID},
		})
		if err != nil {
			return nil, fmt.Errorf("creating docker network %s on %s (%s): %w", OverlayNetwork, overlay.BridgeName, subnet, err)
		}
		a.log.Info("docker network created", "network", OverlayNetwork, "bridge", overlay.BridgeName, "subnet", subnet.String())
	default:
		return nil, fmt.Errorf("inspecting docker network %s: %w", OverlayNetwork, err)
	}
	return overlay.NewIPAM(a.opts.IPAMDir, subnet)
}

// overlayMTU is the MTU drover net gives the bridge: the managed network's,
// or less when the underlay cannot carry it.
func (a *Agent) overlayMTU(ctx context.Context) int {
	spec := 0
	if nets, _, err := a.eng.Networks().List(ctx, client.ListOptions{Name: "managed"}); err == nil && len(nets) == 1 {
		spec = nets[0].Spec.MTU
	}
	under, err := overlay.UnderlayMTU(net.ParseIP(a.host.Status.AgentIP))
	if err != nil {
		if spec == 0 {
			spec = 1450
		}
		a.log.Warn("the underlay's MTU is unknown; using the network's", "mtu", spec, "err", err)
		return spec
	}
	return overlay.EffectiveMTU(spec, under)
}

// onOverlay says whether a container joins the overlay: the default mode,
// or one that names it.
func onOverlay(mode string) bool {
	switch mode {
	case "", "default", "bridge", "managed", OverlayNetwork:
		return true
	}
	return false
}

func ipamOwner(c *api.Container) string { return "docker:" + c.ID }

// overlayEndpoint gives c its address and DNS settings on the overlay.
func (a *Agent) overlayEndpoint(c *api.Container) (*network.NetworkingConfig, []string, []string, error) {
	ip, err := a.ipam.Allocate(ipamOwner(c), "eth0")
	if err != nil {
		return nil, nil, nil, err
	}
	stack := c.Labels["io.drover.stack.name"]
	if stack == "" {
		stack = c.Labels["io.rancher.stack.name"]
	}
	var search []string
	if stack != "" {
		search = append(search, stack+".drover.internal")
	}
	search = append(search, "drover.internal")
	if rancherStyle(c) {
		if stack != "" {
			search = append(search, stack+".rancher.internal")
		}
		search = append(search, "rancher.internal")
	}
	return &network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
		OverlayNetwork: {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip.String()}},
	}}, []string{overlay.ServiceIP}, search, nil
}

// rancherStyle says the container came from a file using io.rancher.* labels.
func rancherStyle(c *api.Container) bool {
	for k := range c.Labels {
		if strings.HasPrefix(k, "io.rancher.") {
			return true
		}
	}
	if c.Spec.LaunchConfig != nil {
		for k := range c.Spec.LaunchConfig.Labels {
			if strings.HasPrefix(k, "io.rancher.") {
				return true
			}
		}
	}
	return false
}

// releaseAddresses frees the addresses of containers the engine no longer
// places here (the pods' are the CNI plugin's to free).
func (a *Agent) releaseAddresses(desired map[string]*api.Container) {
	n, err := a.ipam.Keep(func(id, _ string) bool {
		eid, ok := strings.CutPrefix(id, "docker:")
		return !ok || desired[eid] != nil
	})
	if err != nil {
		a.log.Warn("releasing container addresses", "err", err)
	} else if n > 0 {
		a.log.Info("container addresses released", "count", n)
	}
}
