package metadata_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/metadata"
)

// Rancher's client types (go-rancher-metadata), as a client written against
// Rancher would declare them.
type rancherContainer struct {
	Name              string             `json:"name"`
	UUID              string             `json:"uuid"`
	PrimaryIP         string             `json:"primary_ip"`
	PrimaryMacAddress string             `json:"primary_mac_address"`
	IPs               []string           `json:"ips"`
	ExternalID        string             `json:"external_id"`
	HostUUID          string             `json:"host_uuid"`
	StackName         string             `json:"stack_name"`
	StackUUID         string             `json:"stack_uuid"`
	ServiceName       string             `json:"service_name"`
	ServiceUUID       string             `json:"service_uuid"`
	ServiceIndex      string             `json:"service_index"`
	Labels            map[string]string  `json:"labels"`
	Ports             []string           `json:"ports"`
	State             string             `json:"state"`
	HealthState       string             `json:"health_state"`
	HealthCheck       rancherHealthCheck `json:"health_check"`
	StartCount        int                `json:"start_count"`
	CreateIndex       int                `json:"create_index"`
	DNS               []string           `json:"dns"`
	DNSSearch         []string           `json:"dns_search"`
	NetworkUUID       string             `json:"network_uuid"`
	Hostname          string             `json:"hostname"`
	Links             map[string]string  `json:"links"`
	EnvironmentUUID   string             `json:"environment_uuid"`
	EnvironmentName   string             `json:"environment_name"`
}

type rancherHealthCheck struct {
	HealthyThreshold   int    `json:"healthy_threshold"`
	Interval           int    `json:"interval"`
	Port               int    `json:"port"`
	RequestLine        string `json:"request_line"`
	ResponseTimeout    int    `json:"response_timeout"`
	UnhealthyThreshold int    `json:"unhealthy_threshold"`
}

type rancherService struct {
	Name               string             `json:"name"`
	UUID               string             `json:"uuid"`
	StackName          string             `json:"stack_name"`
	StackUUID          string             `json:"stack_uuid"`
	Kind               string             `json:"kind"`
	VIP                string             `json:"vip"`
	FQDN               string             `json:"fqdn"`
	CreateIndex        int                `json:"create_index"`
	ExternalIPs        []string           `json:"external_ips"`
	Hostname           string             `json:"hostname"`
	Containers         []rancherContainer `json:"containers"`
	Labels             map[string]string  `json:"labels"`
	Metadata           map[string]any     `json:"metadata"`
	Sidekicks          []string           `json:"sidekicks"`
	Links              map[string]string  `json:"links"`
	Ports              []string           `json:"ports"`
	Scale              int                `json:"scale"`
	State              string             `json:"state"`
	HealthCheck        rancherHealthCheck `json:"health_check"`
	LBConfig           map[string]any     `json:"lb_config"`
	PrimaryServiceName string             `json:"primary_service_name"`
	EnvironmentUUID    string             `json:"environment_uuid"`
	EnvironmentName    string             `json:"environment_name"`
	Token              string             `json:"token"`
}

type rancherStack struct {
	Name            string           `json:"name"`
	UUID            string           `json:"uuid"`
	EnvironmentName string           `json:"environment_name"`
	EnvironmentUUID string           `json:"environment_uuid"`
	Services        []rancherService `json:"services"`
	System          bool             `json:"system"`
}

type rancherHost struct {
	Name            string            `json:"name"`
	UUID            string            `json:"uuid"`
	HostID          int               `json:"host_id"`
	AgentIP         string            `json:"agent_ip"`
	Hostname        string            `json:"hostname"`
	Labels          map[string]string `json:"labels"`
	Memory          int64             `json:"memory"`
	MilliCPU        int64             `json:"milli_cpu"`
	LocalStorageMB  int64             `json:"local_storage_mb"`
	State           string            `json:"state"`
	EnvironmentUUID string            `json:"environment_uuid"`
}

