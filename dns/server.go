// Package dns is one DNS server for both worlds: engine names
// (<service>.<stack>.drover.internal, and Rancher's rancher.internal) and
// Kubernetes names (<svc>.<ns>.svc.cluster.local, DNS specification 1.1.0),
// with short names resolved from the caller's own stack or namespace, and
// everything else forwarded upstream (package resolver answers; this
// package keeps its record set current from the engine). It serves from
// watch caches that start from a snapshot on disk, so it answers at once
// after a restart, with or without the engine.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/dns/resolver"
	"github.com/drover/drover/internal/freebind"
	"github.com/drover/drover/internal/lifecycle"
)

// DefaultStateDir is where the drover dns command keeps its snapshots.
const DefaultStateDir = "/var/lib/drover/dns"

// Options configure the DNS server.
type Options struct {
	Listen        string // UDP and TCP; default 169.254.169.250:53
	ClusterDomain string // default cluster.local
	Upstreams     []string
	TTL           uint32 // for owned names (default 5)
	// CacheSize bounds the forwarded answers kept (default 10,000).
	CacheSize int
	Engine    *client.Client
	// StateDir holds one snapshot file per collection watched, so a
	// restart serves at once while the engine is away. "" keeps none.
	StateDir      string
	Logger        *slog.Logger
	MetricsListen string // "" serves no /metrics
	// Ready, if set, receives the listening address once serving.
	Ready chan<- string
}

// Server answers DNS.
type Server struct {
	opts    Options
	log     *slog.Logger
	recs    *resolver.Records
	fwd     *resolver.Forwarder
	handler *resolver.Handler
	m       *dnsMetrics

	stackCache *client.Cache[api.Stack, *api.Stack]
	svcCache   *client.Cache[api.Service, *api.Service]
	ctrCache   *client.Cache[api.Container, *api.Container]
	stacks     store[api.Stack]
	services   store[api.Service]
	ctrs       store[api.Container]
	ready      func() bool

	addr atomic.Value // string, once serving

	// apply serializes computing an owner's records with storing them: the
	// caches deliver from several goroutines, and a computation from older
	// state must not land after one from newer state.
	apply sync.Mutex

	ipMu sync.RWMutex
	byIP map[string]string // caller IP -> container id
}

// New builds a server; Run starts it.
func New(opts Options) (*Server, error) {
	if opts.Engine == nil {
		return nil, errors.New("dns: engine credentials are required")
	}
	if opts.Listen == "" {
		opts.Listen = "169.254.169.250:53"
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	opts.ClusterDomain = mdns.Fqdn(strings.ToLower(opts.ClusterDomain))
	if opts.TTL == 0 {
		opts.TTL = 5
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10000
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Upstreams) == 0 {
		opts.Upstreams = systemUpstreams(opts.Listen)
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "dns"), recs: resolver.NewRecords(), m: newDNSMetrics(), byIP: map[string]string{}}
	m := s.m
	obs := resolver.Observer{
		Answered: func(proto, qtype, rcode, source string, took time.Duration) {
			m.requests.WithLabelValues(proto, qtype).Inc()
			m.responses.WithLabelValues(rcode).Inc()
			m.duration.WithLabelValues(source).Observe(took.Seconds())
		},
		CacheHit:  m.hits.Inc,
		CacheMiss: m.misses.Inc,
		Forwarded: func(up, result string) { m.forwards.WithLabelValues(up, result).Inc() },
	}
	s.fwd = resolver.NewForwarder(opts.Upstreams, opts.CacheSize, obs)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "drover_dns_cache_entries", Help: "Forwarded answers cached."}, func() float64 { return float64(s.fwd.Len()) }))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "drover_dns_records", Help: "Names drover answers itself."}, func() float64 { return float64(s.recs.Len()) }))
	s.recs.Set("dns-version", rrsets{"dns-version." + opts.ClusterDomain: {TXT: []string{"1.1.0"}}})

	log, e := s.log, opts.Engine
	s.stackCache = client.NewCache(e.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{OnAdd: s.addStack, OnUpdate: s.setStack, OnDelete: s.deleteStack}, log)
	s.svcCache = client.NewCache(e.Services(), client.ListOptions{}, client.Handlers[api.Service]{OnAdd: s.addService, OnUpdate: s.setService, OnDelete: s.deleteService}, log)
	s.ctrCache = client.NewCache(e.Containers(), client.ListOptions{}, client.Handlers[api.Container]{OnAdd: s.addContainer, OnUpdate: s.setContainer, OnDelete: s.deleteContainer}, log)
	for name, fn := range serviceIndexes {
		s.svcCache.AddIndex(name, fn)
	}
	for name, fn := range containerIndexes {
		s.ctrCache.AddIndex(name, fn)
	}
	s.stacks, s.services, s.ctrs = s.stackCache, s.svcCache, s.ctrCache
	s.ready = func() bool { return s.stackCache.HasSynced() && s.svcCache.HasSynced() && s.ctrCache.HasSynced() }

	s.handler = resolver.NewHandler(resolver.Config{
		Zones:      append(append([]string{}, engineZones...), opts.ClusterDomain),
		SearchZone: engineZones[0], ClusterDomain: opts.ClusterDomain, TTL: opts.TTL,
		Records: s.recs, Caller: s.caller, Ready: func() bool { return s.ready() },
		Forward: s.fwd.Forward, Observer: obs,
	})
	return s, nil
}

