package server

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

type metrics struct {
	reg             *prometheus.Registry
	requests        *prometheus.CounterVec
	duration        *prometheus.HistogramVec
	writes          *prometheus.CounterVec
	events          prometheus.Counter
	delivered       prometheus.Counter
	slowSubscribers prometheus.Counter
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
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_server_events_total", Help: "Object changes seen on the store watch.",
		}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_server_events_delivered_total", Help: "Event frames delivered to subscribers.",
		}),
		slowSubscribers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_server_slow_subscribers_total", Help: "Subscribers disconnected for falling too far behind.",
		}),
	}
	m.reg.MustRegister(m.requests, m.duration, m.writes, m.events, m.delivered, m.slowSubscribers,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
