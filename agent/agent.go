// Package agent is the per-host agent: it registers its host with the
// engine, heartbeats, and keeps the host's Docker Engine running exactly the
// containers the engine placed on it, reporting their state and health.
//
// The agent keeps every container running while the engine is unreachable:
// its watch cache keeps the last desired state, and reconciling needs only
// Docker. Status catches up when the engine returns.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"time"

	dockerclient "github.com/docker/docker/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/backoff"
	"github.com/drover/drover/internal/lifecycle"
	overlay "github.com/drover/drover/net"
)

// Options configure an agent.
type Options struct {
	Server string // engine URL
	Token  string // registration token (not needed once StateDir holds a key)
	// Overlay puts service containers on the host's subnet of the managed
	// network (Docker network "drover" on drover0); IPAMDir keeps their
	// addresses (default /var/lib/drover/ipam, shared with the CNI plugin).
	Overlay bool
	IPAMDir string
	// StateDir keeps the agent key the engine issued (agent-key.json, mode
	// 0600): a restarted agent re-registers with it, as a host that exists
	// is not handed to a mere token holder (default /var/lib/drover/agent).
	StateDir string
	// LBImage runs load balancer containers (default drover/lb-haproxy:latest;
	// drover agent passes its own version's).
	LBImage    string
	Name       string            // host name (default: the machine's)
	Labels     map[string]string // host labels, set at first registration
	IP         string            // agent IP reported to the engine
	DockerHost string            // e.g. unix:///var/run/docker.sock (default: DOCKER_HOST or the default socket)
	Logger     *slog.Logger
	Listen     string // /healthz and /metrics ("" serves nothing)
	// Heartbeat is how often the host reports in (default 5s); Resync how
	// often Docker is checked even without events (default 10s).
	Heartbeat time.Duration
	Resync    time.Duration
	// ContainerLabels go on every Docker container this agent makes, so
	// they can be found without the engine (tests clean up by them).
	ContainerLabels map[string]string
}

// Agent is a running host agent.
type Agent struct {
	opts   Options
	log    *slog.Logger
	docker *dockerclient.Client
	eng    *client.Client
	host   api.Host
	ctrs   *client.Cache[api.Container, *api.Container]
	svcs   *client.Cache[api.Service, *api.Service]
	certs  *client.Cache[api.Certificate, *api.Certificate]
	kick   chan struct{}
	// certKick wakes refreshCertificates; certFP is, by container, the
	// certificate revisions its files were last written from.
	certKick chan struct{}
	certFP   map[string]string
	reg      *prometheus.Registry
	metrics  agentMetrics

	ipam *overlay.IPAM // nil: containers stay on Docker's default bridge

	mu      sync.Mutex
	backoff map[string]*crashBackoff // by engine container id
	health  *healthChecker
}

