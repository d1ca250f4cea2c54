// Package hostlifecycle turns host leases into host states. Each agent
// renews its host's lease; this controller, the only watcher of leases,
// marks a host active while its lease is renewed, disconnected when it has
// not been for DisconnectAfter, and sets the Lost condition after LostAfter,
// when the placement controller moves the host's containers elsewhere. A
// host object changes only when its state does, so liveness costs no host
// writes and wakes no host watchers.
package hostlifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
)

// Name is the controller's name, and the owner of its conditions.
const Name = "hostlifecycle"

// Condition types this controller owns.
const (
	ConditionReady = "Ready"
	ConditionLost  = "Lost"
)

// Options configure the controller.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Metrics *harness.Metrics
	// DisconnectAfter marks a host disconnected when its lease has not been
	// renewed for this long (default 30s).
	DisconnectAfter time.Duration
	// LostAfter marks a disconnected host lost after this long (default 2m).
	LostAfter time.Duration
}

// Controller is the host lifecycle controller.
type Controller struct {
	opts   Options
	log    *slog.Logger
	ctrl   *harness.Controller
	hosts  *client.Cache[api.Host, *api.Host]
	leases *client.Cache[api.Lease, *api.Lease]
	start  time.Time

	mu   sync.Mutex
	seen map[string]seen // lease id -> when its revision last moved
}

type seen struct {
	rev int64
	at  time.Time
}

const idxHost = "host"

// New builds the controller; Run starts it.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.DisconnectAfter == 0 {
		o.DisconnectAfter = 30 * time.Second
	}
	if o.LostAfter == 0 {
		o.LostAfter = 2 * time.Minute
	}
	c := &Controller{opts: o, log: o.Logger.With("controller", Name), seen: map[string]seen{}}
	c.ctrl = &harness.Controller{Name: Name, Workers: 2, Log: o.Logger, Metrics: o.Metrics, Sync: c.sync}
	enqHost := func(h *api.Host) { c.ctrl.Enqueue(h.ID) }
	c.hosts = client.NewCache(o.Engine.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd: enqHost, OnUpdate: func(_, h *api.Host) { enqHost(h) },
	}, c.log)
	enqLease := func(l *api.Lease) {
		if l.Spec.HostID != "" {
			c.ctrl.Enqueue(l.Spec.HostID)
		}
	}
	c.leases = client.NewCache(o.Engine.Leases(), client.ListOptions{}, client.Handlers[api.Lease]{
		OnAdd: enqLease, OnUpdate: func(_, l *api.Lease) { enqLease(l) },
		OnDelete: func(l *api.Lease) {
			c.mu.Lock()
			delete(c.seen, l.ID)
			c.mu.Unlock()
			enqLease(l)
		},
	}, c.log)
	c.leases.AddIndex(idxHost, func(l *api.Lease) []string { return []string{l.Spec.HostID} })
	return c
}

// Run runs the controller until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.start = time.Now()
	go c.hosts.Run(ctx)
	go c.leases.Run(ctx)
	return c.ctrl.Run(ctx, c.hosts.WaitForSync, c.leases.WaitForSync)
}

// lastRenewal is when this controller saw the lease change last: judged by
// our clock, not the agent's, so a host with a skewed clock is still judged
// right. A lease seen for the first time counts from our start, which gives
// agents a grace period after a controller failover.
func (c *Controller) lastRenewal(l *api.Lease) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.seen[l.ID]
	if !ok {
		s = seen{rev: l.Revision, at: c.start}
		c.seen[l.ID] = s
	} else if s.rev != l.Revision {
		s = seen{rev: l.Revision, at: time.Now()}
		c.seen[l.ID] = s
	}
	return s.at
}

func (c *Controller) sync(ctx context.Context, id string) error {
	h, ok := c.hosts.Get(id)
	if !ok || h.Deleting() {
		return nil
	}
	var lease *api.Lease
	if ls := c.leases.ByIndex(idxHost, id); len(ls) > 0 {
		lease = ls[0]
	}
	now := time.Now()
	state := h.Status.State
	var requeue time.Duration
	switch {
	case lease == nil || lease.Spec.RenewTime == nil:
		// Never renewed: registering, or a host that lost its lease.
		if state == "" {
			state = api.HostRegistering
		}
	default:
		idle := now.Sub(c.lastRenewal(lease))
		if idle < c.opts.DisconnectAfter {
			state = api.HostActive
			requeue = c.opts.DisconnectAfter - idle
		} else {
			state = api.HostDisconnected
		}
	}
	conds := append([]api.Condition(nil), h.Status.Conditions...)
	ready := api.Condition{Type: ConditionReady, Owner: Name, Status: api.ConditionFalse, Reason: "LeaseExpired", Message: fmt.Sprintf("no lease renewal for %s", c.opts.DisconnectAfter)}
	switch state {
	case api.HostActive:
		ready.Status, ready.Reason, ready.Message = api.ConditionTrue, "LeaseRenewed", ""
	case api.HostRegistering:
		ready.Status, ready.Reason, ready.Message = api.ConditionUnknown, "NotRenewedYet", "the agent has not renewed its lease yet"
	}
	changed := api.SetCondition(&conds, ready, now)
	lost := api.Condition{Type: ConditionLost, Owner: Name, Status: api.ConditionFalse}
	if state == api.HostDisconnected {
		rc := api.FindCondition(conds, ConditionReady)
		since := now.Sub(rc.LastTransitionTime)
		if since >= c.opts.LostAfter {
			lost.Status, lost.Reason, lost.Message = api.ConditionTrue, "Disconnected", fmt.Sprintf("disconnected for more than %s: its containers are placed elsewhere", c.opts.LostAfter)
		} else {
			requeue = c.opts.LostAfter - since
		}
	}
	if api.SetCondition(&conds, lost, now) {
		changed = true
	}
	if state != h.Status.State || changed {
		if state != h.Status.State {
			c.log.Info("host state", "host", h.Name, "from", h.Status.State, "to", state)
		}
		// Only our own conditions: the status patch merges them by type.
		var ours []api.Condition
		for _, cd := range conds {
			if cd.Owner == Name {
				ours = append(ours, cd)
			}
		}
		_, err := c.opts.Engine.Hosts().PatchStatus(ctx, id, map[string]any{"status": map[string]any{"state": state, "conditions": ours}})
		if err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("hostlifecycle: writing status of host %s: %w", h.Name, err)
		}
	}
	if requeue > 0 {
		return harness.Requeue{After: requeue + 10*time.Millisecond}
	}
	return nil
}

// Lost reports whether a host carries the Lost condition.
func Lost(h *api.Host) bool {
	c := api.FindCondition(h.Status.Conditions, ConditionLost)
	return c != nil && c.Status == api.ConditionTrue
}
