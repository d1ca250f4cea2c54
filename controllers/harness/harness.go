// Package harness is what every drover controller runs on: a rate-limited
// work queue of keys, workers that call sync(ctx, key), metrics for syncs
// and for the writes each controller makes to the engine, and leader
// election over an engine lease. Handlers of watch caches only enqueue keys;
// sync reads from the caches and writes the difference.
package harness

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Metrics are shared by every controller of a process, labelled by name.
type Metrics struct {
	Syncs    *prometheus.CounterVec
	Duration *prometheus.HistogramVec
	Writes   *prometheus.CounterVec
	Depth    *prometheus.GaugeVec
}

// NewMetrics registers the controller metrics with reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Syncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_controller_syncs_total", Help: "Syncs by controller and result (ok, error, requeue)."}, []string{"controller", "result"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_controller_writes_total",
			Help: "Writes a controller sent to the engine (every request but GET), by controller and method. It stops rising when the controllers agree."}, []string{"controller", "method"}),
		Depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "drover_controller_queue_depth", Help: "Keys waiting in a controller's queue."}, []string{"controller"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "drover_controller_sync_duration_seconds", Help: "Time to sync one key, by controller.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}, []string{"controller"}),
	}
	if reg != nil {
		reg.MustRegister(m.Syncs, m.Duration, m.Writes, m.Depth)
	}
	return m
}

// CountingTransport counts a controller's writes to the engine.
func (m *Metrics) CountingTransport(controller string, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		if r.Method != http.MethodGet {
			m.Writes.WithLabelValues(controller, r.Method).Inc()
		}
		return next.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Requeue asks for the key to be looked at again after a while without
// counting as a failure (waiting on time: a lease expiry, an upgrade interval).
type Requeue struct{ After time.Duration }

func (r Requeue) Error() string { return "requeue after " + r.After.String() }

// Controller is one sync function behind a work queue.
type Controller struct {
	Name    string
	Sync    func(ctx context.Context, key string) error
	Workers int
	Log     *slog.Logger
	Metrics *Metrics

	queue workqueue.TypedRateLimitingInterface[string]
	once  sync.Once
}

func (c *Controller) init() {
	c.once.Do(func() {
		if c.Workers == 0 {
			c.Workers = 1
		}
		if c.Log == nil {
			c.Log = slog.Default()
		}
		if c.Metrics == nil {
			c.Metrics = NewMetrics(nil)
		}
		c.Log = c.Log.With("controller", c.Name)
		c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: c.Name})
	})
}

// Enqueue adds a key; handlers call it and nothing else.
func (c *Controller) Enqueue(key string) {
	c.init()
	c.queue.Add(key)
}

// EnqueueAfter adds a key after a delay.
func (c *Controller) EnqueueAfter(key string, d time.Duration) {
	c.init()
	c.queue.AddAfter(key, d)
}

// Run waits for every wait function (cache syncs) and runs the workers
// until ctx ends.
func (c *Controller) Run(ctx context.Context, waits ...func(context.Context) bool) error {
	c.init()
	c.Metrics.Depth.WithLabelValues(c.Name).Set(0)
	for _, w := range waits {
		if !w(ctx) {
			c.queue.ShutDown()
			return ctx.Err()
		}
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for range c.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	c.Log.Debug("controller running", "workers", c.Workers)
	wg.Wait()
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	c.Metrics.Depth.WithLabelValues(c.Name).Set(float64(c.queue.Len()))
	start := time.Now()
	err := c.Sync(ctx, key)
	c.Metrics.Duration.WithLabelValues(c.Name).Observe(time.Since(start).Seconds())
	var rq Requeue
	switch {
	case err == nil:
		c.queue.Forget(key)
		c.Metrics.Syncs.WithLabelValues(c.Name, "ok").Inc()
	case errors.As(err, &rq):
		c.queue.Forget(key)
		c.queue.AddAfter(key, rq.After)
		c.Metrics.Syncs.WithLabelValues(c.Name, "requeue").Inc()
	default:
		c.Metrics.Syncs.WithLabelValues(c.Name, "error").Inc()
		if ctx.Err() == nil {
			retries := c.queue.NumRequeues(key)
			lv := c.Log.Debug
			if retries >= 3 {
				lv = c.Log.Warn // a passing conflict is normal; a persisting one is news
			}
			lv("sync failed; retrying", "key", key, "err", err, "retries", retries)
			c.queue.AddRateLimited(key)
		}
	}
	return true
}

// EnsureStack finds the engine stack name, or makes it (a bridge's own
// stack: kubernetes-ingress-lbs, kubernetes-loadbalancers), retrying every
// 2s while the engine does not answer, until ctx ends.
func EnsureStack(ctx context.Context, eng *client.Client, name, description string, log *slog.Logger) (*api.Stack, error) {
	for {
		list, _, err := eng.Stacks().List(ctx, client.ListOptions{Name: name})
		if err == nil && len(list) > 0 {
			return &list[0], nil
		}
		if err == nil {
			st, cerr := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: name, Annotations: map[string]string{"description": description}}})
			if cerr == nil {
				return st, nil
			}
			err = cerr // a conflict: another replica made it; list again
		}
		log.Warn("engine stack not ready; retrying", "stack", name, "err", err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}
