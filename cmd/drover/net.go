package main

import (
	"context"
	"fmt"
	flag "github.com/spf13/pflag"
	"io"
	"os"

	"github.com/vishvananda/netns"

	"github.com/drover/drover/internal/lifecycle"
	overlay "github.com/drover/drover/net"
)

func runNet(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover net", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o overlay.Options
	ef := engineFlags(fs)
	fs.StringVar(&o.Host, "host", os.Getenv("DROVER_HOST_NAME"), "this host's name in the engine (default: env DROVER_HOST_NAME, set by the agent, or the machine's)")
	fs.StringVar(&o.Iface, "iface", "", "underlay device for VXLAN (default: the one holding the host's agent IP)")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", "/etc/cni/net.d", "where to write 10-drover.conflist for the kubelet (empty: nowhere)")
	fs.StringVar(&o.IPAMDir, "ipam-dir", overlay.DefaultIPAMDir, "where pods' and containers' address allocations are kept (named in the conflist)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:10271", "address for /healthz, /readyz and /metrics (empty: none)")
	nsPath := fs.String("netns", "", "program the network namespace at this path instead of our own (the engine is still reached from ours)")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	eng, err := ef.client()
	if err != nil {
		return usageError{err.Error()}
	}
	o.Engine, o.Logger = eng, log
	if *nsPath != "" {
		ns, err := netns.GetFromPath(*nsPath)
		if err != nil {
			return usageError{fmt.Sprintf("--netns %s: %v", *nsPath, err)}
		}
		defer ns.Close()
		o.NS = ns
	}
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return overlay.Run(ctx, o)
}
