// Package metadata is the per-host metadata service: each container or pod,
// identified by its source IP, reads its own container, service, stack and
// host, and the shared views, with Rancher 1.x's paths and shapes. It serves
// from a local cache fed by the engine's event stream, so it keeps answering
// while the engine is away.
package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Versions are the API versions served; all carry the same data.
var Versions = []string{"2015-07-25", "2015-12-19", "2016-07-29", "latest"}

// Options configure the metadata server.
type Options struct {
	Listen string // default 169.254.169.250:80
	// XFF identifies callers by X-Forwarded-For instead of the source IP
	// (behind a trusted proxy only).
	XFF    bool
	Engine *client.Client
	Logger *slog.Logger
	// TokenKey signs services' tokens; every metadata server of a cluster
	// must share it (default: the engine secret key in use).
	TokenKey []byte
	// Ready, if set, receives the listening address once serving.
	Ready chan<- string
}

// Server serves metadata.
type Server struct {
	opts     Options
	log      *slog.Logger
	st       *state
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	metrics  http.Handler
	synced   func() bool
}

// Run serves until ctx ends.
func Run(ctx context.Context, opts Options) error {
	if opts.Engine == nil {
		return errors.New("metadata: engine credentials are required")
	}
	if opts.Listen == "" {
		opts.Listen = "169.254.169.250:80"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{opts: opts, log: opts.Logger.With("component", "metadata"), st: newState(), reg: prometheus.NewRegistry()}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_metadata_requests_total", Help: "Metadata requests by result code."}, []string{"code"})
	s.reg.MustRegister(s.requests, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "drover_metadata_containers", Help: "Containers known."}, func() float64 {
		s.st.mu.RLock()
		defer s.st.mu.RUnlock()
		return float64(len(s.st.containers))
	}))
	caches := s.watch(ctx)
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("metadata: listening on %s: %w", opts.Listen, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	for _, wait := range caches {
		if !wait(ctx) {
			return ctx.Err()
		}
	}
	s.log.Info("metadata serving", "listen", ln.Addr().String())
	if opts.Ready != nil {
		opts.Ready <- ln.Addr().String()
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// watch starts the engine caches and returns their sync waits.
func (s *Server) watch(ctx context.Context) []func(context.Context) bool {
	e, st, log := s.opts.Engine, s.st, s.log
	stacks := client.NewCache(e.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: st.setStack, OnUpdate: func(_, n *api.Stack) { st.setStack(n) }, OnDelete: func(o *api.Stack) { st.deleteStack(o, 0) },
	}, log)
	services := client.NewCache(e.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: st.setService, OnUpdate: func(_, n *api.Service) { st.setService(n) }, OnDelete: func(o *api.Service) { st.deleteService(o, 0) },
	}, log)
	ctrs := client.NewCache(e.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: st.setContainer, OnUpdate: func(_, n *api.Container) { st.setContainer(n) }, OnDelete: func(o *api.Container) { st.deleteContainer(o, 0) },
	}, log)
	hosts := client.NewCache(e.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd: st.setHost, OnUpdate: func(_, n *api.Host) { st.setHost(n) }, OnDelete: func(o *api.Host) { st.deleteHost(o, 0) },
	}, log)
	nets := client.NewCache(e.Networks(), client.ListOptions{}, client.Handlers[api.Network]{
		OnAdd: st.setNetwork, OnUpdate: func(_, n *api.Network) { st.setNetwork(n) }, OnDelete: func(o *api.Network) { st.deleteNetwork(o, 0) },
	}, log)
	// Stacks and services first, so containers render with their names.
	go stacks.Run(ctx)
	go services.Run(ctx)
	go func() {
		stacks.WaitForSync(ctx)
		services.WaitForSync(ctx)
		go ctrs.Run(ctx)
	}()
	go hosts.Run(ctx)
	go nets.Run(ctx)
	s.synced = func() bool { return ctrs.HasSynced() && hosts.HasSynced() }
	return []func(context.Context) bool{stacks.WaitForSync, services.WaitForSync, ctrs.WaitForSync, hosts.WaitForSync, nets.WaitForSync}
}

