package scheduler

import (
	"context"
	"fmt"

	"github.com/drover/drover/api"
	"github.com/drover/drover/stacks"
)

// LabelStackManaged marks services a compose stack declares; the stack
// controller removes them when the file no longer does.
const LabelStackManaged = "io.drover.stack.managed"

// syncStack turns a compose stack's files into its services: creates what
// is new, replaces the spec of what changed (the scheduler then upgrades its
// containers in batches), deletes what the file dropped, and rolls the
// services' state up into the stack's status.
func (c *Controller) syncStack(ctx context.Context, st *api.Stack) error {
	if st.Spec.Kind != api.StackCompose || st.Deleting() {
		return nil
	}
	var want []stacks.Service
	if st.Spec.Compose != "" {
		var err error
		want, err = stacks.ParseSpec(ctx, st.Name, st.Spec)
		if err != nil {
			return c.setStackStatus(ctx, st, "error", "", err.Error())
		}
	}
	have := map[string]*api.Service{}
	for _, s := range c.services.List() {
		if s.Spec.StackID == st.ID && s.Labels[LabelStackManaged] == "true" && !s.Deleting() {
			have[s.Name] = s
		}
	}
	for _, w := range want {
		labels := map[string]string{LabelStackManaged: "true"}
		for k, v := range w.Labels {
			labels[k] = v
		}
		spec := w.Spec
		spec.StackID = st.ID
		cur := have[w.Name]
		delete(have, w.Name)
		if cur == nil {
			if _, err := c.eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: w.Name, Labels: labels}, Spec: spec}); err != nil && !api.IsConflict(err) {
				return fmt.Errorf("creating service %s: %w", w.Name, err)
			}
			continue
		}
		if sameJSON(cur.Spec, spec) && sameJSON(cur.Labels, labels) {
			continue
		}
		next := *cur
		next.Spec, next.Labels = spec, labels
		if _, err := c.eng.Services().Update(ctx, cur.ID, &next); err != nil {
			return fmt.Errorf("updating service %s: %w", w.Name, err)
		}
	}
	for _, gone := range have {
		if _, err := c.eng.Services().Delete(ctx, gone.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("deleting service %s: %w", gone.Name, err)
		}
	}
	// Roll up.
	state, health, total, active := "active", "healthy", 0, 0
	for _, s := range c.services.List() {
		if s.Spec.StackID != st.ID {
			continue
		}
		total++
		switch s.Status.State {
		case "active":
			active++
		case "error":
			state = "error"
		case "upgrading":
			if state != "error" {
				state = "upgrading"
			}
		default:
			if state == "active" {
				state = "activating"
			}
		}
		if s.Status.Health != "healthy" && s.Status.Health != "" && health == "healthy" {
			health = s.Status.Health
		}
	}
	if total < len(want) && state == "active" {
		state = "activating"
	}
	return c.setStackStatus(ctx, st, state, health, fmt.Sprintf("%d of %d services active", active, max(total, len(want))))
}

func (c *Controller) setStackStatus(ctx context.Context, st *api.Stack, state, health, msg string) error {
	if st.Status.State == state && st.Status.Health == health && st.Status.Message == msg && st.Status.ObservedGeneration == st.Generation {
		return nil
	}
	_, err := c.eng.Stacks().PatchStatus(ctx, st.ID, map[string]any{"status": map[string]any{"state": state, "health": health, "message": msg, "observedGeneration": st.Generation}})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}
