package main

import (
	"context"
	"flag"
	"io"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/drover/drover/cloudprovider"
	"github.com/drover/drover/internal/lifecycle"
)

func runCloudProvider(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover cloudprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kubeconfig, listen, identity, cluster string
	var lease, monitor time.Duration
	ef := engineFlags(fs)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (empty: in-cluster config)")
	fs.StringVar(&listen, "listen", "127.0.0.1:10276", "address for /healthz, /readyz and /metrics")
	fs.StringVar(&cluster, "cluster-name", "drover", "the cluster's name, for the service controller")
	fs.StringVar(&identity, "identity", "", "name in the leader election (default: host name and pid)")
	fs.DurationVar(&lease, "lease-duration", 15*time.Second, "how long a silent leader keeps the lease")
	fs.DurationVar(&monitor, "node-monitor-period", 5*time.Second, "how often nodes whose host is gone are looked for")
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
	return cloudprovider.Run(ctx, cloudprovider.Options{Kube: kcfg, Engine: eng, Logger: log, Listen: listen, ClusterName: cluster,
		Identity: identity, LeaseDuration: lease, NodeMonitorPeriod: monitor})
}
