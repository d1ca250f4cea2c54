// Package upgrade is the rolling-upgrade controller. When a service's launch
// config changes, its units run an outdated config; this controller replaces
// them one batch at a time and the placement controller starts the
// replacements:
//
//   - stop-first deletes a batch, and the placement controller fills the
//     service back to its scale with current units;
//   - start-first raises status.upgrade.surge, so the placement controller
//     starts the batch's replacements beside the old units, and deletes the
//     old batch once they are ready.
//
// Each batch waits for every current unit to be running (and healthy, where
// the service has a health check) and for the upgrade interval, so a version
// that fails its check is not rolled any further. Progress lives in
// status.upgrade, so a restarted controller resumes at the same batch. It
// owns status.upgrade and the Upgraded condition, and nothing else.
package upgrade

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/controllers/placement"
	"github.com/drover/drover/controllers/stack"
	"github.com/drover/drover/scheduler"
)

// Name is the controller's name in logs and metrics, and its conditions' owner.
const Name = "upgrade"

// Options configure the controller.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Metrics *harness.Metrics
}

// Controller is the upgrade controller.
type Controller struct {
	eng      *client.Client
	log      *slog.Logger
	ctrl     *harness.Controller
	services *client.Cache[api.Service, *api.Service]
	ctrs     *client.Cache[api.Container, *api.Container]

	mu   sync.Mutex
	gone map[string]time.Time // deleted by us, still in the cache
}

const idxService = "service"

// New builds the controller; Run starts it.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Controller{eng: o.Engine, log: o.Logger.With("controller", Name), gone: map[string]time.Time{}}
	c.ctrl = &harness.Controller{Name: Name, Workers: 2, Log: o.Logger, Metrics: o.Metrics, Sync: c.sync}
	enqSvc := func(s *api.Service) {
		if placement.Placed(s.Spec.Kind) {
			c.ctrl.Enqueue(s.ID)
		}
	}
	c.services = client.NewCache(o.Engine.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: enqSvc, OnUpdate: func(_, s *api.Service) { enqSvc(s) },
	}, c.log)
	enqCtr := func(ct *api.Container) {
		if ct.Spec.ServiceID != "" {
			c.ctrl.Enqueue(ct.Spec.ServiceID)
		}
	}
	c.ctrs = client.NewCache(o.Engine.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: enqCtr, OnUpdate: func(_, ct *api.Container) { enqCtr(ct) },
		OnDelete: func(ct *api.Container) {
			c.mu.Lock()
			delete(c.gone, ct.ID)
			c.mu.Unlock()
			enqCtr(ct)
		},
	}, c.log)
	c.ctrs.AddIndex(idxService, func(ct *api.Container) []string { return []string{ct.Spec.ServiceID} })
	return c
}

// Run runs the controller until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	go c.services.Run(ctx)
	go c.ctrs.Run(ctx)
	return c.ctrl.Run(ctx, c.services.WaitForSync, c.ctrs.WaitForSync)
}

func (c *Controller) containersOf(id string) []*api.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*api.Container
	for _, ct := range c.ctrs.ByIndex(idxService, id) {
		if at, ok := c.gone[ct.ID]; ok && time.Since(at) < 30*time.Second {
			continue
		}
		out = append(out, ct)
	}
	return out
}

func config(svc *api.Service) api.UpgradeConfig {
	cfg := api.UpgradeConfig{BatchSize: 1, IntervalMs: 2000}
	if u := svc.Spec.Upgrade; u != nil {
		if u.BatchSize > 0 {
			cfg.BatchSize = u.BatchSize
		}
		if u.IntervalMs > 0 {
			cfg.IntervalMs = u.IntervalMs
		}
		cfg.StartFirst = u.StartFirst
	}
	return cfg
}

