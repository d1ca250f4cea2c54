// Package kubectld is drover's Kubernetes YAML service: the Rancher
// /v1-kubectl HTTP API (create, apply, replace, delete, get, catalog) for
// callers holding an engine key, and the controller of stacks of kind
// kubernetes (manifests or a Helm chart, applied, upgraded with pruning,
// rolled back and removed as one unit). It talks to kube-apiserver through
// client-go's dynamic client and server-side apply: no kubectl binary.
package kubectld

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/internal/lifecycle"
)

// Options configure kubectld.
type Options struct {
	Kube *rest.Config
	// Kubeconfig is the file Kube came from ("" for in-cluster): Helm
	// builds its own clients from it.
	Kubeconfig string
	Engine     *client.Client
	Logger     *slog.Logger
	Listen     string // the API, /healthz, /readyz and /metrics (default :8091)
	Registry   *prometheus.Registry
	// Workers is how many writes of one request run at once (8).
	Workers int
	// Identity names this replica in leader election.
	Identity      string
	LeaseDuration time.Duration
	// HelmTimeout bounds one Helm operation (5m).
	HelmTimeout time.Duration
	// Started, when set, gets the address served once it listens.
	Started func(addr string)
}

// Run serves until ctx ends. Every replica serves the API; one at a time
// (an engine lease) runs the stack controller.
func Run(ctx context.Context, o Options) error {
	if o.Kube == nil || o.Engine == nil {
		return errors.New("kubectld: a Kubernetes config and engine credentials are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Listen == "" {
		o.Listen = ":8091"
	}
	if o.HelmTimeout == 0 {
		o.HelmTimeout = 5 * time.Minute
	}
	if o.Identity == "" {
		h, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	wrap := func(c *rest.Config) *rest.Config {
		// A manifest of hundreds of objects should not wait on client-side
		// throttling; kube-apiserver's own fairness protects it.
		c.QPS, c.Burst = 500, 1000
		c.UserAgent = "drover-kubectld"
		return c
	}
	kcfg := wrap(rest.CopyConfig(o.Kube))
	ap, err := NewApplier(kcfg, o.Workers, o.Logger)
	if err != nil {
		return fmt.Errorf("kubectld: %w", err)
	}
	kc, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("kubectld: %w", err)
	}
	api := &API{Applier: ap, Engine: o.Engine, Log: o.Logger, m: newMetrics(o.Registry)}
	hm := harness.NewMetrics(o.Registry)
	leader := prometheus.NewGauge(prometheus.GaugeOpts{Name: "drover_kubectld_leader", Help: "1 while this replica runs the stack controller."})
	o.Registry.MustRegister(leader)
	var mu sync.Mutex
	var cur *stackController
	ops := &lifecycle.Ops{Listen: o.Listen, Gatherer: o.Registry, Handler: api.Handler(), WriteTimeout: 10 * time.Minute,
		Ready: func() error {
			if _, err := ap.disco.ServerVersion(); err != nil {
				return fmt.Errorf("kube-apiserver: %w", err)
			}
			if err := o.Engine.Ping(context.Background()); err != nil {
				return fmt.Errorf("engine: %w", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if cur != nil && !cur.synced() {
				return errors.New("leading, stack cache not synced yet")
			}
			return nil
		}}
	if err := ops.Start(); err != nil {
		return fmt.Errorf("kubectld: %w", err)
	}
	defer ops.Stop()
	o.Logger.Info("kubectld serving", "addr", ops.Addr())
	if o.Started != nil {
		o.Started(ops.Addr())
	}
	hr := &helmRunner{kubeconfig: o.Kubeconfig, wrap: wrap, applier: ap, log: o.Logger, timeout: o.HelmTimeout}
	el := &harness.Election{Engine: o.Engine, Name: "kubectld", Identity: o.Identity, Duration: o.LeaseDuration, Log: o.Logger}
	el.Run(ctx, func(ctx context.Context) {
		c := newStackController(o.Engine, kc, ap, hr, o.Logger, hm, api.m.writes)
		mu.Lock()
		cur = c
		mu.Unlock()
		leader.Set(1)
		if err := c.run(ctx); err != nil && ctx.Err() == nil {
			o.Logger.Error("kubectld stopped leading", "err", err)
		}
		leader.Set(0)
		mu.Lock()
		cur = nil
		mu.Unlock()
	})
	return nil
}
