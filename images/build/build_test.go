package main

import (
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// make images builds every image from this repository with the local
// Docker Engine, builds nothing again when nothing changed, and each image
// does its job.
func TestIntegrationImages(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (Docker Engine); run without -short")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is missing; the image tests need a Docker Engine")
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..")
	build := func() string {
		cmd := exec.Command("go", "run", "./images/build", "-version", "test")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("building the images: %v\n%s", err, out)
		}
		return string(out)
	}
	build()
	// Every image (the FROM scratch ones, node and lb-haproxy, and their
	// Debian layers) is found up to date.
	if again := build(); strings.Count(again, "up to date") != len(Images)+4 || strings.Contains(again, "building the image") || strings.Contains(again, "debootstrap") {
		t.Fatalf("a second build with nothing changed rebuilt something:\n%s", again)
	}

	// drover: the binary answers.
	if out := run(t, "docker", "run", "--rm", "drover/drover:test", "version"); !strings.Contains(out, "test") {
		t.Fatalf("drover/drover version: %q", out)
	}
	// pause: holds on, stops at once when told.
	id := run(t, "docker", "run", "-d", "drover/pause:test")
	defer exec.Command("docker", "rm", "-f", id).Run()
	time.Sleep(500 * time.Millisecond)
	if st := run(t, "docker", "inspect", "-f", "{{.State.Running}}", id); st != "true" {
		t.Fatalf("pause is not running: %s", st)
	}
	start := time.Now()
	run(t, "docker", "stop", "-t", "10", id)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("pause took %s to stop on SIGTERM", d)
	}
	if code := run(t, "docker", "inspect", "-f", "{{.State.ExitCode}}", id); code != "0" {
		t.Fatalf("pause exited %s", code)
	}
	// etcd: serves.
	eid := run(t, "docker", "run", "-d", "drover/etcd:test", "--data-dir", "/tmp/etcd", "--listen-client-urls", "http://0.0.0.0:2379", "--advertise-client-urls", "http://127.0.0.1:2379")
	defer exec.Command("docker", "rm", "-f", eid).Run()
	ip := run(t, "docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", eid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + ip + ":2379/health")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Contains(string(b), `"health":"true"`) {
				break
			}
			err = io.ErrUnexpectedEOF
		}
		if time.Now().After(deadline) {
			logs, _ := exec.Command("docker", "logs", eid).CombinedOutput()
			t.Fatalf("drover/etcd at %s never healthy: %v\n%s", ip, err, logs)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