type env struct {
	url      string
	stateDir string
	stop     func() // stops the metadata server and waits for it
	srv      *apiserver.Server
	eng      *client.Client
	host     *api.Host
	web      *api.Service
	db       *api.Service
	c1       *api.Container
}

func setup(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real engine)")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	e := &env{eng: eng, srv: srv, stateDir: t.TempDir()}
	host, err := eng.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "node1", Labels: map[string]string{"zone": "a"}}, Status: api.HostStatus{AgentIP: "10.0.0.1", Hostname: "node1.example", Capacity: api.Capacity{MemoryBytes: 1 << 30, MilliCPU: 2000}}})
	if err != nil {
		t.Fatal(err)
	}
	e.host = host
	st, _ := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop"}})
	scale := 2
	e.web, _ = eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "web", Labels: map[string]string{"tier": "front"}}, Spec: api.ServiceSpec{StackID: st.ID, Scale: &scale, Links: []string{"db:database", "other/cache"},
		LaunchConfig: &api.LaunchConfig{Image: "app", Ports: []string{"80/tcp"}}, Sidekicks: []api.LaunchConfig{{Name: "log", Image: "busybox"}},
		HealthCheck: &api.HealthCheck{Port: 80, RequestLine: "GET /healthz HTTP/1.0", Interval: 2000, ResponseTimeout: 2000, HealthyThreshold: 2, UnhealthyThreshold: 3},
		Metadata:    map[string]any{"example": map[string]any{"name": "hello", "value": "world"}, "example2": map[string]any{"foo": "bar"}}}})
	e.db, _ = eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "db"}, Spec: api.ServiceSpec{StackID: st.ID, LaunchConfig: &api.LaunchConfig{Image: "pg"}}})
	// The caller of these tests is 127.0.0.2 (web-1); 127.0.0.3 is db-1.
	for _, c := range []struct {
		name, svc, ip string
		idx           int
	}{{"shop-web-1", e.web.ID, "127.0.0.2", 1}, {"shop-web-2", e.web.ID, "10.42.0.3", 2}, {"shop-db-1", e.db.ID, "127.0.0.3", 1}} {
		// Labels as placement sets them.
		labels := map[string]string{"io.drover.stack.name": "shop", "io.drover.service.launch.config": "io.drover.service.primary.launch.config"}
		ct, err := eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: c.name, Labels: labels}, Spec: api.ContainerSpec{ServiceID: c.svc, HostID: host.ID, ServiceIndex: c.idx, LaunchConfig: &api.LaunchConfig{Image: "app"}},
			Status: api.ContainerStatus{State: "running", PrimaryIP: c.ip, MAC: "02:00:00:00:00:01", DockerID: "4f3c2b1a0e9d7c6b5a4f3e2d1c0b" + c.name}})
		if err != nil {
			t.Fatal(err)
		}
		if c.idx == 1 && c.svc == e.web.ID {
			e.c1 = ct
		}
	}
	e.url, e.stop = startMetadata(t, ctx, metadata.Options{Engine: eng, StateDir: e.stateDir})
	// Everything the test made is there before the test starts.
	waitFor(t, "the metadata server's first sync", func() bool {
		code, body := get(t, e.url+"/latest/containers", "127.0.0.2", "")
		return code == 200 && strings.Count(body, "\n") == 3
	})
	return e
}

