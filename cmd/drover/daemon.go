package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"log/slog"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/lifecycle"
)

// logFlags are every daemon's --log-format and --log-level.
type logFlags struct{ format, level *string }

func addLogFlags(fs *flag.FlagSet) logFlags {
	return logFlags{
		format: fs.String("log-format", "text", "log format: text or json"),
		level:  fs.String("log-level", "info", "log level: debug, info, warn, error"),
	}
}

func (l logFlags) logger(w io.Writer) (*slog.Logger, error) {
	log, err := lifecycle.NewLogger(w, *l.format, *l.level)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return log, nil
}

// parseFlags parses args; it reports done when help was asked for (and
// shown) or the flags were wrong, so the command returns err at once.
func parseFlags(fs *flag.FlagSet, args []string) (done bool, err error) {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return true, nil
		}
		return true, usageError{err.Error()}
	}
	return false, nil
}

// bridgeFlags are what every daemon between Kubernetes and the engine
// (kubernetes-agent, ingress-controller, cloudprovider) takes: a
// kubeconfig, engine credentials, an ops address and log flags.
type bridgeFlags struct {
	kubeconfig, listen *string
	engine             engineFlagSet
	log                logFlags
}

func addBridgeFlags(fs *flag.FlagSet, listen string) bridgeFlags {
	return bridgeFlags{
		kubeconfig: fs.String("kubeconfig", "", "kubeconfig of the cluster (empty: in-cluster config)"),
		listen:     fs.String("listen", listen, "address for /healthz, /readyz and /metrics"),
		engine:     engineFlags(fs),
		log:        addLogFlags(fs),
	}
}

// bridge is a parsed bridgeFlags: both clients, the logger, and a context
// that ends on SIGINT or SIGTERM.
type bridge struct {
	kube   *rest.Config
	eng    *client.Client
	log    *slog.Logger
	listen string
}

// start parses args; done is true after -h (err says what was wrong).
func (b bridgeFlags) start(ctx context.Context, fs *flag.FlagSet, args []string, stderr io.Writer) (context.Context, context.CancelFunc, *bridge, bool, error) {
	if done, err := parseFlags(fs, args); done {
		return nil, nil, nil, true, err
	}
	log, err := b.log.logger(stderr)
	if err != nil {
		return nil, nil, nil, true, err
	}
	eng, err := b.engine.client()
	if err != nil {
		return nil, nil, nil, true, usageError{err.Error()}
	}
	kcfg, err := clientcmd.BuildConfigFromFlags("", *b.kubeconfig)
	if err != nil {
		return nil, nil, nil, true, usageError{"--kubeconfig: " + err.Error()}
	}
	// client-go and the cloud-provider controllers log through klog; make
	// that structured too.
	klog.SetSlogLogger(log.With("source", "client-go"))
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	return ctx, cancel, &bridge{kube: kcfg, eng: eng, log: log, listen: *b.listen}, false, nil
}
