package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"

	"github.com/drover/drover/internal/lifecycle"
	"github.com/drover/drover/lb"
)

// runLB: drover lb --service ID, the process of an LB container (image
// drover/lb-haproxy), which the agent starts with the service's id and an
// engine key of its own.
func runLB(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover lb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o lb.Options
	ef := engineFlags(fs)
	fs.StringVar(&o.ServiceID, "service", "", "the load balancer service's id")
	fs.StringVar(&o.Dir, "dir", "/run/drover-lb", "where haproxy.cfg, the certificates and the sockets go")
	fs.StringVar(&o.HAProxy, "haproxy", "haproxy", "the haproxy binary")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:10280", "address for /healthz and /metrics (empty: none)")
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
	if o.ServiceID == "" {
		return usageError{"--service is needed (the load balancer service's id)"}
	}
	o.Engine, o.Logger = eng, log
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return lb.Run(ctx, o)
}
