package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// The real binary runs agent, dns and metadata: each becomes ready, serves
// /healthz, /readyz and /metrics, logs JSON, and stops cleanly on SIGTERM.
func TestIntegrationDaemonProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	tok, err := eng.RegistrationTokens().Create(context.Background(), &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "drover")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	creds := srv.CredentialsPath()
	agentHTTP := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	dnsMetrics := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	mdAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	daemons := []struct {
		name    string
		args    []string
		base    string
		metric  string
		stopped string
	}{
		{"agent", []string{"agent", "--server", srv.URL(), "--token", tok.Status.Token, "--name", "proc-host", "--listen", agentHTTP,
			// Nothing on the machine: state in the test's directories, containers
			// on Docker's bridge (the overlay's own tests share the Docker network).
			"--state-dir", t.TempDir(), "--ipam-dir", t.TempDir(), "--overlay=false"}, agentHTTP, "go_goroutines", "agent stopped"},
		{"dns", []string{"dns", "--listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--upstream", "127.0.0.1:1", "--metrics-listen", dnsMetrics, "--credentials", creds, "--state-dir", t.TempDir()}, dnsMetrics, "drover_dns_cache_hits_total", ""},
		{"metadata", []string{"metadata", "--listen", mdAddr, "--credentials", creds, "--state-dir", t.TempDir()}, mdAddr, "drover_metadata_containers", ""},
	}
	for _, d := range daemons {
		t.Run(d.name, func(t *testing.T) {
			var logs bytes.Buffer
			cmd := exec.Command(bin, append(d.args, "--log-format", "json")...)
			cmd.Stderr = &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Process.Kill()
			deadline := time.Now().Add(60 * time.Second)
			for {
				resp, err := http.Get("http://" + d.base + "/readyz")
				if err == nil && resp.StatusCode == 200 {
					resp.Body.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s never ready; logs:\n%s", d.name, logs.String())
				}
				time.Sleep(200 * time.Millisecond)
			}
			for _, path := range []string{"/healthz", "/metrics"} {
				resp, err := http.Get("http://" + d.base + path)
				if err != nil || resp.StatusCode != 200 {
					t.Fatalf("%s %s: %v", d.name, path, err)
				}
				var b bytes.Buffer
				b.ReadFrom(resp.Body)
				resp.Body.Close()
				if path == "/metrics" && !strings.Contains(b.String(), d.metric) {
					t.Fatalf("%s /metrics lacks %s", d.name, d.metric)
				}
			}
			cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s exit after SIGTERM: %v; logs:\n%s", d.name, err, logs.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s did not stop within 20s of SIGTERM", d.name)
			}
			for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
				if line != "" && !strings.HasPrefix(line, "{") {
					t.Fatalf("%s log line is not JSON: %q", d.name, line)
				}
			}
			if d.stopped != "" && !strings.Contains(logs.String(), d.stopped) {
				t.Fatalf("%s: no clean stop in the logs:\n%s", d.name, logs.String())
			}
		})
	}
}
