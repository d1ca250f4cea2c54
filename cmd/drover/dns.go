package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"strings"

	"github.com/drover/drover/dns"
	"github.com/drover/drover/internal/lifecycle"
)

func runDNS(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover dns", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o dns.Options
	var upstreams string
	var ttl uint
	ef := engineFlags(fs)
	fs.StringVar(&o.Listen, "listen", "169.254.169.250:53", "address to answer on (UDP and TCP)")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "Kubernetes cluster domain")
	fs.StringVar(&upstreams, "upstream", "", "upstream servers IP:PORT,... (default: this host's /etc/resolv.conf, never itself)")
	fs.UintVar(&ttl, "ttl", 5, "TTL of drover's own answers, in seconds")
	fs.StringVar(&o.MetricsListen, "metrics-listen", "127.0.0.1:9153", "address for /healthz and /metrics (empty: none)")
	fs.StringVar(&o.StateDir, "state-dir", dns.DefaultStateDir, "where to keep snapshots of the engine's objects, so a restart answers at once while the engine is away (empty: none)")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if upstreams != "" {
		o.Upstreams = strings.Split(upstreams, ",")
	}
	o.TTL = uint32(ttl)
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	eng, err := ef.client()
	if err != nil {
		return usageError{err.Error()}
	}
	o.Engine, o.Logger = eng, log
	s, err := dns.New(o)
	if err != nil {
		return err
	}
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return s.Run(ctx)
}