// Run registers and runs the agent until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.StateDir == "" {
		opts.StateDir = "/var/lib/drover/agent"
	}
	if opts.IPAMDir == "" {
		opts.IPAMDir = overlay.DefaultIPAMDir
	}
	if opts.Server == "" {
		return errors.New("agent: --server is required")
	}
	if opts.Token == "" && loadAgentKey(opts.StateDir, opts.Server, opts.Name) == nil {
		return fmt.Errorf("agent: --token is required (no agent key kept in %s for this engine and host)", opts.StateDir)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Name == "" {
		opts.Name, _ = os.Hostname()
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 5 * time.Second
	}
	if opts.LBImage == "" {
		opts.LBImage = "drover/lb-haproxy:latest"
	}
	if opts.Resync == 0 {
		opts.Resync = 10 * time.Second
	}
	dopts := []dockerclient.Opt{dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation()}
	if opts.DockerHost != "" {
		dopts = append(dopts, dockerclient.WithHost(opts.DockerHost))
	}
	d, err := dockerclient.NewClientWithOpts(dopts...)
	if err != nil {
		return fmt.Errorf("agent: docker client: %w", err)
	}
	defer d.Close()
	a := &Agent{opts: opts, log: opts.Logger.With("component", "agent", "host", opts.Name), docker: d, kick: make(chan struct{}, 1), certKick: make(chan struct{}, 1), certFP: map[string]string{}, backoff: map[string]*crashBackoff{}, reg: prometheus.NewRegistry()}
	a.metrics = newAgentMetrics(a.reg)
	if err := a.register(ctx); err != nil {
		return err
	}
	if opts.Overlay {
		ipam, err := a.setupOverlay(ctx)
		if err != nil {
			return fmt.Errorf("agent: overlay: %w", err)
		}
		a.ipam = ipam
	}
	a.health = newHealthChecker(a)
	a.ctrs = client.NewCache(a.eng.Containers(), client.ListOptions{HostID: a.host.ID}, client.Handlers[api.Container]{
		OnAdd: func(*api.Container) { a.poke() }, OnUpdate: func(o, n *api.Container) {
			if !sameSpec(o, n) {
				a.poke()
			}
		}, OnDelete: func(*api.Container) { a.poke() },
	}, a.log)
	a.svcs = client.NewCache(a.eng.Services(), client.ListOptions{}, client.Handlers[api.Service]{}, a.log)
	kickCerts := func() {
		select {
		case a.certKick <- struct{}{}:
		default:
		}
	}
	a.certs = client.NewCache(a.eng.Certificates(), client.ListOptions{}, client.Handlers[api.Certificate]{
		OnAdd: func(*api.Certificate) { kickCerts() }, OnUpdate: func(_, _ *api.Certificate) { kickCerts() },
	}, a.log)
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(a.ctrs.Run)
	run(a.svcs.Run)
	run(a.certs.Run)
	run(a.refreshCertificates)
	run(a.heartbeat)
	run(a.watchDocker)
	run(a.health.run)
	if a.opts.Listen != "" {
		ops := &lifecycle.Ops{Listen: a.opts.Listen, Gatherer: a.reg, Ready: func() error {
			if !a.ctrs.HasSynced() {
				return errors.New("not synced with the engine yet")
			}
			return nil
		}}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer ops.Stop()
	}
	a.log.Info("agent running", "hostId", a.host.ID)
	a.reconcileLoop(ctx)
	wg.Wait()
	a.log.Info("agent stopped; containers keep running")
	return nil
}

func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// register presents the agent key it kept from an earlier run (or else the
// token) until the engine answers, and keeps the host and the new agent key
// it gets back, in memory and in the state directory.
func (a *Agent) register(ctx context.Context) error {
	info, err := a.docker.Info(ctx)
	if err != nil {
		return fmt.Errorf("agent: docker is not reachable: %w", err)
	}
	kept := loadAgentKey(a.opts.StateDir, a.opts.Server, a.opts.Name)
	retry := backoff.New(time.Second, 30*time.Second)
	for {
		as := client.New(a.opts.Server, "", "")
		if kept != nil {
			as = client.New(a.opts.Server, kept.AccessKey, kept.SecretKey)
		}
		resp, err := as.Register(ctx, api.RegisterRequest{Token: a.opts.Token, Name: a.opts.Name, AgentIP: a.opts.IP, Hostname: info.Name, Labels: a.opts.Labels})
		if err == nil {
			if err := saveAgentKey(a.opts.StateDir, agentKey{Server: a.opts.Server, Name: a.opts.Name, HostID: resp.Host.ID, AccessKey: resp.AccessKey, SecretKey: resp.SecretKey}); err != nil {
				// Without it the next start needs a token issued for this
				// host name: say so now.
				a.log.Warn("the agent key could not be kept; a restart will need a token for this host name", "dir", a.opts.StateDir, "err", err)
			}
			a.host = resp.Host
			a.eng = client.New(a.opts.Server, resp.AccessKey, resp.SecretKey)
			a.log.Info("registered", "hostId", resp.Host.ID, "withKeptKey", kept != nil)
			return nil
		}
		if kept != nil && api.IsStatus(err, http.StatusUnauthorized) {
			// The kept key was revoked (the host re-registered elsewhere,
			// or an admin deleted the key): only the token is left.
			a.log.Warn("the kept agent key is no longer valid; registering with the token", "dir", a.opts.StateDir)
			kept = nil
			if a.opts.Token == "" {
				return fmt.Errorf("agent: the agent key kept in %s was revoked and no --token was given", a.opts.StateDir)
			}
			continue
		}
		if api.IsStatus(err, http.StatusUnauthorized) || api.IsStatus(err, http.StatusForbidden) || api.IsStatus(err, http.StatusConflict) ||
			api.IsStatus(err, http.StatusUnprocessableEntity) || api.IsStatus(err, http.StatusBadRequest) {
			return fmt.Errorf("agent: registration refused: %w", err)
		}
		a.log.Warn("engine not reachable; retrying registration", "err", err)
		if !retry.Wait(ctx) {
			return ctx.Err()
		}
	}
}

