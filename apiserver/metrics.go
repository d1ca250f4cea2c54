package apiserver

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/drover/drover/events"
)

type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	writes   *prometheus.CounterVec
	hub      *events.Metrics
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_server_requests_total", Help: "API requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drover_server_request_duration_seconds", Help: "API request latency (streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"method", "route"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_server_store_writes_total", Help: "Objects written to the store, by collection and operation.",
		}, []string{"collection", "op"}),
		hub: events.NewMetrics(),
	}
	m.reg.MustRegister(m.requests, m.duration, m.writes, m.hub.Events, m.hub.Delivered, m.hub.SlowSubscribers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
