package agent_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

const small = `services:
  api:
    image: drover-test-app:v1
    x-drover: {scale: 4}
  side:
    image: drover-test-app:v1
    labels:
      io.drover.scheduler.global: "true"
`

// The engine goes away mid-deploy and comes back: the deploy completes.
// While it is away, the agent keeps every container running and restarts
// one that dies; its status catches up when the engine returns.
func TestIntegrationEngineOutage(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.startAgent("o1", nil)
	c.startAgent("o2", nil)
	eventually(t, "two active hosts", 20*time.Second, func() error {
		hosts, _, _ := c.eng.Hosts().List(ctx, client.ListOptions{})
		if len(hosts) != 2 || hosts[0].Status.State != api.HostActive || hosts[1].Status.State != api.HostActive {
			return fmt.Errorf("%d hosts", len(hosts))
		}
		return nil
	})
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "mid"}, Spec: api.StackSpec{Compose: small}})
	if err != nil {
		t.Fatal(err)
	}
	// Restart the server at once, before the deploy can finish.
	addr := strings.TrimPrefix(c.srv.URL(), "http://")
	data := c.srv.CredentialsPath()[:len(c.srv.CredentialsPath())-len("/credentials.json")]
	c.srv.Close()
	time.Sleep(500 * time.Millisecond)
	// The controllers of the first server keep running and reconnect.
	c.srv, c.eng = testenv.StartServer(t, apiserver.Options{DataDir: data, Listen: addr})
	eventually(t, "deploy completes after the restart", 60*time.Second, func() error {
		api1, err := c.running(st.ID, "api")
		if err != nil || len(api1) != 4 {
			return fmt.Errorf("api on %v %v", api1, err)
		}
		side, err := c.running(st.ID, "side")
		if err != nil || len(side) != 2 {
			return fmt.Errorf("side on %v %v", side, err)
		}
		return nil
	})

	// Now the engine is away for a while.
	ctrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
	c.srv.Close()
	for _, ct := range ctrs {
		out, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}}", ct.Status.DockerID).Output()
		if err != nil || strings.TrimSpace(string(out)) != "true" {
			t.Fatalf("container %s stopped when the engine went away", ct.Name)
		}
	}
	victim := ctrs[0]
	if out, err := exec.Command("docker", "kill", victim.Status.DockerID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	eventually(t, "the agent restarts a dead container with no engine", 30*time.Second, func() error {
		out, _ := exec.Command("docker", "inspect", "-f", "{{.State.Running}}", victim.Status.DockerID).Output()
		if strings.TrimSpace(string(out)) != "true" {
			return fmt.Errorf("%s not running", victim.Name)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	c.srv, c.eng = testenv.StartServer(t, apiserver.Options{DataDir: data, Listen: addr})
	eventually(t, "status catches up when the engine returns", 30*time.Second, func() error {
		ct, err := c.eng.Containers().Get(ctx, victim.ID)
		if err != nil || ct.Status.StartCount <= victim.Status.StartCount || ct.Status.State != api.ContainerRunning {
			return fmt.Errorf("%+v %v", ct.Status, err)
		}
		return nil
	})
	// Nothing was recreated: the same Docker containers still serve.
	for _, ct := range ctrs {
		var got *api.Container
		eventually(t, "reading "+ct.Name+" from the restarted engine", 10*time.Second, func() error {
			var err error
			got, err = c.eng.Containers().Get(ctx, ct.ID)
			return err
		})
		if got.Status.DockerID != ct.Status.DockerID {
			t.Fatalf("container %s was recreated across the outage: Docker id %s, was %s", ct.Name, got.Status.DockerID, ct.Status.DockerID)
		}
	}
}

// An agent that restarts adopts its containers (found by their labels)
// instead of recreating them.
func TestIntegrationAgentRestartAdopts(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.startAgent("a1", nil)
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "adopt"}, Spec: api.StackSpec{Compose: small}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "deployed", 60*time.Second, func() error {
		a, err := c.running(st.ID, "api")
		if err != nil || len(a) != 4 {
			return fmt.Errorf("%v %v", a, err)
		}
		return nil
	})
	before, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
	c.stopAgent("a1")
	c.startAgent("a1", nil)
	time.Sleep(3 * time.Second) // several reconcile passes
	after, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
	ids := map[string]string{}
	for _, ct := range after {
		ids[ct.ID] = ct.Status.DockerID
	}
	for _, ct := range before {
		if ids[ct.ID] != ct.Status.DockerID {
			t.Fatalf("container %s was recreated by the restarted agent (%s -> %s)", ct.Name, ct.Status.DockerID, ids[ct.ID])
		}
	}
}
