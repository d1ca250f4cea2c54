package agent_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/internal/testenv"
)

// cluster is an engine with its scheduler and several agents sharing the
// local Docker Engine (each manages only its own containers: a test setup).
type cluster struct {
	t      testing.TB
	srv    *apiserver.Server
	eng    *client.Client
	token  string
	agents map[string]context.CancelFunc
	done   map[string]chan struct{}
	// states holds each agent's state directory (its kept key).
	states string
	// overlay starts agents with containers on the overlay, their
	// addresses kept in ipamDir.
	overlay bool
	ipamDir string
	agentIP string // reported by the agents started from now on
	label   string // on every container of this cluster's agents
}

func (c *cluster) stateDir(name string) string { return filepath.Join(c.states, name) }

func newCluster(t *testing.T) *cluster { return newClusterTB(t) }

func newClusterTB(t testing.TB) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real Docker Engine); run without -short")
	}
	testenv.BuildTestImage(t)
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{HostLifecycle: hostlifecycle.Options{DisconnectAfter: 2 * time.Second, LostAfter: 4 * time.Second}})
	tok, err := eng.RegistrationTokens().Create(context.Background(), &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, srv: srv, eng: eng, token: tok.Status.Token, agents: map[string]context.CancelFunc{}, done: map[string]chan struct{}{}, states: t.TempDir()}
	// Every container this cluster's agents make carries its label, so
	// cleanup finds them even when the test replaced or stopped the
	// server it began with.
	c.label = fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano())
	t.Cleanup(func() {
		for name := range c.agents {
			c.stopAgent(name)
		}
		testenv.RemoveDockerContainers(labelTestCluster + "=" + c.label)
	})
	return c
}

const labelTestCluster = "io.drover.test.cluster"

func (c *cluster) startAgent(name string, labels map[string]string) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.agents[name], c.done[name] = cancel, done
	go func() {
		defer close(done)
		err := agent.Run(ctx, agent.Options{Server: c.srv.URL(), Token: c.token, Name: name, StateDir: c.stateDir(name), Labels: labels, Logger: testenv.Logger(), Overlay: c.overlay, IPAMDir: c.ipamDir, IP: c.agentIP,
			Heartbeat: 500 * time.Millisecond, Resync: time.Second, ContainerLabels: map[string]string{labelTestCluster: c.label}})
		if err != nil && ctx.Err() == nil {
			c.t.Errorf("agent %s: %v", name, err)
		}
	}()
}

func (c *cluster) stopAgent(name string) {
	if cancel := c.agents[name]; cancel != nil {
		cancel()
		<-c.done[name]
		delete(c.agents, name)
	}
}

func waitHosts(t testing.TB, c *cluster, n int) {
	eventually(t, "hosts active", 20*time.Second, func() error {
		hosts, _, _ := c.eng.Hosts().List(context.Background(), client.ListOptions{})
		active := 0
		for _, h := range hosts {
			if h.Status.State == api.HostActive {
				active++
			}
		}
		if active != n {
			return fmt.Errorf("%d active", active)
		}
		return nil
	})
}

func eventually(t testing.TB, what string, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, limit, err)
}

func (c *cluster) hostIDs() map[string]string {
	hosts, _, _ := c.eng.Hosts().List(context.Background(), client.ListOptions{})
	out := map[string]string{}
	for _, h := range hosts {
		out[h.Name] = h.ID
	}
	return out
}

