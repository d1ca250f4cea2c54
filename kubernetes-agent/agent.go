// Package kubernetesagent keeps Kubernetes objects and engine objects in
// step, both ways: namespaces -> stacks, Services and workloads -> services,
// Pods -> containers, and Nodes <-> hosts (labels, cordon, removal).
//
// Kubernetes is watched with client-go informers and the engine with the
// drover watch cache; every change only enqueues a key, and workers run a
// level-triggered sync per key (sample-controller style). Nothing is kept
// that cannot be rebuilt from the two APIs: engine objects it creates carry
// the Kubernetes UID in a label, so ownership is never guessed.
package kubernetesagent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/internal/lifecycle"
)

// Options configure the agent.
type Options struct {
	Kube    *rest.Config
	Engine  *client.Client
	Logger  *slog.Logger
	Listen  string // /healthz and /metrics; "" serves nothing
	Workers int    // per queue (default 4)
	// Registry receives the agent's metrics (default: a new one).
	Registry *prometheus.Registry
	// Ready, if set, is closed once both sides are synced and workers run.
	Ready chan<- struct{}
}

// Agent is a running kubernetes-agent.
type Agent struct {
	opts        Options
	log         *slog.Logger
	broadcaster record.EventBroadcaster
	wrote       wroteRevisions
	kube        kubernetes.Interface
	eng         *client.Client
	recorder    record.EventRecorder
	metrics     *metrics
	factory     informers.SharedInformerFactory
	listers     listers
	stacks      *client.Cache[api.Stack, *api.Stack]
	services    *client.Cache[api.Service, *api.Service]
	ctrs        *client.Cache[api.Container, *api.Container]
	hosts       *client.Cache[api.Host, *api.Host]

	namespaces *harness.Controller
	kservices  *harness.Controller
	pods       *harness.Controller
	workloads  *harness.Controller
	nodes      *harness.Controller
}

// Run starts the agent and blocks until ctx ends.
func Run(ctx context.Context, opts Options) error {
	a, err := New(opts)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// New builds an agent; Run starts it.
func New(opts Options) (*Agent, error) {
	if opts.Kube == nil || opts.Engine == nil {
		return nil, errors.New("kubernetes-agent: a Kubernetes config and engine credentials are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	if opts.Registry == nil {
		opts.Registry = prometheus.NewRegistry()
		opts.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	kcfg := rest.CopyConfig(opts.Kube)
	if kcfg.QPS == 0 {
		// The agent writes pod and service status at the rate Kubernetes
		// changes them; client-go's default of 5 QPS would starve it.
		kcfg.QPS, kcfg.Burst = 200, 400
	}
	kcfg.UserAgent = "drover-kubernetes-agent"
	kcfg.WarningHandler = warningLogger{opts.Logger}
	cs, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes-agent: kubernetes client: %w", err)
	}
	a := &Agent{opts: opts, log: opts.Logger, kube: cs, eng: opts.Engine, metrics: newMetrics(opts.Registry)}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	a.broadcaster = b
	a.recorder = b.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "drover-kubernetes-agent"})
	a.factory = informers.NewSharedInformerFactory(cs, 0)
	a.setupListers()
	a.namespaces = a.newController("namespace", a.syncNamespace)
	a.kservices = a.newController("service", a.syncService)
	a.pods = a.newController("pod", a.syncPod)
	a.workloads = a.newController("workload", a.syncWorkload)
	a.nodes = a.newController("node", a.syncNode)
	if err := a.setupKubeHandlers(); err != nil {
		b.Shutdown()
		return nil, err
	}
	a.setupEngineCaches()
	return a, nil
}

// Run starts informers, caches and workers, and blocks until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	defer a.broadcaster.Shutdown()
	g, ctx := errgroup.WithContext(ctx)
	if a.opts.Listen != "" {
		ops := &lifecycle.Ops{Listen: a.opts.Listen, Gatherer: a.opts.Registry, Ready: func() error {
			if !a.hosts.HasSynced() || !a.ctrs.HasSynced() {
				return errors.New("engine caches not synced")
			}
			return nil
		}}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("kubernetes-agent: %w", err)
		}
		defer ops.Stop()
	}
	a.factory.Start(ctx.Done())
	for _, c := range []interface{ Run(context.Context) }{a.stacks, a.services, a.ctrs, a.hosts} {
		g.Go(func() error { c.Run(ctx); return nil })
	}
	a.log.Info("kubernetes-agent: waiting for both sides to sync")
	for typ, ok := range a.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("kubernetes-agent: %v informer never synced: %w", typ, ctx.Err())
		}
	}
	for _, wait := range []func(context.Context) bool{a.stacks.WaitForSync, a.services.WaitForSync, a.ctrs.WaitForSync, a.hosts.WaitForSync} {
		if !wait(ctx) {
			return fmt.Errorf("kubernetes-agent: engine caches never synced: %w", ctx.Err())
		}
	}
	// Engine objects whose Kubernetes twin vanished while we were away are
	// found by enqueueing every owned object's key (the caches' add events
	// did that already) and every node: sync deletes what has no twin.
	for _, c := range []*harness.Controller{a.namespaces, a.kservices, a.pods, a.workloads, a.nodes} {
		g.Go(func() error { return c.Run(ctx) })
	}
	a.log.Info("kubernetes-agent: synced; running", "workers", a.opts.Workers)
	if a.opts.Ready != nil {
		close(a.opts.Ready)
	}
	<-ctx.Done()
	a.factory.Shutdown()
	err := g.Wait()
	a.log.Info("kubernetes-agent: stopped")
	return err
}

// warningLogger sends the API server's warnings to the structured log.
type warningLogger struct{ log *slog.Logger }

func (w warningLogger) HandleWarningHeader(code int, agent, text string) {
	w.log.Debug("kubernetes API warning", "code", code, "text", text)
}

func splitKey(key string) (string, string, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	return ns, name, err
}

// wroteRevisions remembers the engine revision of the agent's own last write
// per key. A sync that runs before the watch cache has caught up with that
// write would see stale state (and, say, create a second container for a
// pod), so it waits instead.
type wroteRevisions struct {
	mu   sync.Mutex
	revs map[string]int64
}

var errCacheBehind = errors.New("engine cache has not caught up with our last write yet")

func (w *wroteRevisions) record(key string, rev int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.revs == nil {
		w.revs = map[string]int64{}
	}
	w.revs[key] = rev
}

// behind reports whether the cache (at cacheRev) has not yet seen the last
// write made for key.
func (w *wroteRevisions) behind(key string, cacheRev int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	r, ok := w.revs[key]
	if !ok {
		return false
	}
	if cacheRev >= r {
		delete(w.revs, key)
		return false
	}
	return true
}