// startMetadata runs a metadata server on a loopback port until ctx ends
// or the returned stop is called, and gives its URL.
func startMetadata(t *testing.T, ctx context.Context, o metadata.Options) (string, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	ready := make(chan string, 1)
	o.Listen, o.Logger, o.TokenKey, o.Ready = "127.0.0.1:0", testenv.Logger(), []byte("k"), ready
	done := make(chan error, 1)
	go func() { done <- metadata.Run(ctx, o) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("metadata server: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case addr := <-ready:
		return "http://" + addr, stop
	case err := <-done:
		t.Fatalf("metadata server ended: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("metadata server not listening after 20s")
	}
	return "", nil
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

// get fetches a path as the caller with source IP from, in a format.
func get(t *testing.T, url, from, accept string) (int, string) {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	req, _ := http.NewRequest("GET", url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestIntegrationPathsAndFormats(t *testing.T) {
	e := setup(t)
	const me = "127.0.0.2"
	cases := []struct{ path, accept, want string }{
		{"/", "", "2015-07-25\n2015-12-19\n2016-07-29\nlatest\n"},
		{"/latest", "", "containers/\nhosts/\nnetworks/\nself/\nservices/\nstacks/\nversion\n"},
		{"/latest/self/container/name", "", "shop-web-1"},
		{"/latest/self/container/primary_ip", "", me},
		{"/latest/self/container/service_index", "", "1"},
		{"/2015-12-19/self/service/name", "", "web"},
		{"/2016-07-29/self/stack/name", "", "shop"},
		{"/2015-07-25/self/host/agent_ip", "", "10.0.0.1"},
		{"/latest/self/host/labels/zone", "", "a"},
		{"/latest/self/service/links/shop%2Fdb", "", "database"},
		{"/latest/self/service/sidekicks", "", "log\n"},
		{"/latest/services", "", "0=db\n1=web\n"},
		{"/latest/services/web/containers/1/primary_ip", "", "10.42.0.3"},
		{"/latest/services/1/name", "", "web"},
		{"/latest/stacks/shop/services/db/containers/0/name", "", "shop-db-1"},
		{"/latest/containers/shop-db-1/primary_ip", "", "127.0.0.3"},
		{"/latest/self/container/primary_ip", "application/json", `"127.0.0.2"` + "\n"},
		{"/latest/self/service/scale", "application/yaml", "2\n"},
	}
	for _, tc := range cases {
		code, body := get(t, e.url+tc.path, me, tc.accept)
		if code != 200 || body != tc.want {
			t.Errorf("GET %s (%s): %d %q, want %q", tc.path, tc.accept, code, body, tc.want)
		}
	}
	// Unknown paths are 404 in the asked format.
	for _, accept := range []string{"", "application/json", "application/yaml"} {
		code, body := get(t, e.url+"/latest/self/container/nope", me, accept)
		if code != 404 || !strings.Contains(strings.ToLower(body), "not found") {
			t.Errorf("404 as %q: %d %q", accept, code, body)
		}
	}
	if code, _ := get(t, e.url+"/1999-01-01", me, ""); code != 404 {
		t.Errorf("unknown version: %d", code)
	}
	// A caller that is no container has no self.
	if code, _ := get(t, e.url+"/latest/self/container", "127.0.0.9", ""); code != 404 {
		t.Errorf("self of a stranger: %d", code)
	}
	// Secrets: a service's own containers see its token; nobody sees another's.
	_, tok := get(t, e.url+"/latest/self/service/token", me, "")
	_, dbTok := get(t, e.url+"/latest/self/service/token", "127.0.0.3", "")
	if len(tok) != 32 || tok == dbTok {
		t.Errorf("tokens: web %q db %q", tok, dbTok)
	}
	if code, _ := get(t, e.url+"/latest/services/web/token", me, ""); code != 404 {
		t.Errorf("a token is visible outside self: %d", code)
	}
	if _, body := get(t, e.url+"/latest/stacks", me, "application/json"); strings.Contains(body, tok) {
		t.Error("a token leaked into the stacks view")
	}
}

// A client written against Rancher's shapes decodes every object, with no
// field it does not know and none left empty that should be set.
func TestIntegrationRancherClientDecodes(t *testing.T) {
	e := setup(t)
	decode := func(path string, into any) {
		t.Helper()
		code, body := get(t, e.url+path, "127.0.0.2", "application/json")
		if code != 200 {
			t.Fatalf("%s: %d", path, code)
		}
		dec := json.NewDecoder(bytes.NewReader([]byte(body)))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Fatalf("%s does not decode into Rancher's shape: %v", path, err)
		}
	}
	var self struct {
		Container rancherContainer `json:"container"`
		Service   rancherService   `json:"service"`
		Stack     rancherStack     `json:"stack"`
		Host      rancherHost      `json:"host"`
	}
	decode("/latest/self", &self)
	c := self.Container
	if c.Name != "shop-web-1" || c.UUID != e.c1.ID || c.ServiceName != "web" || c.StackName != "shop" || c.HostUUID == "" || c.PrimaryMacAddress == "" || c.State != "running" || c.HealthState != "healthy" || c.CreateIndex != 1 || len(c.IPs) != 1 ||
		c.HealthCheck.Port != 80 || c.Links["shop/db"] != "database" || c.EnvironmentUUID == "" || c.EnvironmentName != "Default" || c.Hostname == "" || c.Labels["io.rancher.service.launch.config"] == "" {
		t.Errorf("container lost data: %+v", c)
	}
	s := self.Service
	if s.Name != "web" || s.Scale != 2 || len(s.Containers) != 2 || s.Labels["tier"] != "front" || s.FQDN != "web.shop.drover.internal" || s.Token == "" || s.Ports[0] != "80/tcp" ||
		s.CreateIndex != 2 || s.Metadata["example"] == nil || s.Links["shop/db"] != "database" || s.HealthCheck.Port != 80 || s.EnvironmentUUID != c.EnvironmentUUID || s.EnvironmentName != "Default" {
		t.Errorf("service lost data: %+v", s)
	}
	if self.Stack.Name != "shop" || len(self.Stack.Services) != 2 || self.Stack.EnvironmentUUID != c.EnvironmentUUID || self.Stack.EnvironmentName != "Default" ||
		self.Host.Memory != 1<<30 || self.Host.MilliCPU != 2000 || self.Host.HostID == 0 || self.Host.Hostname != "node1.example" || self.Host.EnvironmentUUID != c.EnvironmentUUID {
		t.Errorf("stack/host lost data: %+v %+v", self.Stack, self.Host)
	}
	var all struct {
		Containers []rancherContainer `json:"containers"`
		Services   []rancherService   `json:"services"`
		Stacks     []rancherStack     `json:"stacks"`
		Hosts      []rancherHost      `json:"hosts"`
		Networks   []map[string]any   `json:"networks"`
		Self       json.RawMessage    `json:"self"`
		Version    string             `json:"version"`
	}
	decode("/latest", &all)
	if len(all.Containers) != 3 || len(all.Services) != 2 || len(all.Stacks) != 1 || len(all.Hosts) != 1 || all.Version == "" {
		t.Errorf("root view: %d containers %d services %d stacks %d hosts", len(all.Containers), len(all.Services), len(all.Stacks), len(all.Hosts))
	}
	// YAML carries the same.
	_, y := get(t, e.url+"/latest/self/container", "127.0.0.2", "application/yaml")
	var fromYAML rancherContainer
	if err := yaml.Unmarshal([]byte(y), &fromYAML); err != nil || fromYAML.Name != "shop-web-1" {
		t.Errorf("yaml: %v %+v", err, fromYAML)
	}
}

func TestIntegrationLongPoll(t *testing.T) {
	e := setup(t)
	_, v := get(t, e.url+"/latest/version", "127.0.0.2", "")
	// No change: times out after maxWait with the same version.
	start := time.Now()
	_, same := get(t, e.url+"/latest/version?wait=true&value="+v+"&maxWait=1", "127.0.0.2", "")
	if same != v || time.Since(start) < 900*time.Millisecond {
		t.Fatalf("long poll without change: %q after %s", same, time.Since(start))
	}
	// A change wakes it.
	done := make(chan string, 1)
	go func() {
		_, nv := get(t, e.url+"/latest/self/container/state?wait=true&value="+v+"&maxWait=30", "127.0.0.2", "")
		done <- nv
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := e.eng.Containers().PatchStatus(context.Background(), e.c1.ID, map[string]any{"status": map[string]any{"state": "stopped"}}); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-done:
		if got != "stopped" {
			t.Fatalf("woke with %q, want the new state", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll did not wake on a change")
	}
	// And changes show up at once on plain reads too.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, v2 := get(t, e.url+"/latest/version", "127.0.0.2", ""); v2 != v {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("version did not change")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// With the engine gone, metadata keeps answering from its cache.
func TestIntegrationAnswersWithoutEngine(t *testing.T) {
	e := setup(t)
	e.srv.Close()
	time.Sleep(500 * time.Millisecond)
	if code, body := get(t, e.url+"/latest/self/container/name", "127.0.0.2", ""); code != 200 || body != "shop-web-1" {
		t.Fatalf("without the engine: %d %q", code, body)
	}
	if code, body := get(t, e.url+"/metrics", "127.0.0.2", ""); code != 200 || !strings.Contains(body, "drover_metadata_requests_total") {
		t.Fatalf("/metrics: %d", code)
	}
}

// A restart while the engine is away answers from the snapshot the last
// run left, from its first request on.
func TestIntegrationRestartFromSnapshotWithoutEngine(t *testing.T) {
	e := setup(t)
	if _, err := e.eng.Containers().PatchStatus(context.Background(), e.c1.ID, map[string]any{"status": map[string]any{"state": "stopped"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the change", func() bool {
		_, body := get(t, e.url+"/latest/self/container/state", "127.0.0.2", "")
		return body == "stopped"
	})
	_, before := get(t, e.url+"/latest/services", "127.0.0.2", "application/json")
	e.stop()
	e.srv.Close()

	start := time.Now()
	url, _ := startMetadata(t, context.Background(), metadata.Options{Engine: e.eng, StateDir: e.stateDir})
	code, body := get(t, url+"/latest/self/container/state", "127.0.0.2", "")
	t.Logf("first answer %s after start", time.Since(start))
	if code != 200 || body != "stopped" {
		t.Fatalf("first answer from the snapshot: %d %q, want the state before the restart", code, body)
	}
	if _, after := get(t, url+"/latest/services", "127.0.0.2", "application/json"); after != before {
		t.Errorf("services from the snapshot differ:\n%s\nbefore:\n%s", after, before)
	}
	if code, body := get(t, url+"/latest/self/host/agent_ip", "127.0.0.2", ""); code != 200 || body != "10.0.0.1" {
		t.Errorf("self host from the snapshot: %d %q", code, body)
	}
	if code, _ := get(t, url+"/readyz", "127.0.0.2", ""); code != 200 {
		t.Errorf("/readyz from a snapshot: %d", code)
	}
}

// With neither snapshot nor engine it answers at once: 503 with a reason,
// in the asked format, never a hang.
func TestIntegrationNoSnapshotNoEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	dead := client.New(fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t)), "k", "s")
	url, _ := startMetadata(t, context.Background(), metadata.Options{Engine: dead, StateDir: t.TempDir()})
	code, body := get(t, url+"/latest/self/container", "127.0.0.2", "application/json")
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal([]byte(body), &e); code != 503 || err != nil || e.Code != 503 || !strings.Contains(e.Message, "engine") {
		t.Errorf("JSON before any sync: %d %q", code, body)
	}
	if code, body := get(t, url+"/latest/version", "127.0.0.2", ""); code != 503 || !strings.Contains(body, "no snapshot") {
		t.Errorf("text before any sync: %d %q", code, body)
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503} {
		if code, _ := get(t, url+path, "127.0.0.2", ""); code != want {
			t.Errorf("%s before any sync: %d, want %d", path, code, want)
		}
	}
}
