package lb

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func rule(i, port int, proto, host, path, backend string, prio int, targets ...Target) Rule {
	return Rule{Index: i, PortRule: api.PortRule{SourcePort: port, Protocol: proto, Hostname: host, Path: path, Priority: prio, TargetPort: 80}, Backend: backend, Targets: targets}
}

var (
	web1 = Target{Name: "shop-web-1", IP: "10.42.0.5", Port: 8080}
	web2 = Target{Name: "shop-web-2", IP: "10.42.1.7", Port: 8080}
	api1 = Target{Name: "shop-api-1", IP: "10.42.0.9", Port: 9000}
)

var cases = map[string]Input{
	// Rancher's order: priority, then host+path, host, wildcard, path, default.
	"http-routing": {Rules: []Rule{
		rule(0, 80, "http", "", "", "web_8080", 0, web1, web2),
		rule(1, 80, "http", "", "/api", "api_9000", 0, api1),
		rule(2, 80, "http", "*.example.com", "", "web_8080", 0, web1, web2),
		rule(3, 80, "http", "shop.example.com", "/api", "api_9000", 0, api1),
		rule(4, 80, "http", "shop.example.com", "", "web_8080", 0, web1, web2),
		rule(5, 80, "http", "example.*", "", "api_9000", 1, api1),
	}},
	// Kubernetes Ingress path types: an exact path before a prefix of the
	// same length, prefixes by path element, "/" matching everything.
	"ingress-path-types": {Rules: []Rule{
		{Index: 0, PortRule: api.PortRule{SourcePort: 80, Hostname: "shop.example.com", Path: "/", PathType: api.PathPrefix}, Backend: "web_8080", Targets: []Target{web1}},
		{Index: 1, PortRule: api.PortRule{SourcePort: 80, Hostname: "shop.example.com", Path: "/api/", PathType: api.PathPrefix}, Backend: "api_9000", Targets: []Target{api1}},
		{Index: 2, PortRule: api.PortRule{SourcePort: 80, Hostname: "shop.example.com", Path: "/api", PathType: api.PathExact}, Backend: "web_8080", Targets: []Target{web1}},
		{Index: 3, PortRule: api.PortRule{SourcePort: 80, Path: "/static.v2", PathType: api.PathPrefix}, Backend: "web_8080", Targets: []Target{web1}},
		{Index: 4, PortRule: api.PortRule{SourcePort: 80, Path: "/", PathType: api.PathPrefix}, Backend: "api_9000", Targets: []Target{api1}},
	}},
	"tcp-and-health": {Rules: []Rule{
		{Index: 0, PortRule: api.PortRule{SourcePort: 5432, Protocol: "tcp"}, Backend: "db_5432", Targets: []Target{{Name: "db-1", IP: "10.42.0.3", Port: 5432}},
			Check: &api.HealthCheck{Port: 5432, Interval: 2000, HealthyThreshold: 2, UnhealthyThreshold: 3}},
		{Index: 1, PortRule: api.PortRule{SourcePort: 80, Protocol: "http"}, Backend: "web_8080", Targets: []Target{web1, web2},
			Check: &api.HealthCheck{Port: 8080, RequestLine: "GET /healthz HTTP/1.0", Interval: 2000, HealthyThreshold: 2, UnhealthyThreshold: 3}},
	}, Stickiness: &api.StickinessPolicy{Cookie: "SRV", Mode: "insert", Indirect: true, NoCache: true}, Extra: "listen stats\n    bind 127.0.0.1:9090\n    mode http\n    stats enable"},
	"tls-sni": {Rules: []Rule{
		rule(0, 443, "https", "a.example.com", "", "web_8080", 0, web1),
		rule(1, 443, "https", "", "", "api_9000", 0, api1),
		{Index: 2, PortRule: api.PortRule{SourcePort: 8443, Protocol: "sni", Hostname: "b.example.com"}, Backend: "tlsweb_443", Targets: []Target{{Name: "tlsweb-1", IP: "10.42.0.11", Port: 443}}},
	}, Certs: []CertFile{{File: "a.pem", Names: []string{"a.example.com"}}, {File: "b.pem", Names: []string{"b.example.com"}}, {File: "c.pem", Names: []string{"c.example.com"}}}, DefaultCert: "default.pem"},
}

func TestRenderGolden(t *testing.T) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is missing: the renderer's configs are checked with the real one (make deps installs Debian's haproxy)")
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			in.CertDir, in.SocketPath = "/CERTDIR", "/run/drover-lb/haproxy.sock"
			out, err := Render(in)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", name+".cfg")
			got := out.Config
			if out.CrtList != "" {
				got += "# crt-list\n" + out.CrtList
			}
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test ./lb -update writes it)", err)
			}
			if got != string(want) {
				t.Fatalf("rendered config differs from %s:\n%s", golden, got)
			}
			// The real haproxy takes it, with real certificates.
			dir := t.TempDir()
			in.CertDir, in.SocketPath = dir, filepath.Join(dir, "haproxy.sock")
			for _, c := range append(in.Certs, CertFile{File: in.DefaultCert}) {
				if c.File != "" {
					writeCert(t, filepath.Join(dir, c.File), append(c.Names, "default.example.com")...)
				}
			}
			out, _ = Render(in)
			os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(out.Config), 0o644)
			if out.CrtList != "" {
				os.WriteFile(filepath.Join(dir, "crt-list"), []byte(out.CrtList), 0o644)
			}
			if b, err := exec.Command(haproxy, "-c", "-f", filepath.Join(dir, "haproxy.cfg")).CombinedOutput(); err != nil {
				t.Fatalf("haproxy -c refused it: %v\n%s\n%s", err, b, out.Config)
			}
		})
	}
}

func TestRenderRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		in   Input
		want string
	}{
		"udp":             {Input{Rules: []Rule{rule(3, 53, "udp", "", "", "dns_53", 0)}}, "port_rules[3].protocol: udp is not HAProxy's"},
		"mixed protocols": {Input{Rules: []Rule{rule(0, 80, "http", "", "", "a_1", 0), rule(1, 80, "tcp", "", "", "b_1", 0)}}, "port_rules[1].protocol: tcp on port 80"},
		"https no cert":   {Input{Rules: []Rule{rule(0, 443, "https", "", "", "a_1", 0)}}, "needs a certificate"},
	} {
		if _, err := Render(c.in); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error with %q, got %v", name, c.want, err)
		}
	}
}

// writeCert writes a self-signed certificate and its key into one PEM.
func writeCert(t *testing.T, path string, names ...string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	b = append(b, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})...)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRuntimeChanges(t *testing.T) {
	base := Input{Rules: []Rule{rule(0, 80, "http", "", "", "web_8080", 0, web1, web2)}}
	a, _ := Render(base)
	moved := base
	moved.Rules = []Rule{rule(0, 80, "http", "", "", "web_8080", 0, Target{Name: "shop-web-1", IP: "10.42.3.3", Port: 8080}, Target{Name: "shop-web-2", IP: "10.42.1.7", Port: 8080, Down: true})}
	b, _ := Render(moved)
	cmds, ok := RuntimeChanges(a.Config, b.Config)
	if !ok || strings.Join(cmds, ";") != "set server web_8080/shop-web-1 addr 10.42.3.3 port 8080;set server web_8080/shop-web-2 state maint" {
		t.Fatalf("got %v %v", cmds, ok)
	}
	// Scaled down, then up: servers deleted and added at run time.
	scaled := base
	scaled.Rules = []Rule{rule(0, 80, "http", "", "", "web_8080", 0, web1)}
	c, _ := Render(scaled)
	cmds, ok = RuntimeChanges(a.Config, c.Config)
	if !ok || strings.Join(cmds, ";") != "set server web_8080/shop-web-2 state maint;del server web_8080/shop-web-2" {
		t.Fatalf("scaled down: %v %v", cmds, ok)
	}
	cmds, ok = RuntimeChanges(c.Config, a.Config)
	if !ok || strings.Join(cmds, ";") != "add server web_8080/shop-web-2 10.42.1.7:8080;enable server web_8080/shop-web-2" {
		t.Fatalf("scaled up: %v %v", cmds, ok)
	}
	// HAProxy 2.6 takes no cookie on a server added at run time: a reload.
	sticky, scaledSticky := base, scaled
	sticky.Stickiness = &api.StickinessPolicy{Cookie: "S"}
	scaledSticky.Stickiness = sticky.Stickiness
	d, _ := Render(sticky)
	e, _ := Render(scaledSticky)
	if _, ok := RuntimeChanges(e.Config, d.Config); ok {
		t.Fatal("adding a server with a cookie is not a Runtime API change")
	}
	// Another rule is a reload.
	more := base
	more.Rules = append(more.Rules, rule(1, 81, "http", "", "", "web_8080", 0, web1, web2))
	f, _ := Render(more)
	if _, ok := RuntimeChanges(a.Config, f.Config); ok {
		t.Fatal("a new frontend is not a Runtime API change")
	}
}

// A rule may target a Kubernetes service: its ready endpoints (from
// kubernetes-agent) are the backends, on the rule's target port.
func TestResolveKubernetesService(t *testing.T) {
	lbSvc := &api.Service{Meta: api.Meta{ID: "s-lb", Name: "lb"}, Spec: api.ServiceSpec{StackID: "st-1", Kind: api.ServiceLoadBalancer,
		LBConfig: &api.LBConfig{PortRules: []api.PortRule{{SourcePort: 80, TargetPort: 8080, ServiceID: "prod/web"}}}}}
	k8s := &api.Service{Meta: api.Meta{ID: "s-web", Name: "web"}, Spec: api.ServiceSpec{StackID: "st-prod", Kind: api.ServiceKubernetes},
		Status: api.ServiceStatus{Endpoints: []api.Endpoint{
			{IP: "10.42.0.7", Ports: []api.EndpointPort{{Name: "http", Port: 8080}, {Name: "metrics", Port: 9090}}},
			{IP: "10.42.1.9", Ports: []api.EndpointPort{{Name: "http", Port: 8080}}},
		}}}
	stacks := []*api.Stack{{Meta: api.Meta{ID: "st-1", Name: "shop"}}, {Meta: api.Meta{ID: "st-prod", Name: "prod"}}}
	rules, err := Resolve(lbSvc, []*api.Service{lbSvc, k8s}, stacks, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 1 || len(rules[0].Targets) != 2 || rules[0].Targets[0].IP != "10.42.0.7" || rules[0].Targets[1].Port != 8080 || rules[0].Backend != "prod_web_8080" {
		t.Fatalf("rules %+v", rules)
	}
	lbSvc.Spec.LBConfig.PortRules[0].ServiceID = "nope/web"
	if _, err := Resolve(lbSvc, []*api.Service{lbSvc, k8s}, stacks, nil); err == nil || !strings.Contains(err.Error(), `no stack "nope"`) {
		t.Fatalf("an unknown stack: %v", err)
	}
}
