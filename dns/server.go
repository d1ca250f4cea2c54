// Package dns is one DNS server for both worlds: engine names
// (<service>.<stack>.drover.internal, and Rancher's rancher.internal) and
// Kubernetes names (<svc>.<ns>.svc.cluster.local, DNS specification 1.1.0),
// with short names resolved from the caller's own stack or namespace, and
// everything else forwarded to upstream servers through a TTL-bound cache.
// It answers from a local cache of the engine, so it keeps answering while
// the engine is away.
package dns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Options configure the DNS server.
type Options struct {
	Listen        string // UDP and TCP; default 169.254.169.250:53
	ClusterDomain string // default cluster.local
	Upstreams     []string
	TTL           uint32 // for owned names (default 5)
	Engine        *client.Client
	Logger        *slog.Logger
	MetricsListen string // "" serves no /metrics
	// Ready, if set, receives the listening address once serving.
	Ready chan<- string
}

// Server answers DNS.
type Server struct {
	opts   Options
	log    *slog.Logger
	recs   *records
	cache  *answerCache
	m      *dnsMetrics
	zones  []string
	soaFor map[string]*mdns.SOA

	addr atomic.Value // string, once serving

	// apply serializes computing an owner's records with storing them: the
	// caches deliver from several goroutines, and a computation from older
	// state must not land after one from newer state.
	apply sync.Mutex

	mu       sync.RWMutex
	stacks   map[string]*api.Stack
	services map[string]*api.Service
	ctrs     map[string]*api.Container
	bySvc    map[string]map[string]bool // service -> containers
	byIP     map[string]string          // caller IP -> container
	aliases  map[string]map[string]bool // stack -> its alias services
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
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if len(opts.Upstreams) == 0 {
		opts.Upstreams = systemUpstreams(opts.Listen)
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "dns"), recs: newRecords(), cache: newAnswerCache(10000), m: newDNSMetrics(),
		stacks: map[string]*api.Stack{}, services: map[string]*api.Service{}, ctrs: map[string]*api.Container{},
		bySvc: map[string]map[string]bool{}, byIP: map[string]string{}, aliases: map[string]map[string]bool{}, soaFor: map[string]*mdns.SOA{}}
	s.zones = append(append([]string{}, engineZones...), opts.ClusterDomain)
	for _, z := range s.zones {
		s.soaFor[z] = &mdns.SOA{Hdr: mdns.RR_Header{Name: z, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: opts.TTL},
			Ns: "ns.dns." + z, Mbox: "hostmaster." + z, Serial: uint32(time.Now().Unix()), Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: opts.TTL}
	}
	s.recs.set("dns-version", map[string]*rrset{"dns-version." + opts.ClusterDomain: {TXT: []string{"1.1.0"}}})
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

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	waits := s.watch(ctx)
	for _, w := range waits {
		if !w(ctx) {
			return ctx.Err()
		}
	}
	pc, err := net.ListenPacket("udp", s.opts.Listen)
	if err != nil {
		return fmt.Errorf("dns: listening on udp %s: %w", s.opts.Listen, err)
	}
	// TCP on the same port UDP got.
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return fmt.Errorf("dns: listening on tcp %s: %w", pc.LocalAddr(), err)
	}
	udp := &mdns.Server{PacketConn: pc, Handler: s, UDPSize: 65535}
	tcp := &mdns.Server{Listener: ln, Handler: s}
	errc := make(chan error, 3)
	go func() { errc <- udp.ActivateAndServe() }()
	go func() { errc <- tcp.ActivateAndServe() }()
	if s.opts.MetricsListen != "" {
		mux := http.NewServeMux()
		ok := func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") }
		mux.HandleFunc("GET /healthz", ok)
		mux.HandleFunc("GET /readyz", ok) // it serves only once its caches synced
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.m.reg, promhttp.HandlerOpts{}))
		hs := &http.Server{Addr: s.opts.MetricsListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- hs.ListenAndServe() }()
		defer hs.Close()
	}
	s.addr.Store(pc.LocalAddr().String())
	s.log.Info("dns serving", "listen", pc.LocalAddr().String(), "clusterDomain", s.opts.ClusterDomain, "upstreams", s.opts.Upstreams)
	if s.opts.Ready != nil {
		s.opts.Ready <- pc.LocalAddr().String()
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			udp.Shutdown()
			tcp.Shutdown()
			return err
		}
	}
	udp.Shutdown()
	tcp.Shutdown()
	return nil
}

