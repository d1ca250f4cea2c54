package apiserver_test

import (
	"context"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// Spec and status have different writers: a write through one path never
// changes the other, and generation moves with spec alone.
func TestIntegrationStatusSubresource(t *testing.T) {
	integration(t)
	ctx := context.Background()
	_, c := testenv.StartServer(t, apiserver.Options{})
	st := mustStack(t, c, "gen")
	if st.Generation != 1 {
		t.Fatalf("new object generation = %d, want 1", st.Generation)
	}
	st, err := c.Stacks().Patch(ctx, st.ID, map[string]any{"labels": map[string]any{"a": "b"}, "status": map[string]any{"state": "hacked"}})
	if err != nil || st.Generation != 1 || st.Status.State == "hacked" {
		t.Fatalf("label change: generation %d, status %q, %v; want 1 and status untouched by the main path", st.Generation, st.Status.State, err)
	}
	st, err = c.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"answers": map[string]any{"x": "1"}}})
	if err != nil || st.Generation != 2 {
		t.Fatalf("spec change: generation %d, %v; want 2", st.Generation, err)
	}
	st, err = c.Stacks().PatchStatus(ctx, st.ID, map[string]any{"spec": map[string]any{"answers": map[string]any{"x": "2"}}, "status": map[string]any{"state": "active", "observedGeneration": 2}})
	if err != nil || st.Status.State != "active" || st.Status.ObservedGeneration != 2 || st.Spec.Answers["x"] != "1" || st.Generation != 2 {
		t.Fatalf("status write: %+v %v; want status set, spec and generation untouched", st, err)
	}
	// Conditions merge by type: two owners never erase each other.
	cond := func(typ, status, owner string) map[string]any {
		return map[string]any{"status": map[string]any{"conditions": []any{map[string]any{"type": typ, "status": status, "owner": owner}}}}
	}
	if _, err := c.Stacks().PatchStatus(ctx, st.ID, cond("A", "True", "one")); err != nil {
		t.Fatal(err)
	}
	st, err = c.Stacks().PatchStatus(ctx, st.ID, cond("B", "False", "two"))
	if err != nil || len(st.Status.Conditions) != 2 || st.Status.State != "active" {
		t.Fatalf("conditions after two owners: %+v %v", st.Status, err)
	}
	st, _ = c.Stacks().PatchStatus(ctx, st.ID, cond("A", "False", "one"))
	if a := api.FindCondition(st.Status.Conditions, "A"); a == nil || a.Status != "False" || len(st.Status.Conditions) != 2 {
		t.Fatalf("condition A replaced in place: %+v", st.Status.Conditions)
	}
	st, _ = c.Stacks().PatchStatus(ctx, st.ID, map[string]any{"status": map[string]any{"conditions": []any{map[string]any{"type": "A", "status": nil}}}})
	if len(st.Status.Conditions) != 1 || st.Status.Conditions[0].Type != "B" {
		t.Fatalf("condition A removed: %+v", st.Status.Conditions)
	}
	// The server keeps some statuses itself.
	keys, _, _ := c.APIKeys().List(ctx, client.ListOptions{})
	if _, err := c.APIKeys().PatchStatus(ctx, keys[0].ID, map[string]any{"status": map[string]any{"secretKey": "x"}}); !api.IsStatus(err, 405) {
		t.Fatalf("writing an API key's status: want 405, got %v", err)
	}
}

// A finalizer holds a deleted object until its owner removes it; none can
// be added once the deletion started.
func TestIntegrationFinalizers(t *testing.T) {
	integration(t)
	ctx := context.Background()
	_, c := testenv.StartServer(t, apiserver.Options{})
	n, err := c.Networks().Create(ctx, &api.Network{Meta: api.Meta{Name: "held", Finalizers: []string{"example.com/cleanup"}}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Networks().Delete(ctx, n.ID)
	if err != nil || d.DeletionTimestamp == nil {
		t.Fatalf("delete: %+v %v; want it marked", d, err)
	}
	again, err := c.Networks().Delete(ctx, n.ID)
	if err != nil || !again.DeletionTimestamp.Equal(*d.DeletionTimestamp) {
		t.Fatalf("second delete: %+v %v; want the same marking", again, err)
	}
	if _, err := c.Networks().Patch(ctx, n.ID, map[string]any{"finalizers": []any{"example.com/cleanup", "example.com/more"}}); !api.IsStatus(err, 422) {
		t.Fatalf("adding a finalizer while deleting: want 422, got %v", err)
	}
	if got, err := c.Networks().Get(ctx, n.ID); err != nil || got.DeletionTimestamp == nil {
		t.Fatalf("held object: %+v %v", got, err)
	}
	if _, err := c.Networks().Patch(ctx, n.ID, map[string]any{"finalizers": []any{}}); err != nil {
		t.Fatalf("removing the last finalizer: %v", err)
	}
	if _, err := c.Networks().Get(ctx, n.ID); !api.IsNotFound(err) {
		t.Fatalf("after the last finalizer: want 404, got %v", err)
	}
	// The name is free again.
	if _, err := c.Networks().Create(ctx, &api.Network{Meta: api.Meta{Name: "held"}}); err != nil {
		t.Fatalf("name after deletion: %v", err)
	}
}
