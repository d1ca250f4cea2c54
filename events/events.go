// Package events is the engine's event hub: one etcd watch over every
// object, fanned out to subscribers. Each event is offered only to the
// subscribers an index says it may concern (by collection and host) and
// queued only for those whose filter matches; a subscriber that falls too
// far behind is cut off with a reason. Streams resume by revision, replaying
// from a ring of recent events or from etcd's history, and get a resync when
// that history is compacted; pings carry revision bookmarks. It knows
// nothing of HTTP or authentication: a filter's Scope says what its
// subscriber may see.
package events

import "github.com/prometheus/client_golang/prometheus"

// Scope is what a subscriber's credentials let it see.
type Scope interface {
	CanRead(collection string) bool
	CanSee(collection, id, hostID string) bool
	// OwnHost is the one host whose hosts, containers and leases are all
	// the scope sees of those collections ("" for no such limit).
	OwnHost() string
}

// Metrics are the hub's counters, registered by the caller.
type Metrics struct {
	Events          prometheus.Counter
	Delivered       prometheus.Counter
	SlowSubscribers prometheus.Counter
}

// NewMetrics returns the hub's counters, unregistered.
func NewMetrics() *Metrics {
	return &Metrics{
		Events:          prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_server_events_total", Help: "Object changes seen on the store watch."}),
		Delivered:       prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_server_events_delivered_total", Help: "Event frames delivered to subscribers."}),
		SlowSubscribers: prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_server_slow_subscribers_total", Help: "Subscribers disconnected for falling too far behind or not reading."}),
	}
}