// systemUpstreams reads /etc/resolv.conf, leaving out our own address so
// the server never forwards to itself.
func systemUpstreams(listen string) []string {
	self, _, _ := net.SplitHostPort(listen)
	cfg, err := mdns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range cfg.Servers {
		if s == self {
			continue
		}
		out = append(out, net.JoinHostPort(s, cfg.Port))
	}
	return out
}

// Addr is the address being served ("" until serving).
func (s *Server) Addr() string {
	a, _ := s.addr.Load().(string)
	return a
}

// ServeDNS answers one query (the server is an mdns.Handler).
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) { s.handler.ServeDNS(w, req) }

// Run serves until ctx ends. It listens at once: until the caches have
// synced (from a snapshot, or else from the engine) drover's own zones
// answer SERVFAIL and everything else is forwarded.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var caches sync.WaitGroup
	// Caches write their final snapshot as they stop.
	defer caches.Wait()
	defer cancel()
	if err := s.startCaches(ctx, &caches); err != nil {
		return err
	}
	// A snapshot loads in milliseconds and a reachable engine lists in
	// well under a second: waiting that long spares clients a burst of
	// SERVFAIL at start, and no longer, so an engine that is away costs
	// only this delay.
	grace, graceDone := context.WithTimeout(ctx, SyncGrace)
	s.waitSynced(grace)
	graceDone()
	pc, err := freebind.ListenPacket("udp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("dns: listening on udp %s: %w", s.opts.Listen, err)
	}
	// TCP on the same port UDP got.
	ln, err := freebind.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listening on tcp %s: %w", pc.LocalAddr(), err)
	}
	udp := &mdns.Server{PacketConn: pc, Handler: s.handler, UDPSize: 65535}
	tcp := &mdns.Server{Listener: ln, Handler: s.handler}
	errc := make(chan error, 3)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	if s.opts.MetricsListen != "" {
		ops := &lifecycle.Ops{Listen: s.opts.MetricsListen, Gatherer: s.m.reg, Ready: func() error {
			if !s.ready() {
				return errors.New("not ready: no snapshot loaded and the engine not reached yet")
			}
			return nil
		}}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("dns: %w", err)
		}
		defer ops.Stop()
	}
	s.addr.Store(pc.LocalAddr().String())
	s.log.Info("dns serving", "listen", pc.LocalAddr().String(), "clusterDomain", s.opts.ClusterDomain, "upstreams", s.opts.Upstreams, "stateDir", s.opts.StateDir)
	if s.opts.Ready != nil {
		s.opts.Ready <- pc.LocalAddr().String()
	}
	defer udp.Shutdown()
	defer tcp.Shutdown()
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// SyncGrace is how long Run waits for its caches before listening anyway.
const SyncGrace = 500 * time.Millisecond

