package main

import (
	"context"
	"flag"
	"io"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	ingresscontroller "github.com/drover/drover/ingress-controller"
	"github.com/drover/drover/internal/lifecycle"
)

func runIngressController(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover ingress-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kubeconfig, listen, identity string
	var workers, httpPort, httpsPort, frontScale int
	var lease time.Duration
	ef := engineFlags(fs)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (empty: in-cluster config)")
	fs.StringVar(&listen, "listen", "127.0.0.1:10275", "address for /healthz, /readyz and /metrics")
	fs.IntVar(&workers, "workers", 4, "Ingresses synced at once")
	fs.StringVar(&identity, "identity", "", "name in the leader election (default: host name and pid)")
	fs.DurationVar(&lease, "lease-duration", 15*time.Second, "how long a silent leader keeps the lease")
	fs.IntVar(&httpPort, "http-port", 80, "the shared LB's HTTP port")
	fs.IntVar(&httpsPort, "https-port", 443, "the shared LB's HTTPS port")
	fs.IntVar(&frontScale, "front-scale", 0, "containers of the shared LB (0: one on every host)")
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
	kcfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return usageError{"--kubeconfig: " + err.Error()}
	}
	klog.SetSlogLogger(log.With("source", "client-go"))
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return ingresscontroller.Run(ctx, ingresscontroller.Options{Kube: kcfg, Engine: eng, Logger: log, Listen: listen, Workers: workers, Identity: identity, LeaseDuration: lease,
		HTTPPort: httpPort, HTTPSPort: httpsPort, FrontScale: frontScale})
}
