package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
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

func TestRunCommands(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"version"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "drover ") {
		t.Fatalf("version: %q %v", out.String(), err)
	}
	out.Reset()
	if err := run(context.Background(), []string{"help"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "server") {
		t.Fatalf("help: %q %v", out.String(), err)
	}
	err := run(context.Background(), []string{"frobnicate"}, &out, &errOut)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "frobnicate") {
		t.Fatalf("unknown command: %v (exit %d)", err, exitCode(err))
	}
	if err := run(context.Background(), []string{"server", "--tls-cert", "x"}, &out, &errOut); err == nil || exitCode(err) != 2 {
		t.Fatalf("--tls-cert without --tls-key: %v", err)
	}
}

// The real binary starts, serves, and on SIGTERM shuts down cleanly.
func TestIntegrationServerProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "drover")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	var logs bytes.Buffer
	cmd := exec.Command(bin, "server", "--listen", "127.0.0.1:0", "--data-dir", data, "--log-format", "json")
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var creds api.Credentials
	deadline := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(data, "credentials.json"))
		if err == nil && json.Unmarshal(b, &creds) == nil && creds.URL != "" {
			if resp, err := http.Get(creds.URL + "/healthz"); err == nil && resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never answered /healthz; logs:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM; logs:\n%s", logs.String())
	}
	// Structured logs: every line is a JSON object; the last says it stopped.
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
	}
	if !strings.Contains(lines[len(lines)-1], "drover server stopped") {
		t.Fatalf("last log line %q; want the shutdown to finish", lines[len(lines)-1])
	}
}

// The real binary runs kubernetes-agent against a real kube-apiserver and
// engine, serves /healthz and /metrics, and stops cleanly on SIGTERM.
func TestIntegrationKubernetesAgentProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	kube := testenv.StartKube(t, testenv.KubeOptions{})
	srv, _ := testenv.StartServer(t, apiserver.Options{})
	dir := t.TempDir()
	bin := filepath.Join(dir, "drover")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	var logs bytes.Buffer
	cmd := exec.Command(bin, "kubernetes-agent", "--kubeconfig", kube.Kubeconfig, "--credentials", srv.CredentialsPath(), "--listen", listen, "--log-format", "json")
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent never ready; logs:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "drover_controller_queue_depth") {
		t.Fatal("/metrics lacks the agent's metrics")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v; logs:\n%s", err, logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGTERM")
	}
	if !strings.Contains(logs.String(), "kubernetes-agent: stopped") {
		t.Fatalf("no clean stop in the logs:\n%s", logs.String())
	}
}
