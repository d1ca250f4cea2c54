package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// droverBinary is bin/drover built from this checkout.
func droverBinary(t *testing.T) string { return testenv.DroverBinary(t) }

// serverProc is a `drover server` process on an external etcd.
type serverProc struct {
	t      *testing.T
	args   []string
	data   string
	cmd    *exec.Cmd
	logs   *bytes.Buffer
	client *client.Client
}

func startServerProc(t *testing.T, etcd, data string) *serverProc {
	t.Helper()
	p := &serverProc{t: t, data: data, args: []string{"server", "--listen", fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), "--data-dir", data,
		"--etcd-endpoints", etcd, "--log-format", "json",
		// Servers of one store share their encryption keys.
		"--encryption-key-file", filepath.Join(filepath.Dir(data), "encryption-keys")}}
	p.start()
	t.Cleanup(func() {
		if p.cmd != nil {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	})
	return p
}

func (p *serverProc) start() {
	p.t.Helper()
	p.logs = &bytes.Buffer{}
	p.cmd = exec.Command(droverBinary(p.t), p.args...)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var creds api.Credentials
		b, err := os.ReadFile(filepath.Join(p.data, "credentials.json"))
		if err == nil && json.Unmarshal(b, &creds) == nil && creds.URL != "" {
			if resp, err := http.Get(creds.URL + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					p.client = client.New(creds.URL, creds.AccessKey, creds.SecretKey)
					return
				}
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("server never became ready; logs:\n%s", p.logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *serverProc) kill() {
	p.cmd.Process.Kill() // SIGKILL: no chance to finish anything
	p.cmd.Wait()
	p.cmd = nil
}

// A stack of 100 services is deleted, and both servers sharing the etcd are
// killed with SIGKILL while the garbage collector is half-way. After they
// restart, nothing of the stack is left, seen from either server.
func TestIntegrationCrashDuringStackDeletion(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, server processes); run without -short")
	}
	ctx := context.Background()
	etcd := testenv.StartEtcdCluster(t, 1)
	url := etcd.Members[0].ClientURL
	dir := t.TempDir()
	a := startServerProc(t, url, filepath.Join(dir, "a"))
	b := startServerProc(t, url, filepath.Join(dir, "b"))
	st, err := a.client.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "doomed"}})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := a.client.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "kept"}})
	if err != nil {
		t.Fatal(err)
	}
	scale := 2
	for i := 0; i < 100; i++ {
		svc, err := a.client.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: fmt.Sprintf("s%d", i)},
			Spec: api.ServiceSpec{StackID: st.ID, Scale: &scale, LaunchConfig: &api.LaunchConfig{Image: "busybox"}}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.client.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{ServiceID: svc.ID}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.client.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "survivor"},
		Spec: api.ServiceSpec{StackID: keep.ID, Scale: &scale, LaunchConfig: &api.LaunchConfig{Image: "busybox"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.client.Stacks().Delete(ctx, st.ID); err != nil {
		t.Fatal(err)
	}
	// Kill both as soon as the collector is under way, not done.
	deadline := time.Now().Add(30 * time.Second)
	for {
		svcs, _, err := b.client.Services().List(ctx, client.ListOptions{StackID: st.ID})
		if err == nil && len(svcs) < 100 {
			t.Logf("killing both servers with %d of 100 services left", len(svcs))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the collector never started (%d services, %v); logs:\n%s\n%s", len(svcs), err, a.logs, b.logs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	a.kill()
	b.kill()
	a.start()
	b.start()
	for _, p := range []*serverProc{a, b} {
		testenv.Eventually(t, "nothing of the stack left", 60*time.Second, func() error {
			if _, err := p.client.Stacks().Get(ctx, st.ID); !api.IsNotFound(err) {
				return fmt.Errorf("stack: want 404, got %v", err)
			}
			svcs, _, err := p.client.Services().List(ctx, client.ListOptions{StackID: st.ID})
			if err != nil || len(svcs) != 0 {
				return fmt.Errorf("%d services left (%v)", len(svcs), err)
			}
			ctrs, _, err := p.client.Containers().List(ctx, client.ListOptions{StackID: st.ID})
			if err != nil || len(ctrs) != 0 {
				return fmt.Errorf("%d containers left (%v)", len(ctrs), err)
			}
			return nil
		})
		kept, _, err := p.client.Services().List(ctx, client.ListOptions{StackID: keep.ID})
		if err != nil || len(kept) != 1 {
			t.Fatalf("the other stack's service: %d (%v), want 1", len(kept), err)
		}
	}
	// The name is free again.
	if _, err := b.client.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "doomed"}}); err != nil {
		t.Fatalf("stack name after deletion: %v", err)
	}
}
