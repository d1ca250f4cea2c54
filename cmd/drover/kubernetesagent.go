package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"

	kubernetesagent "github.com/drover/drover/kubernetes-agent"
)

func runKubernetesAgent(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover kubernetes-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bf := addBridgeFlags(fs, "127.0.0.1:10271")
	workers := fs.Int("workers", 4, "sync workers per object kind")
	ctx, cancel, b, done, err := bf.start(ctx, fs, args, stderr)
	if done {
		return err
	}
	defer cancel()
	return kubernetesagent.Run(ctx, kubernetesagent.Options{Kube: b.kube, Engine: b.eng, Logger: b.log, Listen: b.listen, Workers: *workers})
}
