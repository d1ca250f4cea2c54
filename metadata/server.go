// Package metadata is the per-host metadata service: each container or pod,
// identified by its source IP, reads its own container, service, stack and
// host, and the shared views, with Rancher 1.x's paths and shapes. It serves
// from watch caches that start from a snapshot on disk, so it answers at
// once after a restart, with or without the engine.
package metadata

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"sigs.k8s.io/yaml"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/freebind"
)

// Versions are the API versions served; all carry the same data.
var Versions = []string{"2015-07-25", "2015-12-19", "2016-07-29", "latest"}

// DefaultStateDir is where the drover metadata command keeps its snapshots.
const DefaultStateDir = "/var/lib/drover/metadata"

// SyncGrace is how long Run waits for its caches before listening anyway:
// long enough for a snapshot or a reachable engine, so clients rarely see
// a 503 at start.
const SyncGrace = 500 * time.Millisecond

// Options configure the metadata server.
type Options struct {
	Listen string // default 169.254.169.250:80
	// XFF identifies callers by X-Forwarded-For instead of the source IP
	// (behind a trusted proxy only).
	XFF    bool
	Engine *client.Client
	// StateDir holds one snapshot file per collection watched, so a
	// restart serves at once while the engine is away. "" keeps none.
	StateDir string
	Logger   *slog.Logger
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

	stacks   *client.Cache[api.Stack, *api.Stack]
	services *client.Cache[api.Service, *api.Service]
	ctrs     *client.Cache[api.Container, *api.Container]
	hosts    *client.Cache[api.Host, *api.Host]
	nets     *client.Cache[api.Network, *api.Network]
}

func newServer(opts Options) *Server {
	s := &Server{opts: opts, log: opts.Logger.With("component", "metadata"), reg: prometheus.NewRegistry()}
	e, log := opts.Engine, s.log
	// The state reads the caches it is fed by; they are filled in below.
	st := newState(nil, nil, nil)
	s.st = st
	s.stacks = client.NewCache(e.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{OnAdd: func(n *api.Stack) { st.setStack(nil, n) }, OnUpdate: st.setStack, OnDelete: st.deleteStack}, log)
	s.services = client.NewCache(e.Services(), client.ListOptions{}, client.Handlers[api.Service]{OnAdd: func(n *api.Service) { st.setService(nil, n) }, OnUpdate: st.setService, OnDelete: st.deleteService}, log)
	s.ctrs = client.NewCache(e.Containers(), client.ListOptions{}, client.Handlers[api.Container]{OnAdd: func(n *api.Container) { st.setContainer(nil, n) }, OnUpdate: st.setContainer, OnDelete: st.deleteContainer}, log)
	s.hosts = client.NewCache(e.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{OnAdd: st.setHost, OnUpdate: func(_, n *api.Host) { st.setHost(n) }, OnDelete: st.deleteHost}, log)
	s.nets = client.NewCache(e.Networks(), client.ListOptions{}, client.Handlers[api.Network]{OnAdd: st.setNetwork, OnUpdate: func(_, n *api.Network) { st.setNetwork(n) }, OnDelete: st.deleteNetwork}, log)
	for name, fn := range serviceIndexes {
		s.services.AddIndex(name, fn)
	}
	for name, fn := range containerIndexes {
		s.ctrs.AddIndex(name, fn)
	}
	st.stacks, st.services, st.ctrs = s.stacks, s.services, s.ctrs
	s.synced = func() bool {
		return s.stacks.HasSynced() && s.services.HasSynced() && s.ctrs.HasSynced() && s.hosts.HasSynced() && s.nets.HasSynced()
	}
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_metadata_requests_total", Help: "Metadata requests by result code."}, []string{"code"})
	s.reg.MustRegister(s.requests, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "drover_metadata_containers", Help: "Containers known."}, func() float64 {
		s.st.mu.RLock()
		defer s.st.mu.RUnlock()
		return float64(len(s.st.ctr))
	}))
	s.metrics = promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
	return s
}

// Run serves until ctx ends. It listens at once; until its caches have
// synced (from a snapshot, or else from the engine) it answers 503.
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
	s := newServer(opts)
	ctx, cancel := context.WithCancel(ctx)
	var caches sync.WaitGroup
	defer caches.Wait() // caches write their final snapshot as they stop
	defer cancel()
	if err := s.startCaches(ctx, &caches); err != nil {
		return err
	}
	ln, err := freebind.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("metadata: listening on %s: %w", opts.Listen, err)
	}
	grace, graceDone := context.WithTimeout(ctx, SyncGrace)
	s.waitSynced(grace)
	graceDone()
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	s.log.Info("metadata serving", "listen", ln.Addr().String(), "stateDir", opts.StateDir, "synced", s.synced())
	if opts.Ready != nil {
		opts.Ready <- ln.Addr().String()
	}
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (s *Server) waitSynced(ctx context.Context) bool {
	for _, w := range []func(context.Context) bool{s.stacks.WaitForSync, s.services.WaitForSync, s.ctrs.WaitForSync, s.hosts.WaitForSync, s.nets.WaitForSync} {
		if !w(ctx) {
			return false
		}
	}
	return true
}