// watch keeps the engine view current and recomputes the records of what
// a change touches.
func (s *Server) watch(ctx context.Context) []func(context.Context) bool {
	e, log := s.opts.Engine, s.log
	stacks := client.NewCache(e.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: s.setStack, OnUpdate: func(_, n *api.Stack) { s.setStack(n) }, OnDelete: s.deleteStack,
	}, log)
	svcs := client.NewCache(e.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: s.setService, OnUpdate: func(_, n *api.Service) { s.setService(n) }, OnDelete: s.deleteService,
	}, log)
	ctrs := client.NewCache(e.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: s.setContainer, OnUpdate: func(_, n *api.Container) { s.setContainer(n) }, OnDelete: s.deleteContainer,
	}, log)
	go stacks.Run(ctx)
	go svcs.Run(ctx)
	go ctrs.Run(ctx)
	return []func(context.Context) bool{stacks.WaitForSync, svcs.WaitForSync, ctrs.WaitForSync}
}

func (s *Server) setStack(st *api.Stack) {
	s.mu.Lock()
	old := s.stacks[st.ID]
	s.stacks[st.ID] = st
	var redo []string
	if old == nil || old.Name != st.Name {
		for id, sv := range s.services {
			if sv.Spec.StackID == st.ID {
				redo = append(redo, id)
			}
		}
	}
	s.mu.Unlock()
	for _, id := range redo {
		s.recomputeService(id)
	}
}

func (s *Server) deleteStack(st *api.Stack) {
	s.mu.Lock()
	delete(s.stacks, st.ID)
	s.mu.Unlock()
}

func (s *Server) setService(v *api.Service) {
	s.mu.Lock()
	s.services[v.ID] = v
	if v.Spec.Kind == api.ServiceAlias {
		if s.aliases[v.Spec.StackID] == nil {
			s.aliases[v.Spec.StackID] = map[string]bool{}
		}
		s.aliases[v.Spec.StackID][v.ID] = true
	}
	s.mu.Unlock()
	s.recomputeService(v.ID)
	s.recomputeAliases(v.Spec.StackID)
}

func (s *Server) deleteService(v *api.Service) {
	s.mu.Lock()
	delete(s.services, v.ID)
	delete(s.aliases[v.Spec.StackID], v.ID)
	s.mu.Unlock()
	s.apply.Lock()
	s.recs.set("svc:"+v.ID, nil)
	s.apply.Unlock()
	s.recomputeAliases(v.Spec.StackID)
}

func (s *Server) setContainer(c *api.Container) {
	s.mu.Lock()
	if old := s.ctrs[c.ID]; old != nil && s.byIP[old.Status.PrimaryIP] == c.ID {
		delete(s.byIP, old.Status.PrimaryIP)
	}
	s.ctrs[c.ID] = c
	if c.Status.PrimaryIP != "" {
		s.byIP[c.Status.PrimaryIP] = c.ID
	}
	if c.Spec.ServiceID != "" {
		if s.bySvc[c.Spec.ServiceID] == nil {
			s.bySvc[c.Spec.ServiceID] = map[string]bool{}
		}
		s.bySvc[c.Spec.ServiceID][c.ID] = true
	}
	s.mu.Unlock()
	s.recomputeContainer(c)
	if c.Spec.ServiceID != "" {
		s.recomputeService(c.Spec.ServiceID)
		s.recomputeAliases(c.Spec.StackID)
	}
}

func (s *Server) deleteContainer(c *api.Container) {
	s.mu.Lock()
	delete(s.ctrs, c.ID)
	if s.byIP[c.Status.PrimaryIP] == c.ID {
		delete(s.byIP, c.Status.PrimaryIP)
	}
	delete(s.bySvc[c.Spec.ServiceID], c.ID)
	s.mu.Unlock()
	s.apply.Lock()
	s.recs.set("ctr:"+c.ID, nil)
	s.apply.Unlock()
	if c.Spec.ServiceID != "" {
		s.recomputeService(c.Spec.ServiceID)
		s.recomputeAliases(c.Spec.StackID)
	}
}