// heartbeat renews the host's lease every interval, which is how the engine
// knows the host is alive, and reports what the agent observes of the host
// (Docker version, capacity, hostname, address) only when it changes: a
// renewal is a lease write that only the host lifecycle controller watches,
// never a host write.
func (a *Agent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.opts.Heartbeat)
	defer t.Stop()
	var reported string
	lease := &LeaseRenewer{Engine: a.eng, HostID: a.host.ID, Duration: 3 * a.opts.Heartbeat}
	for {
		info, err := a.docker.Info(ctx)
		st := map[string]any{}
		if err == nil {
			st["dockerVersion"] = info.ServerVersion
			st["capacity"] = map[string]any{"milliCPU": info.NCPU * 1000, "memoryBytes": info.MemTotal}
			st["hostname"] = info.Name
		}
		if a.opts.IP != "" {
			st["agentIP"] = a.opts.IP
		}
		if b, _ := json.Marshal(st); string(b) != reported {
			if _, err := a.eng.Hosts().PatchStatus(ctx, a.host.ID, map[string]any{"status": st}); err == nil {
				reported = string(b)
			} else if ctx.Err() == nil {
				a.log.Debug("host status not reported (will retry)", "err", err)
			}
		}
		if err := lease.Renew(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("lease renewal failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// LeaseRenewer renews a host's liveness lease with the host's agent key.
type LeaseRenewer struct {
	Engine *client.Client
	HostID string
	// Duration is the lease's validity, a few renewal intervals.
	Duration time.Duration
	id       string
}

// Renew writes the lease's renewal time; it finds the lease on first use.
func (r *LeaseRenewer) Renew(ctx context.Context) error {
	if r.id == "" {
		ls, _, err := r.Engine.Leases().List(ctx, client.ListOptions{Name: api.HostLeaseName(r.HostID)})
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return fmt.Errorf("agent: host %s has no lease; register again", r.HostID)
		}
		r.id = ls[0].ID
	}
	now := time.Now().UTC()
	_, err := r.Engine.Leases().Patch(ctx, r.id, map[string]any{"spec": map[string]any{"renewTime": now, "leaseDurationSeconds": int(max(r.Duration, time.Second) / time.Second)}})
	if api.IsNotFound(err) {
		r.id = ""
	}
	return err
}

type agentMetrics struct {
	actions       *prometheus.CounterVec
	certRefreshes *prometheus.CounterVec
}

func newAgentMetrics(reg *prometheus.Registry) agentMetrics {
	m := agentMetrics{actions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_agent_docker_actions_total", Help: "Docker actions taken, by action and result.",
	}, []string{"action", "result"}),
		certRefreshes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_agent_certificate_refreshes_total", Help: "Containers' certificate files rewritten in place, by result (changed, error).",
		}, []string{"result"})}
	reg.MustRegister(m.actions, m.certRefreshes, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
