package lb

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// backend is an HTTP server on its own loopback address that says who it is.
func backend(t *testing.T, name, ip string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s xff=%s\n", name, r.URL.Path, r.Header.Get("X-Forwarded-For"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// startLB runs drover lb (o with a directory, a health port and the test's
// logger) until the test ends, and returns its directory.
func startLB(t *testing.T, ctx context.Context, o Options) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "drover-lb-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	o.Dir, o.HealthPort, o.Logger = dir, testenv.FreePort(t), testenv.Logger()
	if os.Getenv("DROVER_TEST_LOG") == "" {
		// The lb's own log, shown when the test fails.
		o.Logger = slog.New(slog.NewTextHandler(&testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- Run(runCtx, o) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("lb: %v", err)
		}
	})
	return dir
}

func get(url, host string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// A real HAProxy, configured from a real engine, routes by host and path to
// real backends, follows a backend scaled up and down and one going
// unhealthy, keeps serving when a config is refused, and reloads 100 times
// under load without one failed request.
func TestIntegrationLoadBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, haproxy)")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is missing (make deps installs Debian's)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, eng := testenv.StartServer(t, apiserver.Options{})

	port := testenv.FreePort(t)
	backend(t, "web-1", "127.0.0.2", port)
	backend(t, "web-2", "127.0.0.3", port)
	backend(t, "api-1", "127.0.0.4", port)
	backend(t, "web-3", "127.0.0.5", port)

	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop"}})
	if err != nil {
		t.Fatal(err)
	}
	svc := func(name string) *api.Service {
		s, err := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: name, Labels: map[string]string{"tier": name}}, Spec: api.ServiceSpec{StackID: st.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}}})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	web, apiSvc := svc("web"), svc("api")
	ctr := func(name string, s *api.Service, ip string) *api.Container {
		c, err := eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: name}, Spec: api.ContainerSpec{ServiceID: s.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}},
			Status: api.ContainerStatus{State: api.ContainerRunning, PrimaryIP: ip}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctr("shop-web-1", web, "127.0.0.2")
	web2 := ctr("shop-web-2", web, "127.0.0.3")
	ctr("shop-api-1", apiSvc, "127.0.0.4")

	lbPort, selPort := testenv.FreePort(t), testenv.FreePort(t)
	lbSvc, err := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "lb"}, Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceLoadBalancer,
		LaunchConfig: &api.LaunchConfig{Image: "rancher/lb-service-haproxy:v0.9.1"},
		LBConfig: &api.LBConfig{PortRules: []api.PortRule{
			{SourcePort: lbPort, TargetPort: port, ServiceID: "web"},
			{SourcePort: lbPort, TargetPort: port, ServiceID: "api", Path: "/api"},
			{SourcePort: lbPort, TargetPort: port, ServiceID: "shop/api", Hostname: "api.example.com"},
			{SourcePort: selPort, TargetPort: port, Selector: "tier in (api)"},
		}}}})
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dir := startLB(t, ctx, Options{Engine: eng, ServiceID: lbSvc.ID, HAProxy: haproxy, Listen: metricsAddr})
	url := fmt.Sprintf("http://127.0.0.1:%d", lbPort)
	seen := func(path, host string, n int) map[string]int {
		out := map[string]int{}
		for i := 0; i < n; i++ {
			body, err := get(url+path, host)
			if err != nil {
				out["error: "+err.Error()]++
				continue
			}
			out[strings.Fields(body)[0]]++
		}
		return out
	}
	want := func(what, path, host string, names ...string) {
		t.Helper()
		testenv.Eventually(t, what, 30*time.Second, func() error {
			got := seen(path, host, 6)
			if len(got) != len(names) {
				return fmt.Errorf("backends seen %v, want %v", got, names)
			}
			for _, n := range names {
				if got[n] == 0 {
					return fmt.Errorf("backends seen %v, want %v", got, names)
				}
			}
			return nil
		})
	}
	want("default rule: both web containers", "/", "", "web-1", "web-2")
	want("path rule /api", "/api/items", "", "api-1")
	want("host rule api.example.com (stack/name)", "/", "api.example.com", "api-1")
	testenv.Eventually(t, "selector rule tier in (api)", 10*time.Second, func() error {
		body, err := get(fmt.Sprintf("http://127.0.0.1:%d/", selPort), "")
		if err == nil && !strings.HasPrefix(body, "api-1") {
			err = fmt.Errorf("answer %q", body)
		}
		return err
	})
	if body, _ := get(url+"/", ""); !strings.Contains(body, "xff=127.0.0.1") {
		t.Errorf("no X-Forwarded-For: %q", body)
	}

	// Scaled up, then down, an unhealthy container, a new address: all
	// through the Runtime API, no reload.
	worker := func() string {
		c, err := net.Dial("unix", filepath.Join(dir, "master.sock"))
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "show proc\n")
		b, _ := io.ReadAll(c)
		// The current worker's line: "<pid> worker <reloads> ...".
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 2 && f[1] == "worker" {
				return f[0]
			}
		}
		return string(b)
	}
	before := worker()
	if _, err := strconv.Atoi(before); err != nil {
		t.Fatalf("HAProxy's worker pid from the master CLI: %q", before)
	}
	web3 := ctr("shop-web-3", web, "127.0.0.5")
	want("a third web container", "/", "", "web-1", "web-2", "web-3")
	if _, err := eng.Containers().Delete(ctx, web3.ID); err != nil {
		t.Fatal(err)
	}
	want("back to two", "/", "", "web-1", "web-2")
	// Deleted from HAProxy too, at once or (while it still held idle
	// connections) a moment later, in maintenance meanwhile.
	testenv.Eventually(t, "web-3 deleted from HAProxy", 15*time.Second, func() error {
		out, err := SocketCommand(filepath.Join(dir, "haproxy.sock"), "show servers state", 0)
		if err == nil && strings.Contains(out, "shop-web-3") {
			err = fmt.Errorf("still there:\n%s", out)
		}
		return err
	})
	// A container the engine says is unhealthy leaves the backend.
	if _, err := eng.Containers().PatchStatus(ctx, web2.ID, map[string]any{"status": map[string]any{"health": "unhealthy"}}); err != nil {
		t.Fatal(err)
	}
	want("unhealthy web-2 out", "/", "", "web-1")
	// A container's new address.
	web1, _, _ := eng.Containers().List(ctx, client.ListOptions{Name: "shop-web-1"})
	if _, err := eng.Containers().PatchStatus(ctx, web1[0].ID, map[string]any{"status": map[string]any{"primaryIP": "127.0.0.5"}}); err != nil {
		t.Fatal(err)
	}
	want("web-1's new address (where web-3 answers)", "/", "", "web-3")
	if after := worker(); after != before {
		t.Errorf("servers added, deleted, marked down and moved: HAProxy's worker changed from %s to %s (a reload; want the Runtime API)", before, after)
	}

	// A config HAProxy refuses is not applied; the last good one serves.
	if _, err := eng.Services().Patch(ctx, lbSvc.ID, map[string]any{"spec": map[string]any{"lbConfig": map[string]any{"config": "this is not haproxy"}}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if b, _ := os.ReadFile(filepath.Join(dir, "haproxy.cfg")); strings.Contains(string(b), "this is not haproxy") {
		t.Fatal("a config haproxy -c refused was applied")
	}
	want("still serving after a refused config", "/", "", "web-3")
	condition := func(status, text string) func() error {
		return func() error {
			svc, err := eng.Services().Get(ctx, lbSvc.ID)
			if err != nil {
				return err
			}
			c := api.FindCondition(svc.Status.Conditions, ConditionConfigApplied)
			if c == nil || c.Status != status || !strings.Contains(c.Message, text) {
				return fmt.Errorf("condition %+v", c)
			}
			return nil
		}
	}
	testenv.Eventually(t, "the service's condition says the config was refused", 10*time.Second, condition(api.ConditionFalse, "haproxy rejected"))

	// 100 reloads while a client sends requests: none fails.
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200000 && loadCtx.Err() == nil; i++ {
				if _, err := get(url+"/", ""); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	start := time.Now()
	for i := 0; i < 100; i++ {
		mark := fmt.Sprintf("# reload %d", i)
		if _, err := eng.Services().Patch(ctx, lbSvc.ID, map[string]any{"spec": map[string]any{"lbConfig": map[string]any{"config": mark}}}); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, "reload "+fmt.Sprint(i)+" live", 10*time.Second, func() error {
			b, _ := os.ReadFile(filepath.Join(dir, "haproxy.cfg"))
			if !strings.Contains(string(b), mark+"\n") {
				return fmt.Errorf("not yet")
			}
			return nil
		})
	}
	took := time.Since(start)
	testenv.Eventually(t, "the condition is True again", 10*time.Second, condition(api.ConditionTrue, ""))
	stopLoad()
	wg.Wait()
	t.Logf("100 reloads in %s under load: %d requests ok, %d failed", took.Round(time.Millisecond), ok.Load(), failed.Load())
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d requests failed during reloads (%d ok); first: %v", failed.Load(), ok.Load(), firstErr.Load())
	}
}

// testWriter sends a log to t.Log (shown when the test fails or with -v).
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