func (s *Server) waitSynced(ctx context.Context) bool {
	for _, w := range []func(context.Context) bool{s.stackCache.WaitForSync, s.svcCache.WaitForSync, s.ctrCache.WaitForSync} {
		if !w(ctx) {
			return false
		}
	}
	return true
}

// startCaches points each cache at its snapshot and starts it.
func (s *Server) startCaches(ctx context.Context, wg *sync.WaitGroup) error {
	type runner interface {
		Run(context.Context)
		SetSnapshot(string)
	}
	caches := []struct {
		name string
		c    runner
	}{{"stacks", s.stackCache}, {"services", s.svcCache}, {"containers", s.ctrCache}}
	if dir := s.opts.StateDir; dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("dns: state dir: %w", err)
		}
		for _, c := range caches {
			c.c.SetSnapshot(filepath.Join(dir, c.name+".json"))
		}
	}
	for _, c := range caches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.c.Run(ctx)
		}()
	}
	go func() {
		if !s.waitSynced(ctx) {
			return
		}
		from := "engine"
		if s.ctrCache.FromSnapshot() {
			from = "snapshot"
		}
		s.log.Info("dns records complete", "from", from, "names", s.recs.Len())
	}()
	return nil
}

// caller is the stack and namespace of the container at ip.
func (s *Server) caller(ip string) (stack, ns string) {
	s.ipMu.RLock()
	id := s.byIP[ip]
	s.ipMu.RUnlock()
	c, ok := s.ctrs.Get(id)
	if id == "" || !ok {
		return "", ""
	}
	st, ok := s.stacks.Get(c.Spec.StackID)
	if !ok {
		return "", ""
	}
	ns = st.Spec.Namespace
	if c.Spec.Kind == api.ContainerKindPod && ns == "" {
		ns = st.Name
	}
	return st.Name, ns
}

func (s *Server) addStack(st *api.Stack) { s.setStack(nil, st) }

// setStack: services carry their stack's name, so a new or renamed stack
// recomputes them (services may arrive before their stack).
func (s *Server) setStack(old, st *api.Stack) {
	if old != nil && old.Name == st.Name {
		return
	}
	for _, v := range s.services.ByIndex(byStack, st.ID) {
		s.recomputeService(v.ID)
	}
}

func (s *Server) deleteStack(st *api.Stack) {
	for _, v := range s.services.ByIndex(byStack, st.ID) {
		s.recomputeService(v.ID)
	}
}

func (s *Server) addService(v *api.Service) { s.setService(nil, v) }

func (s *Server) setService(old, v *api.Service) {
	s.recomputeService(v.ID)
	s.recomputeAliases(v.Spec.StackID)
	if old != nil && old.Spec.StackID != v.Spec.StackID {
		s.recomputeAliases(old.Spec.StackID)
	}
}

func (s *Server) deleteService(v *api.Service) {
	s.apply.Lock()
	s.recs.Set("svc:"+v.ID, nil)
	s.apply.Unlock()
	s.recomputeAliases(v.Spec.StackID)
}

func (s *Server) addContainer(c *api.Container) { s.setContainer(nil, c) }

