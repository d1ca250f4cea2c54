package dns_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/dns"
	"github.com/drover/drover/internal/testenv"
)

// upstream is a second DNS server the test starts, to forward to.
func upstream(t *testing.T) string {
	t.Helper()
	pc, ln := testenv.ListenUDPAndTCP(t)
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		m := new(mdns.Msg)
		m.SetReply(r)
		switch r.Question[0].Name {
		case "example.org.":
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: "example.org.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")})
		case "1.2.0.192.in-addr.arpa.":
			m.Answer = append(m.Answer, &mdns.PTR{Hdr: mdns.RR_Header{Name: r.Question[0].Name, Rrtype: mdns.TypePTR, Class: mdns.ClassINET, Ttl: 60}, Ptr: "upstream.example.org."})
		case "big.example.org.":
			// Too big for UDP: the forwarder must retry over TCP.
			for i := 0; i < 60; i++ {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: "big.example.org.", Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i+1))})
			}
			if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
				m.Answer, m.Truncated = nil, true
			}
		default:
			m.Rcode = mdns.RcodeNameError
		}
		w.WriteMsg(m)
	})
	u := &mdns.Server{PacketConn: pc, Handler: h}
	tc := &mdns.Server{Listener: ln, Handler: h}
	go u.ActivateAndServe()
	go tc.ActivateAndServe()
	t.Cleanup(func() { u.Shutdown(); tc.Shutdown() })
	return pc.LocalAddr().String()
}

type env struct {
	addr     string
	metrics  string
	srv      *apiserver.Server
	stateDir string
	stop     func() // stops the dns server and waits for it
	eng      *client.Client
	web      *api.Service
	ctrs     map[string]*api.Container
	stack    *api.Stack
}

func setup(t *testing.T, upstreams ...string) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real engine, real packets)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	e := &env{eng: eng, srv: srv, ctrs: map[string]*api.Container{}, stateDir: t.TempDir()}
	e.stack, _ = eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop"}})
	nsStack, _ := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "prod"}, Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: "prod"}})
	one := 1
	lc := &api.LaunchConfig{Image: "app"}
	mk := func(s *api.Service) *api.Service {
		out, err := eng.Services().Create(ctx, s)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	e.web = mk(&api.Service{Meta: api.Meta{Name: "web"}, Spec: api.ServiceSpec{StackID: e.stack.ID, Scale: &one, LaunchConfig: lc, Sidekicks: []api.LaunchConfig{{Name: "log", Image: "x"}}}})
	mk(&api.Service{Meta: api.Meta{Name: "api"}, Spec: api.ServiceSpec{StackID: e.stack.ID, Scale: &one, LaunchConfig: lc, VIP: "10.43.0.50"}})
	mk(&api.Service{Meta: api.Meta{Name: "ext"}, Spec: api.ServiceSpec{StackID: e.stack.ID, Kind: api.ServiceExternal, ExternalIPs: []string{"203.0.113.7", "203.0.113.8"}}})
	mk(&api.Service{Meta: api.Meta{Name: "extname"}, Spec: api.ServiceSpec{StackID: e.stack.ID, Kind: api.ServiceExternal, Hostname: "example.org"}})
	mk(&api.Service{Meta: api.Meta{Name: "both"}, Spec: api.ServiceSpec{StackID: e.stack.ID, Kind: api.ServiceAlias, Links: []string{"web", "ext"}}})
	k8s := func(name, vip, ext string, ports []api.ServicePort, eps []api.Endpoint) {
		mk(&api.Service{Meta: api.Meta{Name: name, Labels: map[string]string{"io.drover.kubernetes.namespace": "prod", "io.drover.kubernetes.name": name, "io.drover.kubernetes.uid": "u-" + name, "io.drover.kubernetes.kind": "Service"}},
			Spec: api.ServiceSpec{StackID: nsStack.ID, Kind: api.ServiceKubernetes, VIP: vip, Hostname: ext, Ports: ports}, Status: api.ServiceStatus{Endpoints: eps}})
	}
	k8s("frontend", "10.43.1.1", "", []api.ServicePort{{Name: "http", Protocol: "tcp", Port: 80}}, nil)
	k8s("db", "", "", []api.ServicePort{{Name: "pg", Protocol: "tcp", Port: 5432}}, []api.Endpoint{{IP: "10.42.1.5", Hostname: "db-0", Ports: []api.EndpointPort{{Name: "pg", Port: 5432}}}, {IP: "10.42.1.6"}})
	k8s("search", "", "search.example.com", nil, nil)
	for _, c := range []struct {
		name, ip, health, sidekick string
		svc                        *api.Service
		stack                      string
		kind                       string
	}{
		{"shop-web-1", "127.0.0.2", "healthy", "", e.web, "", ""},
		{"shop-web-2", "10.42.0.3", "", "", e.web, "", ""},
		{"shop-web-3", "10.42.0.4", "unhealthy", "", e.web, "", ""},
		{"shop-web-log-1", "10.42.0.9", "", "log", e.web, "", ""},
		{"frontend-abc", "127.0.0.3", "", "", nil, nsStack.ID, api.ContainerKindPod},
	} {
		ct := &api.Container{Meta: api.Meta{Name: c.name}, Spec: api.ContainerSpec{Kind: c.kind, StackID: c.stack, LaunchConfigName: c.sidekick, LaunchConfig: lc}, Status: api.ContainerStatus{State: "running", PrimaryIP: c.ip, Health: c.health}}
		if c.svc != nil {
			ct.Spec.ServiceID = c.svc.ID
		}
		out, err := eng.Containers().Create(ctx, ct)
		if err != nil {
			t.Fatal(err)
		}
		e.ctrs[c.name] = out
	}
	if len(upstreams) == 0 {
		// Never this machine's resolvers: tests talk to loopback only. A
		// port nothing listens on makes forwarding fail (SERVFAIL).
		dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
		upstreams = []string{dead.LocalAddr().String()}
		dead.Close()
	}
	e.addr, e.metrics, e.stop = startDNS(t, ctx, dns.Options{Engine: eng, Upstreams: upstreams, StateDir: e.stateDir})
	// Every name the test made answers before the test starts.
	waitFor(t, "the dns server's first sync", func() bool {
		r := query(t, e.addr, "udp", "", "shop-web-log-1.drover.internal.", mdns.TypeA)
		return r.Rcode == mdns.RcodeSuccess && len(r.Answer) == 1
	})
	return e
}

