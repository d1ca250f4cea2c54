package overlay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/vishvananda/netns"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/backoff"
	"github.com/drover/drover/internal/lifecycle"
)

// Options configure `drover net`.
type Options struct {
	Engine *client.Client
	// Host is this host's name in the engine (default: the machine's).
	Host string
	// Iface is the underlay device ("": the one holding the host's agent IP).
	Iface string
	// Listen serves /healthz, /readyz and /metrics ("": nothing).
	Listen string
	// CNIConfDir receives 10-drover.conflist for the kubelet once the
	// host's subnet is known ("": none is written).
	CNIConfDir string
	// IPAMDir is where the CNI plugin and the agent keep address
	// allocations (default DefaultIPAMDir).
	IPAMDir string
	// NS is the network namespace to program (tests; default, zero or
	// netns.None(): our own).
	NS     netns.NsHandle
	Logger *slog.Logger
}

type daemonMetrics struct {
	reg      *prometheus.Registry
	remotes  prometheus.Gauge
	entries  *prometheus.GaugeVec
	programs prometheus.Histogram
	changes  prometheus.Counter
	errors   prometheus.Counter
}

func newDaemonMetrics() *daemonMetrics {
	m := &daemonMetrics{
		reg: prometheus.NewRegistry(),
		remotes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "drover_net_remote_hosts",
			Help: "Remote hosts programmed: each has one route, one neighbour and one FDB entry."}),
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "drover_net_entries",
			Help: "Routes, neighbours and FDB entries drover net holds for remote hosts."}, []string{"kind"}),
		programs: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "drover_net_program_duration_seconds",
			Help: "Time to bring the data path to the engine's state after a change.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_net_changes_total", Help: "Links, addresses, routes, neighbours, FDB entries and rules added or removed."}),
		errors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_net_errors_total", Help: "Programming passes that failed (retried)."}),
	}
	m.reg.MustRegister(m.remotes, m.entries, m.programs, m.changes, m.errors, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Run programs this host's overlay from the engine until ctx ends. It is
// level-triggered: every change of a host or of the managed network wakes
// one pass that brings the whole data path to the engine's state. Stopping
// leaves the data path as it is, so containers keep talking.
func Run(ctx context.Context, o Options) error {
	if o.Engine == nil {
		return errors.New("net: an engine client is required (--credentials)")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.NS == 0 {
		// The zero value is no namespace handle (fd 0 is stdin): our own.
		o.NS = netns.None()
	}
	d := &daemon{o: o, log: o.Logger, m: newDaemonMetrics(), kick: make(chan struct{}, 1)}
	poke := func() {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	d.hosts = client.NewCache(o.Engine.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd: func(*api.Host) { poke() }, OnUpdate: func(_, _ *api.Host) { poke() }, OnDelete: func(*api.Host) { poke() },
	}, d.log)
	d.nets = client.NewCache(o.Engine.Networks(), client.ListOptions{Name: "managed"}, client.Handlers[api.Network]{
		OnAdd: func(*api.Network) { poke() }, OnUpdate: func(_, _ *api.Network) { poke() }, OnDelete: func(*api.Network) { poke() },
	}, d.log)
	var wg sync.WaitGroup
	for _, c := range []interface{ Run(context.Context) }{d.hosts, d.nets} {
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	defer wg.Wait()
	if o.Listen != "" {
		ops := &lifecycle.Ops{Listen: o.Listen, Gatherer: d.m.reg, Ready: d.ready}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("net: %w", err)
		}
		defer ops.Stop()
	}
	d.log.Info("net running", "host", o.Host)
	retry := backoff.New(100*time.Millisecond, 10*time.Second)
	var again <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if d.prog != nil {
				d.prog.Close()
			}
			d.log.Info("net stopped; the data path stays up")
			return nil
		case <-d.kick:
		case <-again:
		}
		again = nil
		if !d.hosts.HasSynced() || !d.nets.HasSynced() {
			continue
		}
		start := time.Now()
		if err := d.pass(ctx); err != nil {
			d.m.errors.Inc()
			d.setErr(err)
			wait := retry.Next()
			d.log.Warn("programming the overlay failed; retrying", "err", err, "in", wait)
			again = time.After(wait)
			continue
		}
		retry.Reset()
		d.setErr(nil)
		d.m.programs.Observe(time.Since(start).Seconds())
	}
}

type daemon struct {
	o     Options
	log   *slog.Logger
	m     *daemonMetrics
	kick  chan struct{}
	hosts *client.Cache[api.Host, *api.Host]
	nets  *client.Cache[api.Network, *api.Network]
	prog  *Programmer
	cfg   string // the Config prog was made for

	mu      sync.Mutex
	lastErr error
	done    bool // one pass succeeded
}

func (d *daemon) setErr(err error) {
	d.mu.Lock()
	d.lastErr = err
	if err == nil {
		d.done = true
	}
	d.mu.Unlock()
}

func (d *daemon) ready() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastErr != nil {
		return d.lastErr
	}
	if !d.done {
		return errors.New("the overlay is not programmed yet")
	}
	return nil
}

