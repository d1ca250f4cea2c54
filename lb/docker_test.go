package lb_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
)

// A Rancher-style stack (docker-compose.yml and rancher-compose.yml, the
// LB with rancher/lb-service-haproxy and lb_config) deployed through the
// engine onto the local Docker Engine: curl through the LB's published port
// reaches both web containers.
func TestIntegrationDockerLoadBalancer(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (Docker Engine)")
	}
	testenv.BuildTestImage(t)
	_, file, _, _ := runtime.Caller(0)
	build := exec.Command("go", "run", "./images/build", "-version", "lbtest", "lb-haproxy")
	build.Dir = filepath.Join(filepath.Dir(file), "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building drover/lb-haproxy: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	// The LB container reads the engine from Docker's bridge: the engine
	// listens on the bridge's gateway, and the agent reaches it there.
	gw := bridgeAddress(t)
	srv, eng := testenv.StartServer(t, apiserver.Options{Listen: gw + ":0"})
	testenv.StartControllers(t, srv, controllers.Options{})
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	host := fmt.Sprintf("lb-host-%d", time.Now().UnixNano()%100000)
	agentCtx, stopAgent := context.WithCancel(ctx)
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Run(agentCtx, agent.Options{Server: srv.URL(), Token: tok.Status.Token, Name: host, IP: gw, StateDir: t.TempDir(),
			LBImage: "drover/lb-haproxy:lbtest", Logger: testenv.Logger(), Heartbeat: time.Second, Resync: time.Second})
	}()
	defer func() {
		stopAgent()
		<-agentDone
		testenv.RemoveDockerContainers(agent.LabelHostID)
	}()
	port := testenv.FreePort(t)
	compose := fmt.Sprintf(`version: "2"
services:
  web:
    image: %s:v1
    environment:
      PORT: "8080"
  lb:
    image: rancher/lb-service-haproxy:v0.9.1
    ports:
      - %d:%d/tcp
`, testenv.TestImage, port, port)
	rancher := fmt.Sprintf(`version: "2"
services:
  web:
    scale: 2
  lb:
    scale: 1
    lb_config:
      port_rules:
      - source_port: %d
        target_port: 8080
        service: web
        protocol: http
    health_check:
      port: 42
      interval: 2000
      healthy_threshold: 2
      unhealthy_threshold: 3
      response_timeout: 2000
`, port)
	if _, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "lbshop"}, Spec: api.StackSpec{Compose: compose, RancherCompose: rancher}}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			ctrs, _, _ := eng.Containers().List(context.Background(), client.ListOptions{})
			for _, c := range ctrs {
				t.Logf("container %s: %s %s ip=%s", c.Name, c.Status.State, c.Status.Message, c.Status.PrimaryIP)
			}
			svcs, _, _ := eng.Services().List(context.Background(), client.ListOptions{})
			for _, s := range svcs {
				t.Logf("service %s (%s): %s %s", s.Name, s.Spec.Kind, s.Status.State, s.Status.Message)
			}
		}
	}()
	// Published on the host's agent address (not a wildcard).
	url := fmt.Sprintf("http://%s:%d/", gw, port)
	testenv.Eventually(t, "curl through the LB reaches both web containers", 90*time.Second, func() error {
		hosts := map[string]bool{}
		for i := 0; i < 6; i++ {
			out, err := exec.Command("curl", "-sS", "--max-time", "3", url).CombinedOutput()
			if err != nil {
				return fmt.Errorf("curl: %v: %s", err, out)
			}
			for _, f := range strings.Fields(string(out)) {
				if strings.HasPrefix(f, "host=") {
					hosts[f] = true
				}
			}
		}
		if len(hosts) != 2 {
			return fmt.Errorf("answers from %v, want two web containers", hosts)
		}
		return nil
	})
	testenv.Eventually(t, "the LB service lists its public endpoint", 30*time.Second, func() error {
		svcs, _, err := eng.Services().List(ctx, client.ListOptions{Name: "lb"})
		if err != nil || len(svcs) != 1 {
			return fmt.Errorf("%v %v", svcs, err)
		}
		eps := svcs[0].Status.PublicEndpoints
		if len(eps) != 1 || eps[0].Port != port || eps[0].IP == "" || eps[0].HostID == "" {
			return fmt.Errorf("publicEndpoints %+v, want one on port %d", eps, port)
		}
		return nil
	})
}

// bridgeAddress is the host's address on Docker's default bridge (docker0).
func bridgeAddress(t *testing.T) string {
	ifc, err := net.InterfaceByName("docker0")
	if err != nil {
		t.Fatalf("Docker's bridge docker0: %v", err)
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	t.Fatal("docker0 has no IPv4 address")
	return ""
}