func (s *Server) setContainer(old, c *api.Container) {
	s.ipMu.Lock()
	if old != nil && old.Status.PrimaryIP != c.Status.PrimaryIP && s.byIP[old.Status.PrimaryIP] == c.ID {
		delete(s.byIP, old.Status.PrimaryIP)
	}
	if c.Status.PrimaryIP != "" {
		s.byIP[c.Status.PrimaryIP] = c.ID
	}
	s.ipMu.Unlock()
	s.recomputeContainer(c.ID)
	if old != nil && old.Status.PrimaryIP != c.Status.PrimaryIP {
		s.recomputeReverse(old.Status.PrimaryIP)
	}
	s.recomputeReverse(c.Status.PrimaryIP)
	if old != nil && old.Spec.ServiceID != c.Spec.ServiceID && old.Spec.ServiceID != "" {
		s.recomputeService(old.Spec.ServiceID)
		s.recomputeAliases(old.Spec.StackID)
	}
	if c.Spec.ServiceID != "" {
		s.recomputeService(c.Spec.ServiceID)
		s.recomputeAliases(c.Spec.StackID)
	}
}

func (s *Server) deleteContainer(c *api.Container) {
	s.ipMu.Lock()
	if s.byIP[c.Status.PrimaryIP] == c.ID {
		delete(s.byIP, c.Status.PrimaryIP)
	}
	s.ipMu.Unlock()
	s.recomputeContainer(c.ID)
	s.recomputeReverse(c.Status.PrimaryIP)
	if c.Spec.ServiceID != "" {
		s.recomputeService(c.Spec.ServiceID)
		s.recomputeAliases(c.Spec.StackID)
	}
}

// recomputeContainer: <container>.<zone> from the newest copy there is
// (none once deleted).
func (s *Server) recomputeContainer(id string) {
	s.apply.Lock()
	defer s.apply.Unlock()
	var recs rrsets
	if c, ok := s.ctrs.Get(id); ok {
		recs = containerRecords(c)
	}
	s.recs.Set("ctr:"+id, recs)
}

// recomputeReverse rebuilds the reverse name of one address from the
// containers holding it now: records are per address, not per container,
// so containers sharing or handing over an address never overwrite each
// other's.
func (s *Server) recomputeReverse(ip string) {
	if ip == "" {
		return
	}
	s.apply.Lock()
	defer s.apply.Unlock()
	s.recs.Set("ptr:"+ip, reverseRecords(ip, s.ctrs.ByIndex(byIP, ip)))
}

// recomputeService rebuilds one service's names from its containers.
func (s *Server) recomputeService(id string) {
	s.apply.Lock()
	defer s.apply.Unlock()
	var recs rrsets
	if v, ok := s.services.Get(id); ok {
		if v.Spec.Kind == api.ServiceKubernetes {
			recs = kubernetesRecords(v, s.opts.ClusterDomain)
		} else {
			recs = s.engineServiceRecords(v)
		}
	}
	s.recs.Set("svc:"+id, recs)
}

func (s *Server) recomputeAliases(stackID string) {
	for _, v := range s.services.ByIndex(byAlias, stackID) {
		s.recomputeService(v.ID)
	}
}

type dnsMetrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	responses *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	hits      prometheus.Counter
	misses    prometheus.Counter
	forwards  *prometheus.CounterVec
}

// Metric names follow CoreDNS's where they mean the same.
func newDNSMetrics() *dnsMetrics {
	m := &dnsMetrics{
		reg:       prometheus.NewRegistry(),
		requests:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_dns_requests_total", Help: "Queries by protocol and type."}, []string{"proto", "type"}),
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_dns_responses_total", Help: "Responses by rcode."}, []string{"rcode"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "drover_dns_request_duration_seconds", Help: "Time to answer, by where the answer came from.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .5, 1}}, []string{"source"}),
		hits:     prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_dns_cache_hits_total", Help: "Forwarded queries answered from the cache."}),
		misses:   prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_dns_cache_misses_total", Help: "Forwarded queries not in the cache."}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_dns_forward_requests_total", Help: "Queries sent upstream, by upstream and result."}, []string{"to", "result"}),
	}
	m.reg.MustRegister(m.requests, m.responses, m.duration, m.hits, m.misses, m.forwards, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
