package kubernetesagent

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/controllers/harness"
)

// newController is one of the agent's work queues on the shared controller
// harness: handlers only enqueue; a failed sync is retried with per-key
// backoff and never holds up other keys.
func (a *Agent) newController(kind string, sync func(context.Context, string) error) *harness.Controller {
	return &harness.Controller{Name: "kubernetes-agent/" + kind, Sync: sync, Workers: a.opts.Workers, Log: a.log, Metrics: a.metrics.ctrl}
}

type metrics struct {
	reg    *prometheus.Registry
	ctrl   *harness.Metrics
	writes *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		reg:  reg,
		ctrl: harness.NewMetrics(reg),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_kubernetes_agent_writes_total", Help: "Writes made, by side (engine, kubernetes), kind and operation.",
		}, []string{"side", "kind", "op"}),
	}
	reg.MustRegister(m.writes)
	return m
}