// running lists the running containers of a service (by service name) as
// host names, checking Docker agrees with the engine.
func (c *cluster) running(stackID, service string) ([]string, error) {
	svcs, _, err := c.eng.Services().List(context.Background(), client.ListOptions{StackID: stackID, Name: service})
	if err != nil || len(svcs) != 1 {
		return nil, fmt.Errorf("service %s: %v (%d)", service, err, len(svcs))
	}
	ctrs, _, err := c.eng.Containers().List(context.Background(), client.ListOptions{ServiceID: svcs[0].ID})
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for n, id := range c.hostIDs() {
		names[id] = n
	}
	var out []string
	for _, ct := range ctrs {
		if ct.Status.State != api.ContainerRunning || ct.Status.PrimaryIP == "" {
			return nil, fmt.Errorf("%s is %s (%s)", ct.Name, ct.Status.State, ct.Status.Message)
		}
		state, err := exec.Command("docker", "inspect", "-f", "{{.State.Running}}", ct.Status.DockerID).Output()
		if err != nil || strings.TrimSpace(string(state)) != "true" {
			return nil, fmt.Errorf("docker does not run %s (%s)", ct.Name, ct.Status.DockerID)
		}
		out = append(out, names[ct.Spec.HostID]+map[bool]string{true: "", false: "/" + ct.Spec.LaunchConfigName}[ct.Spec.LaunchConfigName == ""])
	}
	sort.Strings(out)
	return out, nil
}

const compose = `services:
  web:
    image: drover-test-app:v1
    environment:
      VERSION: "1"
    labels:
      io.rancher.scheduler.affinity:host_label: zone=a
      io.rancher.sidekicks: logger
    x-drover:
      scale: 2
      health_check: {port: 8080, request_line: GET /healthz, interval: 500, healthy_threshold: 1, unhealthy_threshold: 2}
  logger:
    image: drover-test-app:v1
    environment:
      PORT: "9090"
    volumes_from:
      - web
  monitor:
    image: drover-test-app:v1
    labels:
      io.rancher.scheduler.global: "true"
  batch:
    image: drover-test-app:v1
    labels:
      io.drover.scheduler.affinity:host_label_ne: zone=a
`

