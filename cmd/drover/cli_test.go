package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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

// A Rancher 1.x stack (docker-compose.yml + rancher-compose.yml, io.rancher
// labels) deployed, upgraded, rolled back and removed through the CLI, on a
// real Docker Engine.
func TestIntegrationCLIStackLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (real Docker Engine)")
	}
	testenv.BuildTestImage(t)
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		agent.Run(ctx, agent.Options{Server: srv.URL(), Token: tok.Status.Token, Name: "cli-host", StateDir: t.TempDir(), Logger: testenv.Logger(), Heartbeat: 500 * time.Millisecond, Resync: time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		hosts, _, _ := eng.Hosts().List(context.Background(), client.ListOptions{})
		for _, h := range hosts {
			testenv.RemoveDockerContainers(agent.LabelHostID + "=" + h.ID)
		}
	})
	dir := t.TempDir()
	answers := filepath.Join(dir, "answers.txt")
	os.WriteFile(answers, []byte("VERSION=1\n"), 0o644)
	creds := []string{"--credentials", srv.CredentialsPath()}
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(context.Background(), append(args, creds...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	up := []string{"stack", "up", "shop", "-f", "testdata/docker-compose.yml", "-f", "testdata/rancher-compose.yml", "--answers", answers, "--wait", "90s"}
	out, err := cli(up...)
	if err != nil {
		t.Fatalf("stack up: %v\n%s", err, out)
	}
	if !strings.Contains(out, "stack shop is active and healthy") || !strings.Contains(out, "web: ") {
		t.Fatalf("stack up printed no progress or result:\n%s", out)
	}
	out, err = cli("ps", "--stack", "shop")
	if err != nil || strings.Count(out, "running") != 5 {
		t.Fatalf("ps: want 5 running (2 web, 2 sidecars, 1 cron): %v\n%s", err, out)
	}
	out, err = cli("host", "ls", "-o", "json")
	var hosts []api.Host
	if err != nil || json.Unmarshal([]byte(out), &hosts) != nil || len(hosts) != 1 || hosts[0].Status.State != api.HostActive {
		t.Fatalf("host ls -o json: %v\n%s", err, out)
	}
	version := func() string {
		ctrs, _, _ := eng.Containers().List(context.Background(), client.ListOptions{LabelSelector: "io.drover.service.name=web,io.drover.service.launch.config=io.drover.service.primary.launch.config"})
		var vs []string
		for _, c := range ctrs {
			vs = append(vs, c.Spec.LaunchConfig.Environment["VERSION"])
		}
		return strings.Join(vs, ",")
	}
	if v := version(); v != "1,1" {
		t.Fatalf("versions %q", v)
	}
	// The same files again: nothing to do, and it says so at once.
	start := time.Now()
	if out, err := cli(up...); err != nil || time.Since(start) > 20*time.Second {
		t.Fatalf("no-op stack up: %v after %s\n%s", err, time.Since(start), out)
	}
	// Upgrade through new answers, then roll back.
	os.WriteFile(answers, []byte("VERSION=2\n"), 0o644)
	if out, err := cli(up...); err != nil || version() != "2,2" {
		t.Fatalf("upgrade: %v (versions %s)\n%s", err, version(), out)
	}
	if out, err := cli("stack", "rollback", "shop", "--wait", "90s"); err != nil || version() != "1,1" {
		t.Fatalf("rollback: %v (versions %s)\n%s", err, version(), out)
	}
	// A broken file changes nothing and says where it broke.
	bad := filepath.Join(dir, "bad.yml")
	os.WriteFile(bad, []byte("services:\n  web:\n    image: x\n    portz: [1]\n"), 0o644)
	if out, err := cli("stack", "up", "shop", "-f", bad); err == nil || !strings.Contains(err.Error(), "bad.yml:4") {
		t.Fatalf("bad file: want an error naming bad.yml:4, got %v\n%s", err, out)
	}
	if v := version(); v != "1,1" {
		t.Fatalf("a rejected file changed the stack: versions %s", v)
	}
	if out, err := cli("stack", "rm", "shop"); err != nil {
		t.Fatalf("stack rm: %v\n%s", err, out)
	}
	if out, _ := cli("stack", "ls"); strings.Contains(out, "shop") {
		t.Fatalf("stack still listed:\n%s", out)
	}
	// A stack whose image is missing fails within seconds, naming the
	// container and its message, not after --wait.
	missing := filepath.Join(dir, "missing.yml")
	os.WriteFile(missing, []byte("services:\n  gone:\n    image: drover-test-missing:v0\n    labels:\n      io.rancher.container.pull_image: never\n"), 0o644)
	start = time.Now()
	out, err = cli("stack", "up", "broken", "-f", missing, "--wait", "5m")
	if err == nil || !strings.Contains(err.Error(), "container broken-gone-1 failed") || !strings.Contains(err.Error(), "is not on this host") || time.Since(start) > 30*time.Second {
		t.Fatalf("a missing image: %v after %s\n%s", err, time.Since(start), out)
	}
	cli("stack", "rm", "broken")
}
