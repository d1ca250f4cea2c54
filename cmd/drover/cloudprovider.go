package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"time"

	"github.com/drover/drover/cloudprovider"
)

func runCloudProvider(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover cloudprovider", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bf := addBridgeFlags(fs, "127.0.0.1:10276")
	cluster := fs.String("cluster-name", "drover", "the cluster's name, for the service controller")
	identity := fs.String("identity", "", "name in the leader election (default: host name and pid)")
	lease := fs.Duration("lease-duration", 15*time.Second, "how long a silent leader keeps the lease")
	monitor := fs.Duration("node-monitor-period", 5*time.Second, "how often nodes whose host is gone are looked for")
	ctx, cancel, b, done, err := bf.start(ctx, fs, args, stderr)
	if done {
		return err
	}
	defer cancel()
	return cloudprovider.Run(ctx, cloudprovider.Options{Kube: b.kube, Engine: b.eng, Logger: b.log, Listen: b.listen, ClusterName: *cluster,
		Identity: *identity, LeaseDuration: *lease, NodeMonitorPeriod: *monitor})
}
