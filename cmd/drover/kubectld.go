package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"time"

	"github.com/drover/drover/kubectld"
)

func runKubectld(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover kubectld", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bf := addBridgeFlags(fs, ":8091")
	fs.Lookup("listen").Usage = "address of the /v1-kubectl API, /healthz, /readyz and /metrics"
	workers := fs.Int("workers", 8, "writes of one request made at once")
	identity := fs.String("identity", "", "name in the leader election of the stack controller (default: host name and pid)")
	lease := fs.Duration("lease-duration", 15*time.Second, "how long a silent leader keeps the lease")
	helmTimeout := fs.Duration("helm-timeout", 5*time.Minute, "how long one Helm install, upgrade, rollback or uninstall may take")
	ctx, cancel, b, done, err := bf.start(ctx, fs, args, stderr)
	if done {
		return err
	}
	defer cancel()
	return kubectld.Run(ctx, kubectld.Options{Kube: b.kube, Kubeconfig: *bf.kubeconfig, Engine: b.eng, Logger: b.log, Listen: b.listen,
		Workers: *workers, Identity: *identity, LeaseDuration: *lease, HelmTimeout: *helmTimeout})
}
