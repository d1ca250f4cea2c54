package integration_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/scheduler"
)

// The placement and upgrade controllers together roll a service to a new
// launch config in batches: start-first never runs fewer than scale units
// nor more than scale+batch; stop-first never fewer than scale-batch nor
// more than scale. A stand-in agent (the engine's agent API, no Docker)
// reports every container running.
func TestIntegrationRollingUpgrades(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, controllers); run without -short")
	}
	for _, startFirst := range []bool{true, false} {
		t.Run(map[bool]string{true: "start-first", false: "stop-first"}[startFirst], func(t *testing.T) {
			rollingUpgrade(t, startFirst)
		})
	}
}

func rollingUpgrade(t *testing.T, startFirst bool) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{})
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := client.New(srv.URL(), "", "").Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "up-host"})
	if err != nil {
		t.Fatal(err)
	}
	ag := client.New(srv.URL(), reg.AccessKey, reg.SecretKey)
	// The stand-in agent: renew the lease, report every container running.
	go func() {
		lease := &agent.LeaseRenewer{Engine: ag, HostID: reg.Host.ID, Duration: 5 * time.Second}
		for ctx.Err() == nil {
			lease.Renew(ctx)
			cs, _, _ := ag.Containers().List(ctx, client.ListOptions{HostID: reg.Host.ID})
			for _, c := range cs {
				if c.Status.State != api.ContainerRunning {
					ag.Containers().PatchStatus(ctx, c.ID, map[string]any{"status": map[string]any{"state": api.ContainerRunning}})
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "roll"}})
	if err != nil {
		t.Fatal(err)
	}
	const scale, batch = 4, 2
	n := scale
	svc, err := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "web"}, Spec: api.ServiceSpec{StackID: st.ID, Scale: &n,
		LaunchConfig: &api.LaunchConfig{Image: "app:v1"}, Upgrade: &api.UpgradeConfig{BatchSize: batch, IntervalMs: 100, StartFirst: startFirst}}})
	if err != nil {
		t.Fatal(err)
	}
	count := func() (total, current, running int) {
		cs, _, err := eng.Containers().List(ctx, client.ListOptions{ServiceID: svc.ID})
		if err != nil {
			t.Fatal(err)
		}
		cur, _ := eng.Services().Get(ctx, svc.ID)
		for i := range cs {
			total++
			if cur != nil && !scheduler.Outdated(cur, &cs[i]) {
				current++
			}
			if cs[i].Status.State == api.ContainerRunning {
				running++
			}
		}
		return
	}
	testenv.Eventually(t, "service placed and running", 30*time.Second, func() error {
		if total, _, running := count(); total != scale || running != scale {
			return fmt.Errorf("%d containers, %d running; want %d", total, running, scale)
		}
		return nil
	})
	if _, err := eng.Services().Patch(ctx, svc.ID, map[string]any{"spec": map[string]any{"launchConfig": map[string]any{"image": "app:v2"}}}); err != nil {
		t.Fatal(err)
	}
	low, high := scale, scale+batch
	if !startFirst {
		low, high = scale-batch, scale
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		total, current, running := count()
		if total < low || total > high {
			t.Fatalf("%d units during the upgrade; want between %d and %d", total, low, high)
		}
		if total == scale && current == scale && running == scale {
			break
		}
		if time.Now().After(deadline) {
			s, _ := eng.Services().Get(ctx, svc.ID)
			t.Fatalf("upgrade did not finish: %d units, %d current, %d running; status %+v", total, current, running, s.Status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	testenv.Eventually(t, "upgrade closed in the status", 10*time.Second, func() error {
		s, err := eng.Services().Get(ctx, svc.ID)
		if err != nil {
			return err
		}
		c := api.FindCondition(s.Status.Conditions, "Upgraded")
		if s.Status.Upgrade != nil || c == nil || c.Status != api.ConditionTrue || s.Status.State != "active" {
			return fmt.Errorf("status %+v", s.Status)
		}
		return nil
	})
}