func (c *Controller) sync(ctx context.Context, id string) error {
	svc, ok := c.services.Get(id)
	if !ok || svc.Deleting() || !placement.Placed(svc.Spec.Kind) || svc.Spec.LaunchConfig == nil {
		return nil
	}
	units := scheduler.Units(c.containersOf(id))
	var old, fresh []*scheduler.Unit
	for _, u := range units {
		if scheduler.UnitOutdated(svc, u) {
			old = append(old, u)
		} else {
			fresh = append(fresh, u)
		}
	}
	cur := svc.Status.Upgrade
	if len(old) == 0 {
		// Done, or never started: write only to close an upgrade.
		if cond := api.FindCondition(svc.Status.Conditions, stack.ConditionUpgraded); cur == nil && (cond == nil || cond.Status == api.ConditionTrue) {
			return nil
		}
		return c.write(ctx, svc, nil, api.ConditionTrue, "Done", "every unit runs the current launch config")
	}
	cfg := config(svc)
	next := api.UpgradeStatus{Outdated: len(old)}
	if cur != nil {
		next.Surge, next.BatchStartedAt = cur.Surge, cur.BatchStartedAt
	}
	msg := fmt.Sprintf("%d of %d units run an older launch config; replacing %d at a time (%s)", len(old), len(units), cfg.BatchSize, map[bool]string{true: "start-first", false: "stop-first"}[cfg.StartFirst])
	// The gate: every current unit does its job before the next batch.
	for _, u := range fresh {
		for _, ct := range u.Containers {
			if !scheduler.Ready(svc, ct) {
				return c.writeRequeue(ctx, svc, &next, msg, time.Second)
			}
		}
	}
	if next.BatchStartedAt != nil {
		if wait := time.Duration(cfg.IntervalMs)*time.Millisecond - time.Since(*next.BatchStartedAt); wait > 0 {
			return c.writeRequeue(ctx, svc, &next, msg, wait)
		}
	}
	want := 1
	if svc.Spec.Scale != nil {
		want = *svc.Spec.Scale
	}
	if svc.Spec.Global {
		want = len(units)
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Index < old[j].Index })
	batch := old[:min(cfg.BatchSize, len(old))]
	if cfg.StartFirst && !svc.Spec.Global {
		if next.Surge != len(batch) {
			// Let placement start the replacements beside the old units.
			next.Surge = len(batch)
			return c.writeRequeue(ctx, svc, &next, msg, time.Second)
		}
		if len(fresh)+len(old) < want+next.Surge {
			return c.writeRequeue(ctx, svc, &next, msg, time.Second)
		}
		if len(old) <= len(batch) {
			// The last batch: no more surge once it goes.
			next.Surge = 0
		}
	} else if !svc.Spec.Global && len(fresh)+len(old) < want {
		// Stop-first never goes below scale by more than one batch.
		return c.writeRequeue(ctx, svc, &next, msg, time.Second)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	next.BatchStartedAt = &now
	if err := c.write(ctx, svc, &next, api.ConditionFalse, "RollingUpgrade", msg); err != nil {
		return err
	}
	for _, u := range batch {
		for _, ct := range u.Containers {
			if _, err := c.eng.Containers().Delete(ctx, ct.ID); err != nil && !api.IsNotFound(err) {
				return fmt.Errorf("upgrade: deleting %s: %w", ct.Name, err)
			}
			c.mu.Lock()
			c.gone[ct.ID] = time.Now()
			c.mu.Unlock()
		}
	}
	c.log.Info("upgrade batch", "service", svc.Name, "replaced", len(batch), "remaining", len(old)-len(batch), "startFirst", cfg.StartFirst)
	return harness.Requeue{After: time.Duration(cfg.IntervalMs) * time.Millisecond}
}

func (c *Controller) writeRequeue(ctx context.Context, svc *api.Service, next *api.UpgradeStatus, msg string, after time.Duration) error {
	if err := c.write(ctx, svc, next, api.ConditionFalse, "RollingUpgrade", msg); err != nil {
		return err
	}
	return harness.Requeue{After: after}
}

// write sets status.upgrade and the Upgraded condition, if they changed.
func (c *Controller) write(ctx context.Context, svc *api.Service, up *api.UpgradeStatus, status, reason, msg string) error {
	conds := append([]api.Condition(nil), svc.Status.Conditions...)
	changed := api.SetCondition(&conds, api.Condition{Type: stack.ConditionUpgraded, Status: status, Owner: Name, Reason: reason, Message: msg, ObservedGeneration: svc.Generation}, time.Now())
	if !changed && api.SameJSON(up, svc.Status.Upgrade) {
		return nil
	}
	// A nil upgrade encodes as null, which the merge patch removes.
	_, err := c.eng.Services().PatchStatus(ctx, svc.ID, map[string]any{"status": map[string]any{"upgrade": up, "conditions": []api.Condition{*api.FindCondition(conds, stack.ConditionUpgraded)}}})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}
