// Package lbtest holds what the tests of the LB controllers (the
// ingress-controller, the cloudprovider) share: a stand-in for a host's
// agent that runs drover lb (real HAProxy) for the LBs placed on it, HTTP
// backends that say who they are, and addresses for them that Kubernetes
// accepts as endpoints.
package lbtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
	"github.com/drover/drover/lb"
)

// Backend is an HTTP server on ip:port that answers "<name> <path>".
func Backend(t testing.TB, name, ip string, port int) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		t.Fatalf("backend %s: %v", name, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
}

// Get asks 127.0.0.1:port for path with a Host header and returns the
// name of the backend that answered.
func Get(port int, host, path string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
	req.Host = host
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s %s: %s", host, path, resp.Status)
	}
	return strings.Fields(string(b))[0], nil
}

// Addrs puts n addresses outside 127/8 (which an EndpointSlice refuses)
// on the loopback device and returns them; they go when the test ends.
// Traffic to them is delivered locally, as to 127.0.0.1.
func Addrs(t testing.TB, n int) []string {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	third := os.Getpid() % 250
	var out []string
	for i := 0; i < n; i++ {
		ip := fmt.Sprintf("10.253.%d.%d", third, 2+int(nextBlock.Add(1))%250)
		addr, _ := netlink.ParseAddr(ip + "/32")
		if err := netlink.AddrAdd(lo, addr); err != nil {
			t.Fatalf("adding %s to lo for the backends (needs root): %v", ip, err)
		}
		t.Cleanup(func() { netlink.AddrDel(lo, addr) })
		out = append(out, ip)
	}
	return out
}

var nextBlock atomic.Int64

// StandIn plays the agent of one host: it renews the host's lease,
// reports its containers running at 127.0.0.1, and runs drover lb for
// every LB service with a container placed here, as the LB container would.
type StandIn struct {
	T       testing.TB
	Agent   *client.Client // the host's agent key
	Admin   *client.Client // what drover lb reads the engine with
	HostID  string
	HAProxy string

	mu      sync.Mutex
	running map[string]context.CancelFunc // LB service id -> its drover lb
	wg      sync.WaitGroup
}

// Start runs the stand-in until the test ends.
func (s *StandIn) Start(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.run(ctx) }()
	s.T.Cleanup(func() { cancel(); <-done; s.wg.Wait() })
}

func (s *StandIn) run(ctx context.Context) {
	s.running = map[string]context.CancelFunc{}
	lease := &agent.LeaseRenewer{Engine: s.Agent, HostID: s.HostID, Duration: 5 * time.Second}
	for ctx.Err() == nil {
		lease.Renew(ctx)
		cs, _, _ := s.Agent.Containers().List(ctx, client.ListOptions{HostID: s.HostID})
		want := map[string]bool{}
		for _, c := range cs {
			if c.DeletionTimestamp != nil {
				continue
			}
			want[c.Spec.ServiceID] = true
			if c.Status.State != api.ContainerRunning {
				s.Agent.Containers().PatchStatus(ctx, c.ID, map[string]any{"status": map[string]any{"state": api.ContainerRunning, "primaryIP": "127.0.0.1"}})
			}
		}
		s.mu.Lock()
		for id := range want {
			if s.running[id] == nil {
				s.running[id] = s.startLB(ctx, id)
			}
		}
		for id, stop := range s.running {
			if !want[id] {
				stop()
				delete(s.running, id)
			}
		}
		s.mu.Unlock()
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *StandIn) startLB(ctx context.Context, serviceID string) context.CancelFunc {
	dir, err := os.MkdirTemp("/tmp", "drover-test-lb-")
	if err != nil {
		s.T.Error(err)
		return func() {}
	}
	lctx, cancel := context.WithCancel(ctx)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer os.RemoveAll(dir)
		err := lb.Run(lctx, lb.Options{Engine: s.Admin, ServiceID: serviceID, Dir: dir, HAProxy: s.HAProxy, HealthPort: testenv.FreePort(s.T), Logger: testenv.Logger()})
		if err != nil && lctx.Err() == nil {
			s.T.Logf("drover lb for %s: %v", serviceID, err)
		}
	}()
	return cancel
}

// Env is what the LB controllers' tests run against: a real kube-apiserver
// and kube-controller-manager (and their etcd), the engine with every controller, one host "edge" at
// 127.0.0.1 whose stand-in agent runs drover lb with real HAProxy, and
// kubernetes-agent (it puts Services' ready endpoints into the engine).
type Env struct {
	Kube   *testenv.Kube
	Server *apiserver.Server
	Engine *client.Client
	Edge   *api.RegisterResponse
	Token  string // a registration token for more hosts
	// KubernetesAgent and Controllers hold the write counters of
	// kubernetes-agent and of the engine's controllers.
	KubernetesAgent, Controllers *prometheus.Registry
}

// StartEnv starts it all for the test; hostLabels go on "edge".
func StartEnv(t testing.TB, ctx context.Context, hostLabels map[string]string) *Env {
	t.Helper()
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is missing (make deps installs Debian's)")
	}
	e := &Env{Kube: testenv.StartKube(t, testenv.KubeOptions{ControllerManager: true}), KubernetesAgent: prometheus.NewRegistry()}
	e.Server, e.Engine = testenv.StartServer(t, apiserver.Options{})
	e.Controllers = testenv.StartControllers(t, e.Server, controllers.Options{})
	tok, err := e.Engine.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	e.Token = tok.Status.Token
	e.Edge = e.Register(t, ctx, "edge", "127.0.0.1", hostLabels)
	(&StandIn{T: t, Agent: client.New(e.Server.URL(), e.Edge.AccessKey, e.Edge.SecretKey), Admin: e.Engine, HostID: e.Edge.Host.ID, HAProxy: haproxy}).Start(ctx)
	kctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		kubernetesagent.Run(kctx, kubernetesagent.Options{Kube: e.Kube.Config, Engine: e.Engine, Logger: testenv.Logger(), Registry: e.KubernetesAgent})
	}()
	t.Cleanup(func() { stop(); <-done })
	return e
}

// Register adds a host (no agent runs for it).
func (e *Env) Register(t testing.TB, ctx context.Context, name, ip string, labels map[string]string) *api.RegisterResponse {
	t.Helper()
	reg, err := client.New(e.Server.URL(), "", "").Register(ctx, api.RegisterRequest{Token: e.Token, Name: name, AgentIP: ip, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

// Writes sums every drover_*_writes_total counter of regs (a lease's
// renewals and leader election excepted: they tick by design). A test that
// changes something waits, reads it, waits again: two controllers that
// undo each other keep it moving.
func Writes(regs ...*prometheus.Registry) float64 {
	total := 0.0
	for _, r := range regs {
		mfs, _ := r.Gather()
		for _, mf := range mfs {
			if !strings.HasPrefix(mf.GetName(), "drover_") || !strings.HasSuffix(mf.GetName(), "writes_total") {
				continue
			}
		metric:
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetValue() == "leases" || l.GetValue() == "election" {
						continue metric
					}
				}
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}