// recomputeContainer: <container>.drover.internal for a serving container.
func (s *Server) recomputeContainer(c *api.Container) {
	s.apply.Lock()
	defer s.apply.Unlock()
	s.mu.RLock()
	if cur := s.ctrs[c.ID]; cur != nil {
		c = cur // the newest we have
	}
	s.mu.RUnlock()
	recs := map[string]*rrset{}
	if serving(c) && c.Spec.Kind != api.ContainerKindPod {
		for _, z := range engineZones {
			addA(recs, strings.ToLower(c.Name)+"."+z, net.ParseIP(c.Status.PrimaryIP))
		}
	}
	s.recs.set("ctr:"+c.ID, recs)
}

// recomputeService rebuilds one service's names from its containers.
func (s *Server) recomputeService(id string) {
	s.apply.Lock()
	defer s.apply.Unlock()
	s.mu.RLock()
	v := s.services[id]
	if v == nil {
		s.mu.RUnlock()
		return
	}
	var recs map[string]*rrset
	if v.Spec.Kind == api.ServiceKubernetes {
		recs = kubernetesRecords(v, s.opts.ClusterDomain)
	} else {
		recs = s.engineServiceRecords(v)
	}
	s.mu.RUnlock()
	s.recs.set("svc:"+id, recs)
}

// engineServiceRecords: <service>.<stack>.<zone> -> VIP, or the serving
// containers; sidekicks at <sidekick>.<service>.<stack>.<zone>; external
// services' IPs or hostname; alias services' targets. Called read-locked.
func (s *Server) engineServiceRecords(v *api.Service) map[string]*rrset {
	st := s.stacks[v.Spec.StackID]
	if st == nil {
		return nil
	}
	recs := map[string]*rrset{}
	base := strings.ToLower(v.Name + "." + st.Name)
	for _, z := range engineZones {
		name := base + "." + z
		switch v.Spec.Kind {
		case api.ServiceExternal:
			if v.Spec.Hostname != "" {
				recs[name] = &rrset{CNAME: mdns.Fqdn(v.Spec.Hostname)}
				continue
			}
			for _, ip := range v.Spec.ExternalIPs {
				addA(recs, name, net.ParseIP(ip))
			}
		case api.ServiceAlias:
			for _, target := range v.Spec.Links {
				t, _, _ := strings.Cut(target, ":")
				for _, other := range s.services { // alias services are few and change rarely
					if other.Spec.StackID == v.Spec.StackID && other.Name == t && other.ID != v.ID {
						for _, ip := range s.serviceIPs(other) {
							addA(recs, name, ip)
						}
					}
				}
			}
		default:
			if v.Spec.VIP != "" {
				addA(recs, name, net.ParseIP(v.Spec.VIP))
				continue
			}
			for cid := range s.bySvc[v.ID] {
				c := s.ctrs[cid]
				if c == nil || !serving(c) {
					continue
				}
				n := name
				if c.Spec.LaunchConfigName != "" {
					n = strings.ToLower(c.Spec.LaunchConfigName) + "." + name
				}
				addA(recs, n, net.ParseIP(c.Status.PrimaryIP))
			}
			if recs[name] == nil {
				recs[name] = &rrset{} // exists, no address: NODATA
			}
		}
	}
	sortIPs(recs)
	return recs
}

// serviceIPs are a service's answer addresses. Called read-locked.
func (s *Server) serviceIPs(v *api.Service) []net.IP {
	if v.Spec.VIP != "" {
		return []net.IP{net.ParseIP(v.Spec.VIP)}
	}
	if v.Spec.Kind == api.ServiceExternal {
		var out []net.IP
		for _, ip := range v.Spec.ExternalIPs {
			out = append(out, net.ParseIP(ip))
		}
		return out
	}
	var out []net.IP
	for cid := range s.bySvc[v.ID] {
		if c := s.ctrs[cid]; c != nil && serving(c) && c.Spec.LaunchConfigName == "" {
			out = append(out, net.ParseIP(c.Status.PrimaryIP))
		}
	}
	return out
}

func (s *Server) recomputeAliases(stackID string) {
	s.mu.RLock()
	var ids []string
	for id := range s.aliases[stackID] {
		ids = append(ids, id)
	}
	s.mu.RUnlock()
	for _, id := range ids {
		s.recomputeService(id)
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
