// Package stack is the stack controller: it turns a compose stack's files
// into its services (creates what is new, replaces the spec of what changed,
// deletes what the files dropped) and rolls the services' states up into
// the stack's status. It owns status.state, health, message and
// observedGeneration of compose stacks, and nothing of Kubernetes stacks.
package stack

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/stacks"
)

// Name is the controller's name in logs and metrics.
const Name = "stack"

// LabelManaged marks services a compose stack declares; the stack
// controller removes them when the files no longer do.
const LabelManaged = "io.drover.stack.managed"

// ConditionUpgraded is the upgrade controller's condition on a service;
// the roll-up reads it.
const ConditionUpgraded = "Upgraded"

// Options configure the controller.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Metrics *harness.Metrics
}

// Controller is the stack controller.
type Controller struct {
	eng      *client.Client
	log      *slog.Logger
	ctrl     *harness.Controller
	stacks   *client.Cache[api.Stack, *api.Stack]
	services *client.Cache[api.Service, *api.Service]
}

const idxStack = "stack"

// New builds the controller; Run starts it.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Controller{eng: o.Engine, log: o.Logger.With("controller", Name)}
	c.ctrl = &harness.Controller{Name: Name, Workers: 2, Log: o.Logger, Metrics: o.Metrics, Sync: c.sync}
	enq := func(st *api.Stack) { c.ctrl.Enqueue(st.ID) }
	c.stacks = client.NewCache(o.Engine.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: enq, OnUpdate: func(_, n *api.Stack) { enq(n) },
	}, c.log)
	enqSvc := func(s *api.Service) { c.ctrl.Enqueue(s.Spec.StackID) }
	c.services = client.NewCache(o.Engine.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: enqSvc, OnUpdate: func(_, s *api.Service) { enqSvc(s) }, OnDelete: enqSvc,
	}, c.log)
	c.services.AddIndex(idxStack, func(s *api.Service) []string { return []string{s.Spec.StackID} })
	return c
}

// Run runs the controller until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	go c.stacks.Run(ctx)
	go c.services.Run(ctx)
	return c.ctrl.Run(ctx, c.stacks.WaitForSync, c.services.WaitForSync)
}

func (c *Controller) sync(ctx context.Context, id string) error {
	st, ok := c.stacks.Get(id)
	if !ok || st.Spec.Kind != api.StackCompose || st.Deleting() {
		return nil
	}
	var want []stacks.Service
	if st.Spec.Compose != "" {
		var err error
		want, err = stacks.ParseSpec(ctx, st.Name, st.Spec)
		if err != nil {
			return c.setStatus(ctx, st, "error", "", err.Error())
		}
	}
	mine := c.services.ByIndex(idxStack, st.ID)
	have := map[string]*api.Service{}
	for _, s := range mine {
		if s.Labels[LabelManaged] == "true" && !s.Deleting() {
			have[s.Name] = s
		}
	}
	for _, w := range want {
		labels := map[string]string{LabelManaged: "true"}
		for k, v := range w.Labels {
			labels[k] = v
		}
		spec := w.Spec
		spec.StackID = st.ID
		cur := have[w.Name]
		delete(have, w.Name)
		if cur == nil {
			if _, err := c.eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: w.Name, Labels: labels}, Spec: spec}); err != nil && !api.IsConflict(err) {
				return fmt.Errorf("stack: creating service %s: %w", w.Name, err)
			}
			continue
		}
		if api.SameJSON(cur.Spec, spec) && api.SameJSON(cur.Labels, labels) {
			continue
		}
		next := *cur
		next.Spec, next.Labels = spec, labels
		if _, err := c.eng.Services().Update(ctx, cur.ID, &next); err != nil {
			return fmt.Errorf("stack: updating service %s: %w", w.Name, err)
		}
	}
	for _, gone := range have {
		if _, err := c.eng.Services().Delete(ctx, gone.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("stack: deleting service %s: %w", gone.Name, err)
		}
	}
	state, health, msg := Rollup(mine, len(want))
	return c.setStatus(ctx, st, state, health, msg)
}

// Rollup sums a stack's services up into the stack's state and health.
func Rollup(svcs []*api.Service, declared int) (state, health, msg string) {
	state, health = "active", "healthy"
	total, active := 0, 0
	for _, s := range svcs {
		if s.Deleting() {
			continue
		}
		total++
		up := api.FindCondition(s.Status.Conditions, ConditionUpgraded)
		switch {
		case s.Status.State == "error":
			state = "error"
		case up != nil && up.Status == api.ConditionFalse:
			if state != "error" {
				state = "upgrading"
			}
		case s.Status.State == "active":
			active++
		default:
			if state == "active" {
				state = "activating"
			}
		}
		if s.Status.Health != "healthy" && s.Status.Health != "" && health == "healthy" {
			health = s.Status.Health
		}
	}
	if total < declared && state == "active" {
		state = "activating"
	}
	return state, health, fmt.Sprintf("%d of %d services active", active, max(total, declared))
}

func (c *Controller) setStatus(ctx context.Context, st *api.Stack, state, health, msg string) error {
	if st.Status.State == state && st.Status.Health == health && st.Status.Message == msg && st.Status.ObservedGeneration == st.Generation {
		return nil
	}
	_, err := c.eng.Stacks().PatchStatus(ctx, st.ID, map[string]any{"status": map[string]any{"state": state, "health": health, "message": msg, "observedGeneration": st.Generation}})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}
