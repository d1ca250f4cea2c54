package main

import (
	"context"
	"flag"
	"io"

	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/drover/drover/internal/lifecycle"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
)

func runKubernetesAgent(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover kubernetes-agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var kubeconfig, listen string
	var workers int
	ef := engineFlags(fs)
	fs.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig of the cluster (empty: in-cluster config)")
	fs.StringVar(&listen, "listen", "127.0.0.1:10271", "address for /healthz, /readyz and /metrics")
	fs.IntVar(&workers, "workers", 4, "sync workers per object kind")
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
	// client-go logs through klog; make that structured too.
	klog.SetSlogLogger(log.With("source", "client-go"))
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return kubernetesagent.Run(ctx, kubernetesagent.Options{Kube: kcfg, Engine: eng, Logger: log, Listen: listen, Workers: workers})
}
