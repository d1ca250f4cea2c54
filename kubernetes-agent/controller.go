package kubernetesagent

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
)

// controller is one rate-limited work queue of keys and its sync function.
// Handlers only enqueue; a failed sync is retried with per-key backoff and
// never holds up other keys.
type controller struct {
	a     *Agent
	kind  string
	queue workqueue.TypedRateLimitingInterface[string]
	sync  func(ctx context.Context, key string) error
}

func (a *Agent) newController(kind string, sync func(context.Context, string) error) *controller {
	c := &controller{
		a:    a,
		kind: kind,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](20*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: kind}),
		sync: sync,
	}
	a.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_kubernetes_agent_queue_depth", Help: "Keys waiting to be synced.", ConstLabels: prometheus.Labels{"kind": kind},
	}, func() float64 { return float64(c.queue.Len()) }))
	return c
}

func (c *controller) enqueue(key string) { c.queue.Add(key) }

func (c *controller) run(ctx context.Context, workers int) {
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	done := make(chan struct{})
	for i := 0; i < workers; i++ {
		go func() {
			defer func() { done <- struct{}{} }()
			for c.next(ctx) {
			}
		}()
	}
	for i := 0; i < workers; i++ {
		<-done
	}
}

func (c *controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	start := time.Now()
	err := c.sync(ctx, key)
	c.a.metrics.syncDuration.WithLabelValues(c.kind).Observe(time.Since(start).Seconds())
	if err == nil {
		c.queue.Forget(key)
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	c.a.metrics.syncErrors.WithLabelValues(c.kind).Inc()
	retries := c.queue.NumRequeues(key)
	lv := c.a.log.Debug
	if retries >= 3 {
		lv = c.a.log.Warn // a passing conflict is normal; a persisting one is news
	}
	lv("sync failed; will retry", "kind", c.kind, "key", key, "err", err, "retries", retries)
	c.queue.AddRateLimited(key)
	return true
}

type metrics struct {
	reg          *prometheus.Registry
	syncDuration *prometheus.HistogramVec
	syncErrors   *prometheus.CounterVec
	writes       *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg: reg,
		syncDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drover_kubernetes_agent_sync_duration_seconds", Help: "Time to sync one key, by kind.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"kind"}),
		syncErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_kubernetes_agent_sync_errors_total", Help: "Failed syncs (retried with backoff), by kind.",
		}, []string{"kind"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_kubernetes_agent_writes_total", Help: "Writes made, by side (engine, kubernetes), kind and operation.",
		}, []string{"side", "kind", "op"}),
	}
	reg.MustRegister(m.syncDuration, m.syncErrors, m.writes)
	return m
}