// startCaches points each cache at its snapshot and starts it: stacks,
// services, hosts and networks first, so containers render once with
// everything they show of them, not twice.
func (s *Server) startCaches(ctx context.Context, wg *sync.WaitGroup) error {
	type cache interface {
		Run(context.Context)
		SetSnapshot(string)
	}
	all := map[string]cache{"stacks": s.stacks, "services": s.services, "containers": s.ctrs, "hosts": s.hosts, "networks": s.nets}
	if dir := s.opts.StateDir; dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("metadata: state dir: %w", err)
		}
		for name, c := range all {
			c.SetSnapshot(filepath.Join(dir, name+".json"))
		}
	}
	run := func(c cache) {
		defer wg.Done()
		c.Run(ctx)
	}
	wg.Add(len(all))
	go run(s.stacks)
	go run(s.services)
	go run(s.hosts)
	go run(s.nets)
	go func() {
		if s.stacks.WaitForSync(ctx) && s.services.WaitForSync(ctx) && s.hosts.WaitForSync(ctx) && s.nets.WaitForSync(ctx) {
			run(s.ctrs)
			return
		}
		wg.Done()
	}()
	go func() {
		if !s.waitSynced(ctx) {
			return
		}
		from := "engine"
		if s.ctrs.FromSnapshot() {
			from = "snapshot"
		}
		s.log.Info("metadata complete", "from", from, "containers", s.ctrs.Len())
	}()
	return nil
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
	case "/healthz":
		fmt.Fprintln(w, "ok")
		return
	case "/readyz":
		if !s.synced() {
			http.Error(w, s.notSyncedMessage(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
		return
	case "/metrics":
		s.metrics.ServeHTTP(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		s.writeError(w, r, http.StatusMethodNotAllowed, "Method not allowed")
		return
	}
	segs, ok := splitPath(r.URL.EscapedPath())
	if !ok {
		s.notFound(w, r)
		return
	}
	if len(segs) == 0 {
		vs := make([]any, len(Versions))
		for i, v := range Versions {
			vs[i] = v
		}
		s.write(w, r, http.StatusOK, answer{value: vs})
		return
	}
	if !validVersion(segs[0]) {
		s.notFound(w, r)
		return
	}
	if !s.synced() {
		w.Header().Set("Retry-After", "1")
		s.writeError(w, r, http.StatusServiceUnavailable, s.notSyncedMessage())
		return
	}
	q := r.URL.Query()
	if q.Get("wait") == "true" {
		s.longPoll(r, q.Get("value"), q.Get("maxWait"))
	}
	s.st.mu.RLock()
	a, ok := s.resolve(segs[1:], s.callerIP(r))
	s.st.mu.RUnlock()
	if !ok {
		s.notFound(w, r)
		return
	}
	s.write(w, r, http.StatusOK, a)
}

func (s *Server) notSyncedMessage() string {
	where := "no snapshot"
	if s.opts.StateDir != "" {
		where = "no snapshot in " + s.opts.StateDir
	}
	return fmt.Sprintf("metadata has no data yet: %s, and the engine at %s has not been reached; retry shortly", where, s.opts.Engine.URL())
}

func validVersion(v string) bool {
	for _, x := range Versions {
		if x == v {
			return true
		}
	}
	return false
}

// splitPath cuts an escaped path into unescaped segments, so a key with a
// slash in it (a link's "stack/service", a label "a/b") is reached as one
// segment written with %2F: /latest/self/service/links/shop%2Fdb.
func splitPath(escaped string) ([]string, bool) {
	var out []string
	for _, seg := range strings.Split(escaped, "/") {
		if seg == "" {
			continue
		}
		u, err := url.PathUnescape(seg)
		if err != nil {
			return nil, false
		}
		out = append(out, u)
	}
	return out, true
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

// answer is what a path names: JSON already rendered (raw, with its text
// and YAML forms when they are known without decoding it), or a value
// decoded to walk into.
type answer struct {
	raw   frags
	text  []byte
	yaml  func() []byte
	value any
}

// resolve follows path segments from a version's root. Lists and whole
// objects come from rendered bytes; only a path into an object decodes
// that one object. Called with the read lock.
func (s *Server) resolve(segs []string, ip string) (answer, bool) {
	st, key := s.st, s.opts.TokenKey
	if len(segs) == 0 {
		return s.root(ip), true
	}
	var obj frags
	switch segs[0] {
	case "version":
		if len(segs) > 1 {
			return answer{}, false
		}
		return answer{value: st.versionString()}, true
	case "containers", "services", "stacks", "hosts", "networks":
		l := st.list(segs[0])
		if len(segs) == 1 {
			return answer{raw: frags{l.json}, text: l.text, yaml: func() []byte { return st.listYAML(l) }}, true
		}
		f, ok := l.item(segs[1])
		if !ok {
			return answer{}, false
		}
		obj, segs = f, segs[2:]
	case "self":
		c := st.selfContainer(ip)
		if c == nil {
			return answer{}, false
		}
		if len(segs) == 1 {
			f, keys := st.self(c, key)
			var text strings.Builder
			for _, k := range keys {
				text.WriteString(k + "/\n")
			}
			return answer{raw: f, text: []byte(text.String())}, true
		}
		f, ok := st.selfPart(c, segs[1], key)
		if !ok {
			return answer{}, false
		}
		obj, segs = f, segs[2:]
	default:
		return answer{}, false
	}
	if len(segs) == 0 {
		return answer{raw: obj}, true
	}
	flat := obj.flat()
	if v, ok := topField(flat, segs[0]); ok {
		// One step into the object: scan to that field, decode only it.
		if v == nil {
			return answer{}, false
		}
		var node any
		if err := json.Unmarshal(v, &node); err != nil {
			return answer{}, false
		}
		node, ok := walk(node, segs[1:])
		return answer{value: node}, ok
	}
	var node any
	if err := json.Unmarshal(flat, &node); err != nil {
		return answer{}, false
	}
	node, ok := walk(node, segs)
	return answer{value: node}, ok
}

// root is a version's whole tree.
func (s *Server) root(ip string) answer {
	st := s.st
	f := frags{[]byte(`{"containers":`), st.list("containers").json, []byte(`,"hosts":`), st.list("hosts").json,
		[]byte(`,"networks":`), st.list("networks").json, []byte(`,"self":`)}
	if c := st.selfContainer(ip); c != nil {
		self, _ := st.self(c, s.opts.TokenKey)
		f = append(f, self...)
	} else {
		f = append(f, []byte("{}"))
	}
	f = append(f, []byte(`,"services":`), st.list("services").json, []byte(`,"stacks":`), st.list("stacks").json,
		[]byte(`,"version":"`+st.versionString()+`"}`))
	return answer{raw: f, text: []byte("containers/\nhosts/\nnetworks/\nself/\nservices/\nstacks/\nversion\n")}
}

// walk goes into maps by key and into lists by index or by name.
func walk(node any, segs []string) (any, bool) {
	for _, seg := range segs {
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
	s.writeError(w, r, http.StatusNotFound, "Not found")
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, code int, msg string) {
	s.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	switch formatOf(r) {
	case formatJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]any{"code": code, "message": msg})
	case formatYAML:
		w.Header().Set("Content-Type", "application/yaml")
		w.WriteHeader(code)
		b, _ := yaml.Marshal(map[string]any{"code": code, "message": msg})
		w.Write(b)
	default:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		fmt.Fprint(w, msg)
	}
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, code int, a answer) {
	s.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	f := formatOf(r)
	if a.raw != nil {
		switch {
		case f == formatJSON:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(a.raw.size()+1))
			w.WriteHeader(code)
			for _, b := range a.raw {
				w.Write(b)
			}
			w.Write([]byte("\n"))
			return
		case f == formatText && a.text != nil:
			w.Header().Set("Content-Type", "text/plain")
			w.Header().Set("Content-Length", strconv.Itoa(len(a.text)))
			w.WriteHeader(code)
			w.Write(a.text)
			return
		case f == formatYAML && a.yaml != nil:
			b := a.yaml()
			w.Header().Set("Content-Type", "application/yaml")
			w.Header().Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(code)
			w.Write(b)
			return
		}
		if err := json.Unmarshal(a.raw.flat(), &a.value); err != nil {
			s.writeError(w, r, http.StatusInternalServerError, "rendering: "+err.Error())
			return
		}
	}
	switch f {
	case formatJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(a.value)
	case formatYAML:
		w.Header().Set("Content-Type", "application/yaml")
		w.WriteHeader(code)
		b, _ := yaml.Marshal(a.value)
		w.Write(b)
	default:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		writeText(w, a.value)
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
