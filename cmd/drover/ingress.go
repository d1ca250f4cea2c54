package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"time"

	ingresscontroller "github.com/drover/drover/ingress-controller"
)

func runIngressController(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover ingress-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bf := addBridgeFlags(fs, "127.0.0.1:10275")
	workers := fs.Int("workers", 4, "Ingresses synced at once")
	identity := fs.String("identity", "", "name in the leader election (default: host name and pid)")
	lease := fs.Duration("lease-duration", 15*time.Second, "how long a silent leader keeps the lease")
	httpPort := fs.Int("http-port", 80, "the shared LB's HTTP port")
	httpsPort := fs.Int("https-port", 443, "the shared LB's HTTPS port")
	frontScale := fs.Int("front-scale", 0, "containers of the shared LB (0: one on every host)")
	ctx, cancel, b, done, err := bf.start(ctx, fs, args, stderr)
	if done {
		return err
	}
	defer cancel()
	return ingresscontroller.Run(ctx, ingresscontroller.Options{Kube: b.kube, Engine: b.eng, Logger: b.log, Listen: b.listen, Workers: *workers,
		Identity: *identity, LeaseDuration: *lease, HTTPPort: *httpPort, HTTPSPort: *httpsPort, FrontScale: *frontScale})
}
