package agent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dockerclient "github.com/docker/docker/client"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// What a compose file says beyond image and command (logging, ulimits,
// extra hosts, sysctls, shm size, stop signal, swappiness) reaches the
// container Docker runs.
func TestIntegrationComposeOptionsReachDocker(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.startAgent("a1", nil)
	compose := `services:
  opts:
    image: drover-test-app:v1
    logging:
      driver: json-file
      options: {max-size: 1m, max-file: "2"}
    ulimits:
      nofile: {soft: 4096, hard: 8192}
      nproc: 2048
    extra_hosts: ["db.example:10.1.2.3"]
    sysctls: {net.core.somaxconn: "512"}
    shm_size: 128m
    stop_signal: SIGINT
    mem_swappiness: 0
  priv:
    image: drover-test-app:v1
    privileged: true
    security_opt: ["no-new-privileges:false"]
`
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "opts"}, Spec: api.StackSpec{Compose: compose}})
	if err != nil {
		t.Fatal(err)
	}
	var dockerID, privID string
	eventually(t, "the containers run", 60*time.Second, func() error {
		ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(ctrs) != 2 || ctrs[0].Status.State != api.ContainerRunning || ctrs[1].Status.State != api.ContainerRunning {
			return fmt.Errorf("%v %v", ctrs, err)
		}
		for _, ct := range ctrs {
			if strings.Contains(ct.Name, "priv") {
				privID = ct.Status.DockerID
			} else {
				dockerID = ct.Status.DockerID
			}
		}
		return nil
	})
	dc, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	insp, err := dc.ContainerInspect(ctx, dockerID)
	if err != nil {
		t.Fatal(err)
	}
	hc := insp.HostConfig
	if hc.LogConfig.Type != "json-file" || hc.LogConfig.Config["max-size"] != "1m" || hc.LogConfig.Config["max-file"] != "2" {
		t.Errorf("logging: %+v", hc.LogConfig)
	}
	ul := map[string][2]int64{}
	for _, u := range hc.Ulimits {
		ul[u.Name] = [2]int64{u.Soft, u.Hard}
	}
	// (Raising memlock needs CAP_SYS_RESOURCE, which this machine's
	// Docker lacks; nofile and nproc stay within the host's limits.)
	if ul["nofile"] != [2]int64{4096, 8192} || ul["nproc"] != [2]int64{2048, 2048} {
		t.Errorf("ulimits: %v", ul)
	}
	if len(hc.ExtraHosts) != 1 || hc.ExtraHosts[0] != "db.example:10.1.2.3" {
		t.Errorf("extra hosts: %v", hc.ExtraHosts)
	}
	if hc.Sysctls["net.core.somaxconn"] != "512" || hc.ShmSize != 128<<20 || insp.Config.StopSignal != "SIGINT" {
		t.Errorf("sysctls %v, shm %d, stop signal %q", hc.Sysctls, hc.ShmSize, insp.Config.StopSignal)
	}
	if hc.MemorySwappiness == nil || *hc.MemorySwappiness != 0 {
		t.Errorf("mem_swappiness: %v", hc.MemorySwappiness)
	}
	// A privileged container keeps what privileged means (here, without
	// every capability, seccomp unconfined: a runc inside needs keyrings)
	// beside the file's own security options.
	pinsp, err := dc.ContainerInspect(ctx, privID)
	if err != nil {
		t.Fatal(err)
	}
	opts := strings.Join(pinsp.HostConfig.SecurityOpt, " ")
	if !strings.Contains(opts, "no-new-privileges:false") || (!pinsp.HostConfig.Privileged && !strings.Contains(opts, "seccomp=unconfined")) {
		t.Errorf("privileged container: privileged %v, security options %q", pinsp.HostConfig.Privileged, opts)
	}
}

// A health check that never passes says why while the container is
// initializing, and turns it unhealthy once initializing_timeout passes.
func TestIntegrationHealthCheckThatNeverPasses(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.startAgent("a1", nil)
	compose := `services:
  never:
    image: drover-test-app:v1
    x-drover:
      health_check: {port: 9, interval: 300, response_timeout: 300, initializing_timeout: 3000}
`
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "never"}, Spec: api.StackSpec{Compose: compose}})
	if err != nil {
		t.Fatal(err)
	}
	get := func() *api.Container {
		ctrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if len(ctrs) != 1 {
			return nil
		}
		return &ctrs[0]
	}
	eventually(t, "initializing, with the last probe's error", 30*time.Second, func() error {
		ct := get()
		if ct == nil || ct.Status.Health != "initializing" || !strings.HasPrefix(ct.Status.Message, "initializing: last health check failed: ") {
			return fmt.Errorf("%+v", ct)
		}
		return nil
	})
	eventually(t, "unhealthy after initializing_timeout", 30*time.Second, func() error {
		ct := get()
		if ct == nil || ct.Status.Health != "unhealthy" || !strings.HasPrefix(ct.Status.Message, "health check failed: ") {
			return fmt.Errorf("%+v", ct)
		}
		return nil
	})
}