// startDNS runs a dns server on a loopback port until ctx ends or the
// returned stop is called, and gives its DNS and metrics addresses.
func startDNS(t *testing.T, ctx context.Context, o dns.Options) (string, string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	o.Listen, o.Logger = "127.0.0.1:0", testenv.Logger()
	o.MetricsListen = fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	ready := make(chan string, 1)
	o.Ready = ready
	s, err := dns.New(o)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("dns server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr := <-ready:
		return addr, o.MetricsListen, stop
	case err := <-done:
		t.Fatalf("dns server ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("dns server not listening after 20s")
	}
	return "", "", nil
}

// waitFor polls cond until it holds; the generous deadline only bounds a
// test that would otherwise hang (speed is measured in benchmarks).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// query asks name/qtype over proto from a source IP.
func query(t *testing.T, addr, proto, from, name string, qtype uint16) *mdns.Msg {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	c := &mdns.Client{Net: proto, Timeout: 5 * time.Second}
	if from != "" {
		if proto == "tcp" {
			c.Dialer = &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		} else {
			c.Dialer = &net.Dialer{LocalAddr: &net.UDPAddr{IP: net.ParseIP(from)}}
		}
	}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s over %s: %v", name, mdns.TypeToString[qtype], proto, err)
	}
	return r
}