func TestIntegrationStacksOnHosts(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.startAgent("h1", map[string]string{"zone": "a"})
	c.startAgent("h2", map[string]string{"zone": "a"})
	c.startAgent("h3", map[string]string{"zone": "b"})
	eventually(t, "three active hosts", 20*time.Second, func() error {
		hosts, _, _ := c.eng.Hosts().List(ctx, client.ListOptions{})
		active := 0
		for _, h := range hosts {
			if h.Status.State == api.HostActive && h.Status.DockerVersion != "" {
				active++
			}
		}
		if active != 3 {
			return fmt.Errorf("%d active", active)
		}
		return nil
	})
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "app"}, Spec: api.StackSpec{Compose: compose}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "stack placed and running", 60*time.Second, func() error {
		web, err := c.running(st.ID, "web")
		if err != nil {
			return err
		}
		// 2 units of web+logger, spread over the zone=a hosts.
		if strings.Join(web, ",") != "h1,h1/logger,h2,h2/logger" {
			return fmt.Errorf("web on %v", web)
		}
		mon, err := c.running(st.ID, "monitor")
		if err != nil || strings.Join(mon, ",") != "h1,h2,h3" {
			return fmt.Errorf("monitor on %v %v", mon, err)
		}
		batch, err := c.running(st.ID, "batch")
		if err != nil || strings.Join(batch, ",") != "h3" {
			return fmt.Errorf("batch on %v %v", batch, err)
		}
		return nil
	})
	// A sidekick's volumes_from names its unit's primary.
	loggerCtrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.launch.config=logger"})
	for _, lg := range loggerCtrs {
		out, err := exec.Command("docker", "inspect", "-f", "{{json .HostConfig.VolumesFrom}}", lg.Status.DockerID).Output()
		if err != nil || !strings.Contains(string(out), "dr-app-web-") {
			t.Fatalf("logger %s volumes_from: %s %v", lg.Name, out, err)
		}
	}
	eventually(t, "health checks pass and roll up", 30*time.Second, func() error {
		s, err := c.eng.Stacks().Get(ctx, st.ID)
		if err != nil || s.Status.State != "active" || s.Status.Health != "healthy" {
			return fmt.Errorf("stack %+v %v", s.Status, err)
		}
		ctrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.name=web,io.drover.service.launch.config=io.drover.service.primary.launch.config"})
		for _, ct := range ctrs {
			if ct.Status.Health != "healthy" {
				return fmt.Errorf("%s health %q", ct.Name, ct.Status.Health)
			}
		}
		return nil
	})

	// Kill a container: restarted. Remove one behind the agent's back: recreated.
	ctrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.name=batch"})
	victim := ctrs[0]
	if out, err := exec.Command("docker", "kill", victim.Status.DockerID).CombinedOutput(); err != nil {
		t.Fatalf("docker kill: %v %s", err, out)
	}
	eventually(t, "killed container restarted", 30*time.Second, func() error {
		ct, err := c.eng.Containers().Get(ctx, victim.ID)
		if err != nil || ct.Status.State != api.ContainerRunning || ct.Status.StartCount <= victim.Status.StartCount {
			return fmt.Errorf("%+v %v", ct.Status, err)
		}
		return nil
	})
	if out, err := exec.Command("docker", "rm", "-f", victim.Status.DockerID).CombinedOutput(); err != nil {
		t.Fatalf("docker rm: %v %s", err, out)
	}
	eventually(t, "removed container recreated", 30*time.Second, func() error {
		ct, err := c.eng.Containers().Get(ctx, victim.ID)
		if err != nil || ct.Status.State != api.ContainerRunning || ct.Status.DockerID == victim.Status.DockerID {
			return fmt.Errorf("%+v %v", ct.Status, err)
		}
		return nil
	})

	// A unit that lost a part (a sidekick deleted by hand) is made whole.
	loggers, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.launch.config=logger"})
	if len(loggers) != 2 {
		t.Fatalf("%d logger sidekicks", len(loggers))
	}
	if _, err := c.eng.Containers().Delete(ctx, loggers[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "incomplete unit repaired", 60*time.Second, func() error {
		web, err := c.running(st.ID, "web")
		if err != nil || strings.Join(web, ",") != "h1,h1/logger,h2,h2/logger" {
			return fmt.Errorf("web on %v %v", web, err)
		}
		return nil
	})

	// Scale up: the new unit lands on a zone=a host.
	svcs, _, _ := c.eng.Services().List(ctx, client.ListOptions{StackID: st.ID, Name: "web"})
	if _, err := c.eng.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": strings.Replace(compose, "scale: 2", "scale: 3", 1)}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "scaled to 3", 60*time.Second, func() error {
		web, err := c.running(st.ID, "web")
		if err != nil || len(web) != 6 {
			return fmt.Errorf("web on %v %v", web, err)
		}
		for _, h := range web {
			if strings.HasPrefix(h, "h3") {
				return fmt.Errorf("web on zone b: %v", web)
			}
		}
		return nil
	})

	// Upgrade: a new image version replaces containers in batches.
	if _, err := c.eng.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": strings.ReplaceAll(strings.Replace(compose, "scale: 2", "scale: 3", 1), `VERSION: "1"`, `VERSION: "2"`)}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "upgraded to version 2", 90*time.Second, func() error {
		ctrs, _, _ := c.eng.Containers().List(ctx, client.ListOptions{ServiceID: svcs[0].ID, LabelSelector: "io.drover.service.launch.config=io.drover.service.primary.launch.config"})
		if len(ctrs) != 3 {
			return fmt.Errorf("%d web containers", len(ctrs))
		}
		for _, ct := range ctrs {
			if ct.Spec.LaunchConfig.Environment["VERSION"] != "2" || ct.Status.State != api.ContainerRunning {
				return fmt.Errorf("%s: version %s %s", ct.Name, ct.Spec.LaunchConfig.Environment["VERSION"], ct.Status.State)
			}
		}
		return nil
	})

	// An agent gone past the timeout: its containers move to the others.
	c.stopAgent("h2")
	eventually(t, "h2's web units placed on h1", 60*time.Second, func() error {
		web, err := c.running(st.ID, "web")
		if err != nil {
			return err
		}
		for _, h := range web {
			if !strings.HasPrefix(h, "h1") {
				return fmt.Errorf("web on %v", web)
			}
		}
		if len(web) != 6 {
			return fmt.Errorf("web on %v", web)
		}
		return nil
	})

	// Scale down: the highest-numbered units go, in Docker too.
	if _, err := c.eng.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": strings.ReplaceAll(strings.Replace(compose, "scale: 2", "scale: 1", 1), `VERSION: "1"`, `VERSION: "2"`)}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "scaled down to 1", 60*time.Second, func() error {
		web, err := c.running(st.ID, "web")
		if err != nil || len(web) != 2 {
			return fmt.Errorf("web on %v %v", web, err)
		}
		out, _ := exec.Command("docker", "ps", "-q", "--filter", "label=io.drover.service.name=web", "--filter", "label="+agent.LabelHostID+"="+c.hostIDs()["h1"]).Output()
		if n := len(strings.Fields(string(out))); n != 2 {
			return fmt.Errorf("docker runs %d web containers on h1", n)
		}
		return nil
	})

	// Removing the stack removes everything, in Docker too.
	if _, err := c.eng.Stacks().Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	ids := c.hostIDs()
	eventually(t, "stack's containers gone from Docker", 30*time.Second, func() error {
		for _, n := range []string{"h1", "h3"} {
			out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+agent.LabelHostID+"="+ids[n]).Output()
			if len(strings.Fields(string(out))) > 0 {
				return fmt.Errorf("%s still has containers", n)
			}
		}
		return nil
	})
}