// pass brings the data path to the engine's state.
func (d *daemon) pass(ctx context.Context) error {
	nets := d.nets.List()
	if len(nets) == 0 {
		return errors.New("the engine has no network named managed")
	}
	n := nets[0]
	_, network, err := net.ParseCIDR(n.Spec.CIDR)
	if err != nil {
		return fmt.Errorf("network managed: cidr %q: %w", n.Spec.CIDR, err)
	}
	var local *api.Host
	var remotes []Host
	for _, h := range d.hosts.List() {
		if h.Name == d.o.Host {
			local = h
		}
		if r, ok := overlayHost(h); ok {
			remotes = append(remotes, r)
		}
	}
	if local == nil {
		return fmt.Errorf("no host named %q in the engine: is this host registered (drover agent), or is --host wrong?", d.o.Host)
	}
	me, ok := overlayHost(local)
	if !ok || me.Subnet == nil || me.AgentIP == nil {
		return fmt.Errorf("host %s has no subnet or agent IP yet (status.subnet %q, status.agentIP %q; %s)", local.Name, local.Status.Subnet, local.Status.AgentIP, local.Status.Message)
	}
	cfg := Config{Network: network, Local: Host{ID: local.ID, Subnet: me.Subnet, AgentIP: me.AgentIP}, VNI: n.Spec.VNI, Port: n.Spec.VXLANPort, MTU: n.Spec.MTU, Underlay: d.o.Iface}
	key := fmt.Sprintf("%+v", cfg)
	if d.prog == nil || d.cfg != key {
		if d.prog != nil {
			d.prog.Close()
		}
		if d.prog, err = New(cfg, d.o.NS); err != nil {
			return err
		}
		d.cfg = key
	}
	total := 0
	c, err := d.prog.Ensure()
	total += c
	if err != nil {
		return fmt.Errorf("the bridge and VXLAN device: %w", err)
	}
	c, err = d.prog.EnsureMasquerade()
	total += c
	if err != nil {
		return fmt.Errorf("masquerading (nftables table drover): %w", err)
	}
	c, err = d.prog.EnsureForward()
	total += c
	if err != nil {
		return fmt.Errorf("forwarding (iptables FORWARD): %w", err)
	}
	c, st, err := d.prog.Sync(remotes)
	total += c
	if err != nil {
		return fmt.Errorf("routes to the other hosts: %w", err)
	}
	d.m.changes.Add(float64(total))
	d.m.remotes.Set(float64(st.Routes))
	d.m.entries.WithLabelValues("route").Set(float64(st.Routes))
	d.m.entries.WithLabelValues("neighbour").Set(float64(st.Neighbours))
	d.m.entries.WithLabelValues("fdb").Set(float64(st.FDB))
	if total > 0 {
		d.log.Info("overlay programmed", "changes", total, "remoteHosts", st.Routes, "subnet", me.Subnet.String())
	}
	if err := d.writeConflist(me.Subnet, d.prog.MTU()); err != nil {
		return err
	}
	// Other hosts need our VTEP's MAC: report it once.
	if mac := VTEPMAC(local.ID).String(); local.Status.VTEPMAC != mac {
		if _, err := d.o.Engine.Hosts().PatchStatus(ctx, local.ID, map[string]any{"status": map[string]any{"vtepMAC": mac}}); err != nil {
			return fmt.Errorf("reporting the VTEP MAC: %w", err)
		}
	}
	return nil
}

// overlayHost is what the overlay needs of a host, if it has it.
func overlayHost(h *api.Host) (Host, bool) {
	out := Host{ID: h.ID}
	if h.Status.Subnet != "" {
		_, sn, err := net.ParseCIDR(h.Status.Subnet)
		if err != nil {
			return out, false
		}
		out.Subnet = sn
	}
	if ip := net.ParseIP(h.Status.AgentIP).To4(); ip != nil {
		out.AgentIP = ip
	}
	if mac, err := net.ParseMAC(h.Status.VTEPMAC); err == nil {
		out.VTEPMAC = mac
	}
	return out, out.Subnet != nil && out.AgentIP != nil
}

// Conflist is the CNI network configuration for a host's subnet.
func Conflist(subnet *net.IPNet, mtu int, ipamDir string) []byte {
	if ipamDir == "" {
		ipamDir = DefaultIPAMDir
	}
	b, _ := json.MarshalIndent(map[string]any{
		// 1.0.0: what containerd 1.6 and 1.7 (libcni 1.1) take; the plugin
		// speaks 1.1.0 too, to runtimes that ask for it.
		"cniVersion": "1.0.0",
		"name":       "drover",
		"plugins": []any{map[string]any{
			"type": "drover", "bridge": BridgeName, "subnet": subnet.String(), "mtu": mtu, "dataDir": ipamDir,
		}},
	}, "", "  ")
	return append(b, '\n')
}

// writeConflist writes the conflist if it differs, in one rename.
func (d *daemon) writeConflist(subnet *net.IPNet, mtu int) error {
	if d.o.CNIConfDir == "" {
		return nil
	}
	want := Conflist(subnet, mtu, d.o.IPAMDir)
	path := filepath.Join(d.o.CNIConfDir, "10-drover.conflist")
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return nil
	}
	if err := os.MkdirAll(d.o.CNIConfDir, 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, want, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d.log.Info("CNI configuration written", "path", path, "subnet", subnet.String())
	return nil
}