func (s *Server) callerIP(r *http.Request) string {
	if s.opts.XFF {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			ip, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(ip)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type format int

const (
	formatText format = iota
	formatJSON
	formatYAML
)

func formatOf(r *http.Request) format {
	a := r.Header.Get("Accept")
	switch {
	case strings.Contains(a, "application/json"):
		return formatJSON
	case strings.Contains(a, "yaml"):
		return formatYAML
	}
	return formatText
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz", "/readyz": // it serves only once its caches synced
		fmt.Fprintln(w, "ok")
		return
	case "/metrics":
		s.metrics.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.write(w, r, http.StatusMethodNotAllowed, map[string]any{"code": 405, "message": "Method not allowed"})
		return
	}
	segs := splitPath(r.URL.Path)
	if len(segs) == 0 {
		vs := make([]any, len(Versions))
		for i, v := range Versions {
			vs[i] = v
		}
		s.write(w, r, http.StatusOK, vs)
		return
	}
	if !validVersion(segs[0]) {
		s.notFound(w, r)
		return
	}
	q := r.URL.Query()
	if q.Get("wait") == "true" {
		s.longPoll(r, q.Get("value"), q.Get("maxWait"))
	}
	s.st.mu.RLock()
	node, ok := s.walk(segs[1:], s.callerIP(r))
	s.st.mu.RUnlock()
	if !ok {
		s.notFound(w, r)
		return
	}
	s.write(w, r, http.StatusOK, node)
}

func validVersion(v string) bool {
	for _, x := range Versions {
		if x == v {
			return true
		}
	}
	return false
}

func splitPath(p string) []string {
	var out []string
	for _, seg := range strings.Split(p, "/") {
		if seg != "" {
			out = append(out, seg)
		}
	}
	return out
}

// longPoll waits until the version differs from value, maxWait seconds at
// most (default 60, at most 120).
func (s *Server) longPoll(r *http.Request, value, maxWait string) {
	limit := 60 * time.Second
	if n, err := strconv.Atoi(maxWait); err == nil && n > 0 {
		limit = min(time.Duration(n)*time.Second, 120*time.Second)
	}
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.st.mu.RLock()
		cur, ch := s.st.versionString(), s.st.changed
		s.st.mu.RUnlock()
		if cur != value {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// walk follows path segments from a version's root. Called with the read lock.
func (s *Server) walk(segs []string, ip string) (any, bool) {
	key := s.opts.TokenKey
	if len(segs) == 0 {
		root := map[string]any{"version": s.st.versionString()}
		for _, l := range []string{"containers", "services", "stacks", "hosts", "networks"} {
			root[l] = s.st.list(l, key)
		}
		if self, ok := s.st.self(ip, "", key); ok {
			root["self"] = self
		} else {
			root["self"] = map[string]any{}
		}
		return root, true
	}
	var node any
	switch segs[0] {
	case "version":
		node = s.st.versionString()
	case "containers", "services", "stacks", "hosts", "networks":
		node = s.st.list(segs[0], key)
	case "self":
		part := ""
		if len(segs) > 1 {
			part = segs[1]
		}
		self, ok := s.st.self(ip, part, key)
		if !ok {
			return nil, false
		}
		node = self
	default:
		return nil, false
	}
	for _, seg := range segs[1:] {
		switch n := node.(type) {
		case map[string]any:
			v, ok := n[seg]
			if !ok {
				return nil, false
			}
			node = v
		case []any:
			if i, err := strconv.Atoi(seg); err == nil {
				if i < 0 || i >= len(n) {
					return nil, false
				}
				node = n[i]
				continue
			}
			found := false
			for _, item := range n {
				if nameOf(item) == seg {
					node, found = item, true
					break
				}
			}
			if !found {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return node, true
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.write(w, r, http.StatusNotFound, map[string]any{"code": 404, "message": "Not found"})
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, code int, node any) {
	s.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	switch formatOf(r) {
	case formatJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(node)
	case formatYAML:
		w.Header().Set("Content-Type", "application/yaml")
		w.WriteHeader(code)
		b, _ := yaml.Marshal(node)
		w.Write(b)
	default:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		if code == http.StatusNotFound {
			fmt.Fprint(w, "Not found")
			return
		}
		writeText(w, node)
	}
}

// writeText is Rancher's plain format: a map's keys one per line (a "/"
// after sub-trees), a list's items as index=name (or the value for
// scalars), a scalar as itself.
func writeText(w http.ResponseWriter, node any) {
	var b strings.Builder
	switch n := node.(type) {
	case map[string]any:
		for _, k := range sortedKeys(n) {
			b.WriteString(k)
			switch n[k].(type) {
			case map[string]any, []any:
				b.WriteByte('/')
			}
			b.WriteByte('\n')
		}
	case []any:
		for i, item := range n {
			switch it := item.(type) {
			case map[string]any:
				if name := nameOf(it); name != "" {
					fmt.Fprintf(&b, "%d=%s\n", i, name)
				} else {
					fmt.Fprintf(&b, "%d\n", i)
				}
			case []any:
				fmt.Fprintf(&b, "%d\n", i)
			default:
				fmt.Fprintf(&b, "%v\n", scalar(it))
			}
		}
	default:
		b.WriteString(scalar(n))
	}
	w.Write([]byte(b.String()))
}

func scalar(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
