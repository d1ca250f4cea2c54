package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/coreos/go-iptables/iptables"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	dockerclient "github.com/docker/docker/client"
	"github.com/vishvananda/netns"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/internal/privileged"
	overlay "github.com/drover/drover/net"
	"github.com/drover/drover/node"
)

// runDown: drover down undoes drover up on this host: its containers, the
// rules kube-proxy left, the overlay's devices and rules, the kubelet's
// cgroups and (unless --keep-data) /var/lib/drover. Other hosts are not
// touched; delete this host from the engine first if it is to leave.
func runDown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := newCLIFlags("drover down", stderr)
	keep := fs.Bool("keep-data", false, "keep "+upDir+" (the engine's data, keys, certificates)")
	host, _ := os.Hostname()
	name := fs.String("name", host, "this host's name (as drover up was given)")
	if err := parseCLI(fs, args); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	d, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer d.Close()
	step := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }
	// The agent first, so nothing is started again, then what it ran, then
	// the engine.
	var nodeImage string
	for _, sel := range []string{"name=^/" + agentContainer + "$", "label=" + agent.LabelHostID, "name=^/" + serverContainer + "$"} {
		k, v, _ := strings.Cut(sel, "=")
		list, err := d.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg(k, v))})
		if err != nil {
			return err
		}
		for _, c := range list {
			if strings.HasPrefix(c.Image, "drover/node:") {
				nodeImage = c.Image
			}
			if err := d.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
				return fmt.Errorf("removing container %s: %w", strings.Join(c.Names, ","), err)
			}
			step("removed container %s", strings.TrimPrefix(strings.Join(c.Names, ","), "/"))
		}
	}
	if nodeImage != "" {
		// kube-proxy's own cleanup of its iptables chains.
		hc := &container.HostConfig{NetworkMode: "host", Binds: []string{"/lib/modules:/lib/modules:ro"}}
		privileged.Apply(hc)
		resp, err := d.ContainerCreate(ctx, &container.Config{Image: nodeImage, Cmd: []string{"kube", "kube-proxy", "--cleanup"}}, hc, nil, nil, "")
		if err == nil {
			if err = d.ContainerStart(ctx, resp.ID, container.StartOptions{}); err == nil {
				wctx, cancel := context.WithTimeout(ctx, time.Minute)
				okc, errc := d.ContainerWait(wctx, resp.ID, container.WaitConditionNotRunning)
				select {
				case <-okc:
				case err = <-errc:
				}
				cancel()
			}
			d.ContainerRemove(ctx, resp.ID, container.RemoveOptions{Force: true})
		}
		if err != nil {
			step("kube-proxy's rules not cleaned up: %v", err)
		} else {
			step("removed kube-proxy's iptables rules")
		}
	}
	if err := d.NetworkRemove(ctx, agent.OverlayNetwork); err == nil {
		step("removed Docker network %s", agent.OverlayNetwork)
	}
	// The overlay's devices and rules (a programmer needs a shape; the
	// network's default is enough to find what it made).
	_, network, _ := net.ParseCIDR("10.42.0.0/16")
	_, subnet, _ := net.ParseCIDR("10.42.0.0/24")
	if p, err := overlay.New(overlay.Config{Network: network, Local: overlay.Host{Subnet: subnet, AgentIP: net.IPv4(127, 0, 0, 1)}}, netns.None()); err == nil {
		for what, f := range map[string]func() error{"devices": p.Remove, "masquerade": p.RemoveMasquerade, "FORWARD rules": p.RemoveForward} {
			if err := f(); err != nil {
				step("overlay %s: %v", what, err)
			}
		}
		p.Close()
		step("removed the overlay's devices and rules")
	}
	if err := removeKubeletRules(); err != nil {
		step("the kubelet's iptables rules: %v", err)
	}
	node.RemoveCgroupRoot("/drover/" + *name)
	if !*keep {
		if err := os.RemoveAll(upDir); err != nil {
			return err
		}
		step("removed %s", upDir)
	}
	return nil
}

// removeKubeletRules deletes the chains the kubelet makes in the host's
// iptables (KUBE-FIREWALL and the canaries), which kube-proxy --cleanup
// leaves.
func removeKubeletRules() error {
	ipt, err := iptables.New()
	if err != nil {
		return err
	}
	for _, chain := range []string{"INPUT", "OUTPUT"} {
		ipt.DeleteIfExists("filter", chain, "-j", "KUBE-FIREWALL")
	}
	for _, tc := range [][2]string{{"filter", "KUBE-FIREWALL"}, {"filter", "KUBE-KUBELET-CANARY"}, {"nat", "KUBE-KUBELET-CANARY"}, {"mangle", "KUBE-KUBELET-CANARY"}, {"mangle", "KUBE-IPTABLES-HINT"}} {
		if ok, _ := ipt.ChainExists(tc[0], tc[1]); ok {
			if err := ipt.ClearAndDeleteChain(tc[0], tc[1]); err != nil {
				return err
			}
		}
	}
	return nil
}