// A restarted agent re-registers with the key it kept, without a token,
// gets its own host back, and the kept file is readable by its user only.
func TestIntegrationAgentKeepsItsKey(t *testing.T) {
	c := newCluster(t)
	c.startAgent("keeper", nil)
	waitHosts(t, c, 1)
	first := c.hostIDs()["keeper"]
	c.stopAgent("keeper")
	fi, err := os.Stat(filepath.Join(c.stateDir("keeper"), "agent-key.json"))
	if err != nil {
		t.Fatalf("the agent kept no key: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("agent-key.json has mode %v, want 0600", fi.Mode().Perm())
	}
	c.token = "" // only the kept key now
	c.startAgent("keeper", nil)
	eventually(t, "the restarted agent's host active again", 20*time.Second, func() error {
		h, err := c.eng.Hosts().Get(context.Background(), first)
		if err != nil {
			return err
		}
		if h.Status.State != api.HostActive {
			return fmt.Errorf("state %s", h.Status.State)
		}
		if ids := c.hostIDs(); len(ids) != 1 || ids["keeper"] != first {
			return fmt.Errorf("hosts %v, want keeper=%s only", ids, first)
		}
		return nil
	})
}

// Service containers join the overlay: an address of the host's subnet
// from the allocator (kept across agent restarts, released when the
// container goes), 169.254.169.250 as nameserver and the stack's search
// list; network_mode none keeps its meaning.
func TestIntegrationContainersOnTheOverlay(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	c.overlay, c.ipamDir = true, t.TempDir()
	t.Cleanup(func() {
		c.stopAgent("ov")
		for _, id := range c.hostIDs() {
			testenv.RemoveDockerContainers(agent.LabelHostID + "=" + id)
		}
		exec.Command("docker", "network", "rm", agent.OverlayNetwork).Run()
	})
	c.startAgent("ov", nil)
	waitHosts(t, c, 1)
	host, err := c.eng.Hosts().Get(ctx, c.hostIDs()["ov"])
	if err != nil {
		t.Fatal(err)
	}
	_, subnet, err := net.ParseCIDR(host.Status.Subnet)
	if err != nil {
		t.Fatalf("host subnet %q: %v", host.Status.Subnet, err)
	}
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "ovl"}, Spec: api.StackSpec{Compose: `services:
  web:
    image: drover-test-app:v1
    labels:
      io.rancher.sidekicks: side
    x-drover:
      scale: 2
  side:
    image: drover-test-app:v1
    environment:
      PORT: "9090"
    network_mode: container:web
  quiet:
    image: drover-test-app:v1
    network_mode: none
`}})
	if err != nil {
		t.Fatal(err)
	}
	webIPs := func() (map[string]string, error) {
		ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.name=web,io.drover.service.launch.config=io.drover.service.primary.launch.config"})
		if err != nil {
			return nil, err
		}
		out := map[string]string{}
		for _, ct := range ctrs {
			if ct.Status.State != api.ContainerRunning || ct.Status.PrimaryIP == "" {
				return nil, fmt.Errorf("%s is %s at %q", ct.Name, ct.Status.State, ct.Status.PrimaryIP)
			}
			out[ct.ID] = ct.Status.PrimaryIP
		}
		return out, nil
	}
	var ips map[string]string
	eventually(t, "web running on the overlay", 60*time.Second, func() (err error) {
		if ips, err = webIPs(); err == nil && len(ips) != 2 {
			err = fmt.Errorf("%d web containers", len(ips))
		}
		return err
	})
	seen := map[string]bool{}
	for id, ip := range ips {
		if !subnet.Contains(net.ParseIP(ip)) || seen[ip] {
			t.Fatalf("web containers at %v: want distinct addresses of %s", ips, subnet)
		}
		seen[ip] = true
		// Real traffic: this namespace reaches it through drover0.
		resp, err := http.Get("http://" + ip + ":8080/")
		if err != nil {
			t.Fatalf("GET web container %s at %s: %v", id, ip, err)
		}
		resp.Body.Close()
		ct, _ := c.eng.Containers().Get(ctx, id)
		out, err := exec.Command("docker", "inspect", "-f", "{{json .HostConfig.DNS}} {{json .HostConfig.DNSSearch}} {{.HostConfig.NetworkMode}}", ct.Status.DockerID).Output()
		if err != nil || !strings.Contains(string(out), `["169.254.169.250"]`) || !strings.Contains(string(out), "ovl.drover.internal") || !strings.Contains(string(out), agent.OverlayNetwork) {
			t.Fatalf("web container's DNS and network: %s %v", out, err)
		}
	}
	// Each sidekick shares its primary's namespace, and so its address.
	eventually(t, "sidekicks on their primaries' addresses", 60*time.Second, func() error {
		sides, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.launch.config=side"})
		if err != nil || len(sides) != 2 {
			return fmt.Errorf("%d sidekicks (%v)", len(sides), err)
		}
		for _, sd := range sides {
			if sd.Status.State != api.ContainerRunning || !seen[sd.Status.PrimaryIP] {
				return fmt.Errorf("sidekick %s is %s at %q; primaries at %v", sd.Name, sd.Status.State, sd.Status.PrimaryIP, ips)
			}
			resp, err := http.Get("http://" + sd.Status.PrimaryIP + ":9090/")
			if err != nil {
				return fmt.Errorf("GET the sidekick at %s:9090: %w", sd.Status.PrimaryIP, err)
			}
			resp.Body.Close()
		}
		return nil
	})
	quiet, _, _ := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID, LabelSelector: "io.drover.service.name=quiet"})
	if len(quiet) != 1 {
		t.Fatalf("%d quiet containers", len(quiet))
	}
	eventually(t, "quiet running", 30*time.Second, func() error {
		q, err := c.eng.Containers().Get(ctx, quiet[0].ID)
		if err != nil || q.Status.State != api.ContainerRunning {
			return fmt.Errorf("%+v %v", q.Status, err)
		}
		if q.Status.PrimaryIP != "" {
			t.Fatalf("network_mode none got address %s", q.Status.PrimaryIP)
		}
		return nil
	})

	// A restarted agent keeps the addresses it gave.
	c.stopAgent("ov")
	c.startAgent("ov", nil)
	time.Sleep(2 * time.Second)
	after, err := webIPs()
	if err != nil || fmt.Sprint(after) != fmt.Sprint(ips) {
		t.Fatalf("after an agent restart: %v %v, want %v", after, err, ips)
	}
	// Scaled down (the stack's file says so): the removed container's
	// address is released.
	if _, err := c.eng.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": strings.Replace(st.Spec.Compose, "scale: 2", "scale: 1", 1)}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the removed container's address released", 60*time.Second, func() error {
		entries, err := os.ReadDir(filepath.Join(c.ipamDir, strings.ReplaceAll(subnet.String(), "/", "_")))
		if err != nil {
			return err
		}
		if len(entries) != 1 {
			now, _ := webIPs()
			return fmt.Errorf("%d addresses held; web containers now %v", len(entries), now)
		}
		return nil
	})
}