func answers(r *mdns.Msg) string {
	var out []string
	for _, rr := range r.Answer {
		switch v := rr.(type) {
		case *mdns.A:
			out = append(out, v.A.String())
		case *mdns.CNAME:
			out = append(out, "CNAME "+v.Target)
		case *mdns.SRV:
			out = append(out, fmt.Sprintf("SRV %d %s", v.Port, v.Target))
		case *mdns.PTR:
			out = append(out, "PTR "+v.Ptr)
		case *mdns.TXT:
			out = append(out, "TXT "+strings.Join(v.Txt, " "))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

func TestIntegrationRecords(t *testing.T) {
	e := setup(t)
	cases := []struct {
		name  string
		qtype uint16
		want  string
		rcode int
	}{
		{"web.shop.drover.internal.", mdns.TypeA, "10.42.0.3,127.0.0.2", mdns.RcodeSuccess}, // the unhealthy one left out
		{"WEB.shop.rancher.internal.", mdns.TypeA, "10.42.0.3,127.0.0.2", mdns.RcodeSuccess},
		{"log.web.shop.drover.internal.", mdns.TypeA, "10.42.0.9", mdns.RcodeSuccess},
		{"api.shop.drover.internal.", mdns.TypeA, "10.43.0.50", mdns.RcodeSuccess},
		{"ext.shop.drover.internal.", mdns.TypeA, "203.0.113.7,203.0.113.8", mdns.RcodeSuccess},
		{"extname.shop.drover.internal.", mdns.TypeA, "CNAME example.org.", mdns.RcodeSuccess},
		{"both.shop.drover.internal.", mdns.TypeA, "10.42.0.3,127.0.0.2,203.0.113.7,203.0.113.8", mdns.RcodeSuccess},
		{"shop-web-2.drover.internal.", mdns.TypeA, "10.42.0.3", mdns.RcodeSuccess},
		{"frontend.prod.svc.cluster.local.", mdns.TypeA, "10.43.1.1", mdns.RcodeSuccess},
		{"db.prod.svc.cluster.local.", mdns.TypeA, "10.42.1.5,10.42.1.6", mdns.RcodeSuccess},
		{"db-0.db.prod.svc.cluster.local.", mdns.TypeA, "10.42.1.5", mdns.RcodeSuccess},
		{"10-42-1-6.db.prod.svc.cluster.local.", mdns.TypeA, "10.42.1.6", mdns.RcodeSuccess},
		{"_http._tcp.frontend.prod.svc.cluster.local.", mdns.TypeSRV, "SRV 80 frontend.prod.svc.cluster.local.", mdns.RcodeSuccess},
		{"_pg._tcp.db.prod.svc.cluster.local.", mdns.TypeSRV, "SRV 5432 10-42-1-6.db.prod.svc.cluster.local.,SRV 5432 db-0.db.prod.svc.cluster.local.", mdns.RcodeSuccess},
		{"1.1.43.10.in-addr.arpa.", mdns.TypePTR, "PTR frontend.prod.svc.cluster.local.", mdns.RcodeSuccess},
		{"5.1.42.10.in-addr.arpa.", mdns.TypePTR, "PTR db-0.db.prod.svc.cluster.local.", mdns.RcodeSuccess},
		{"search.prod.svc.cluster.local.", mdns.TypeA, "CNAME search.example.com.", mdns.RcodeSuccess},
		{"dns-version.cluster.local.", mdns.TypeTXT, "TXT 1.1.0", mdns.RcodeSuccess},
		{"nope.shop.drover.internal.", mdns.TypeA, "", mdns.RcodeNameError},
		{"nope.prod.svc.cluster.local.", mdns.TypeA, "", mdns.RcodeNameError},
		{"web.shop.drover.internal.", mdns.TypeTXT, "", mdns.RcodeSuccess}, // NODATA
		{"prod.svc.cluster.local.", mdns.TypeA, "", mdns.RcodeSuccess},     // an empty non-terminal
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range cases {
			r := query(t, e.addr, proto, "", tc.name, tc.qtype)
			if got := answers(r); got != tc.want || r.Rcode != tc.rcode {
				t.Errorf("%s %s %s: rcode %s answers %q; want %s %q", proto, tc.name, mdns.TypeToString[tc.qtype], mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[tc.rcode], tc.want)
			}
			if tc.rcode == mdns.RcodeNameError || (tc.want == "" && tc.rcode == mdns.RcodeSuccess) {
				if len(r.Ns) != 1 || r.Ns[0].Header().Rrtype != mdns.TypeSOA {
					t.Errorf("%s %s: negative answer without SOA: %v", proto, tc.name, r.Ns)
				}
			}
		}
	}
	// Metrics, named like CoreDNS's.
	resp, err := http.Get("http://" + e.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`drover_dns_requests_total{proto="udp",type="A"}`, `drover_dns_responses_total{rcode="NXDOMAIN"}`, "drover_dns_request_duration_seconds_bucket", "drover_dns_cache_misses_total"} {
		if !strings.Contains(string(body), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
	// ANY and multi-question queries are refused cleanly.
	if r := query(t, e.addr, "udp", "", "web.shop.drover.internal.", mdns.TypeANY); r.Rcode != mdns.RcodeRefused {
		t.Errorf("ANY: %s", mdns.RcodeToString[r.Rcode])
	}
	m := new(mdns.Msg)
	m.SetQuestion("web.shop.drover.internal.", mdns.TypeA)
	m.Question = append(m.Question, mdns.Question{Name: "api.shop.drover.internal.", Qtype: mdns.TypeA, Qclass: mdns.ClassINET})
	if r, err := mdns.Exchange(m, e.addr); err != nil || r.Rcode != mdns.RcodeFormatError {
		t.Errorf("two questions: %v %v", r, err)
	}
}

func TestIntegrationSearchByCaller(t *testing.T) {
	e := setup(t)
	// 127.0.0.2 is shop-web-1 (stack shop); 127.0.0.3 is a pod of namespace prod.
	for _, tc := range []struct{ from, name, want string }{
		{"127.0.0.2", "api.", "10.43.0.50"},
		{"127.0.0.2", "api.shop.", "10.43.0.50"},
		{"127.0.0.3", "frontend.", "10.43.1.1"},
		{"127.0.0.3", "frontend.prod.", "10.43.1.1"},
		{"127.0.0.9", "frontend.prod.", "10.43.1.1"}, // svc.ns works for anyone
	} {
		r := query(t, e.addr, "udp", tc.from, tc.name, mdns.TypeA)
		if got := answers(r); got != tc.want || r.Answer[0].Header().Name != tc.name {
			t.Errorf("%s asking %s: %q (name %v), want %q", tc.from, tc.name, got, r.Answer, tc.want)
		}
	}
	// A stranger's short name is not ours: it goes upstream (none here: SERVFAIL).
	if r := query(t, e.addr, "udp", "127.0.0.9", "api.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("stranger asking api.: %s", mdns.RcodeToString[r.Rcode])
	}
}

func TestIntegrationForwardingAndChanges(t *testing.T) {
	up := upstream(t)
	e := setup(t, up)
	r := query(t, e.addr, "udp", "", "example.org.", mdns.TypeA)
	if answers(r) != "192.0.2.1" {
		t.Fatalf("forwarded: %v", r)
	}
	r = query(t, e.addr, "tcp", "", "big.example.org.", mdns.TypeA)
	if len(r.Answer) != 60 {
		t.Fatalf("truncated upstream answer not retried over TCP: %d answers", len(r.Answer))
	}
	if r := query(t, e.addr, "udp", "", "missing.example.org.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("upstream NXDOMAIN: %s", mdns.RcodeToString[r.Rcode])
	}
	// Over UDP the big answer comes truncated (TC) unless EDNS0 allows more.
	m := new(mdns.Msg)
	m.SetQuestion("big.example.org.", mdns.TypeA)
	if r, _ := mdns.Exchange(m, e.addr); !r.Truncated {
		t.Fatalf("512-byte UDP answer not truncated: %d answers", len(r.Answer))
	}
	m.SetEdns0(4096, false)
	if r, _ := mdns.Exchange(m, e.addr); r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("EDNS0 4096 not honoured: truncated=%v %d answers", r.Truncated, len(r.Answer))
	}
	// Engine changes show.
	if _, err := e.eng.Containers().PatchStatus(context.Background(), e.ctrs["shop-web-2"].ID, map[string]any{"status": map[string]any{"state": "stopped"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a stopped container to leave its service's answer", func() bool {
		return answers(query(t, e.addr, "udp", "", "web.shop.drover.internal.", mdns.TypeA)) == "127.0.0.2"
	})
	// dig agrees (a second, independent client).
	if _, err := exec.LookPath("dig"); err != nil {
		t.Fatal("dig is not installed: make test installs it (apt-get install bind9-dnsutils)")
	}
	host, port, _ := net.SplitHostPort(e.addr)
	out, err := exec.Command("dig", "+short", "+tcp", "@"+host, "-p", port, "api.shop.drover.internal", "A").Output()
	if err != nil || strings.TrimSpace(string(out)) != "10.43.0.50" {
		t.Fatalf("dig: %q %v", out, err)
	}
	out, _ = exec.Command("dig", "+short", "@"+host, "-p", port, "_http._tcp.frontend.prod.svc.cluster.local", "SRV").Output()
	if strings.TrimSpace(string(out)) != "0 100 80 frontend.prod.svc.cluster.local." {
		t.Fatalf("dig SRV: %q", out)
	}
}

func TestIntegrationServfailNotCached(t *testing.T) {
	// An upstream that does not answer: SERVFAIL, and not remembered.
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	addr := dead.LocalAddr().String()
	dead.Close()
	e := setup(t, addr)
	if r := query(t, e.addr, "udp", "", "example.org.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("dead upstream: %s", mdns.RcodeToString[r.Rcode])
	}
}

func readyz(t *testing.T, metrics string) int {
	t.Helper()
	resp, err := http.Get("http://" + metrics + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A restart while the engine is away answers from the snapshot the last
// run left, from its first query on.
func TestIntegrationRestartFromSnapshotWithoutEngine(t *testing.T) {
	e := setup(t)
	// A change made while running is in the snapshot too.
	if _, err := e.eng.Containers().PatchStatus(context.Background(), e.ctrs["shop-web-2"].ID, map[string]any{"status": map[string]any{"state": "stopped"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change", func() bool {
		return answers(query(t, e.addr, "udp", "", "web.shop.drover.internal.", mdns.TypeA)) == "127.0.0.2"
	})
	e.stop()
	e.srv.Close()

	start := time.Now()
	addr, metrics, _ := startDNS(t, context.Background(), dns.Options{Engine: e.eng, Upstreams: []string{"127.0.0.1:1"}, StateDir: e.stateDir})
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	m := new(mdns.Msg)
	m.SetQuestion("web.shop.drover.internal.", mdns.TypeA)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("first query after a restart without the engine: %v", err)
	}
	t.Logf("first answer %s after start", time.Since(start))
	if got := answers(r); r.Rcode != mdns.RcodeSuccess || got != "127.0.0.2" {
		t.Fatalf("first answer from the snapshot: %s %q, want 127.0.0.2", mdns.RcodeToString[r.Rcode], got)
	}
	for _, tc := range []struct{ name, want string }{
		{"db-0.db.prod.svc.cluster.local.", "10.42.1.5"},
		{"both.shop.drover.internal.", "127.0.0.2,203.0.113.7,203.0.113.8"},
	} {
		if got := answers(query(t, addr, "tcp", "", tc.name, mdns.TypeA)); got != tc.want {
			t.Errorf("%s from the snapshot: %q, want %q", tc.name, got, tc.want)
		}
	}
	// Search paths come from the snapshot as well.
	if got := answers(query(t, addr, "udp", "127.0.0.2", "api.", mdns.TypeA)); got != "10.43.0.50" {
		t.Errorf("search from the snapshot: %q", got)
	}
	if code := readyz(t, metrics); code != http.StatusOK {
		t.Errorf("/readyz from a snapshot: %d", code)
	}
}

// With neither snapshot nor engine it still listens: other names are
// forwarded, drover's own zones answer SERVFAIL (not a NXDOMAIN a client
// would cache) and /readyz says why it is not ready.
func TestIntegrationNoSnapshotNoEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (real packets)")
	}
	up := upstream(t)
	dead := client.New(fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), "k", "s")
	addr, metrics, _ := startDNS(t, context.Background(), dns.Options{Engine: dead, Upstreams: []string{up}, StateDir: t.TempDir()})
	if got := answers(query(t, addr, "udp", "", "example.org.", mdns.TypeA)); got != "192.0.2.1" {
		t.Errorf("forwarded without the engine: %q", got)
	}
	for _, name := range []string{"web.shop.drover.internal.", "db.prod.svc.cluster.local."} {
		if r := query(t, addr, "udp", "", name, mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
			t.Errorf("%s before any sync: %s, want SERVFAIL", name, mdns.RcodeToString[r.Rcode])
		}
	}
	if code := readyz(t, metrics); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any sync: %d, want 503", code)
	}
}

// Reverse lookups of engine containers' addresses are answered from the
// engine's data, pointing at each container's own forward name; every
// other address, and any malformed reverse name, is forwarded as before.
func TestIntegrationReverseLookups(t *testing.T) {
	up := upstream(t)
	e := setup(t, up)
	ctx := context.Background()
	// A sidekick in shop-web-2's network namespace shares its address.
	if _, err := e.eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "shop-web-net-2"}, Spec: api.ContainerSpec{ServiceID: e.web.ID, LaunchConfigName: "net",
		LaunchConfig: &api.LaunchConfig{Image: "x", NetworkMode: "container:web"}}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.3"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sidekick's name", func() bool {
		return answers(query(t, e.addr, "udp", "", "shop-web-net-2.drover.internal.", mdns.TypeA)) == "10.42.0.3"
	})
	cases := []struct {
		name  string
		want  string
		rcode int
	}{
		{"2.0.0.127.in-addr.arpa.", "PTR shop-web-1.drover.internal.", mdns.RcodeSuccess},
		{"3.0.42.10.IN-ADDR.ARPA.", "PTR shop-web-2.drover.internal.", mdns.RcodeSuccess}, // the namespace's owner, not the sidekick
		{"9.0.42.10.in-addr.arpa.", "PTR shop-web-log-1.drover.internal.", mdns.RcodeSuccess},
		{"5.1.42.10.in-addr.arpa.", "PTR db-0.db.prod.svc.cluster.local.", mdns.RcodeSuccess}, // Kubernetes' as before
		{"1.2.0.192.in-addr.arpa.", "PTR upstream.example.org.", mdns.RcodeSuccess},           // no container's: forwarded
		{"4.0.42.10.in-addr.arpa.", "", mdns.RcodeNameError},                                  // shop-web-3 is unhealthy: not ours
		{"3.0.0.127.in-addr.arpa.", "", mdns.RcodeNameError},                                  // a pod's address
		{"0.42.10.in-addr.arpa.", "", mdns.RcodeNameError},
		// Malformed reverse names go upstream like any other name.
		{"1.3.0.42.10.in-addr.arpa.", "", mdns.RcodeNameError},
		{"300.0.42.10.in-addr.arpa.", "", mdns.RcodeNameError},
		{"x.in-addr.arpa.", "", mdns.RcodeNameError},
		{"in-addr.arpa.", "", mdns.RcodeNameError},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, tc := range cases {
			r := query(t, e.addr, proto, "", tc.name, mdns.TypePTR)
			if got := answers(r); got != tc.want || r.Rcode != tc.rcode {
				t.Errorf("%s PTR %s: %s %q, want %s %q", proto, tc.name, mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[tc.rcode], tc.want)
			}
			if tc.rcode == mdns.RcodeSuccess && len(r.Answer) > 0 && r.Answer[0].Header().Name != tc.name {
				t.Errorf("%s PTR %s: answer named %s", proto, tc.name, r.Answer[0].Header().Name)
			}
		}
	}
	// dig -x agrees.
	host, port, _ := net.SplitHostPort(e.addr)
	if out, err := exec.Command("dig", "+short", "@"+host, "-p", port, "-x", "10.42.0.3").Output(); err != nil || strings.TrimSpace(string(out)) != "shop-web-2.drover.internal." {
		t.Errorf("dig -x 10.42.0.3: %q %v", out, err)
	}
	// Changes follow: stopped, the address goes to the one still serving
	// at it; a new address moves the name.
	if _, err := e.eng.Containers().PatchStatus(ctx, e.ctrs["shop-web-2"].ID, map[string]any{"status": map[string]any{"state": "stopped"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reverse name to follow a stop", func() bool {
		return answers(query(t, e.addr, "udp", "", "3.0.42.10.in-addr.arpa.", mdns.TypePTR)) == "PTR shop-web-net-2.drover.internal."
	})
	if _, err := e.eng.Containers().PatchStatus(ctx, e.ctrs["shop-web-log-1"].ID, map[string]any{"status": map[string]any{"primaryIP": "10.42.0.19"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the reverse name to follow an address change", func() bool {
		return answers(query(t, e.addr, "udp", "", "19.0.42.10.in-addr.arpa.", mdns.TypePTR)) == "PTR shop-web-log-1.drover.internal." &&
			query(t, e.addr, "udp", "", "9.0.42.10.in-addr.arpa.", mdns.TypePTR).Rcode == mdns.RcodeNameError
	})
}
