package agent_test

import (
	"context"
	"fmt"
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
`
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "opts"}, Spec: api.StackSpec{Compose: compose}})
	if err != nil {
		t.Fatal(err)
	}
	var dockerID string
	eventually(t, "the container runs", 60*time.Second, func() error {
		ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(ctrs) != 1 || ctrs[0].Status.State != api.ContainerRunning {
			return fmt.Errorf("%v %v", ctrs, err)
		}
		dockerID = ctrs[0].Status.DockerID
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
}
