package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// Failures that explain themselves: a 403 names the verb that was
// refused; /v1/subscribe without a WebSocket upgrade answers the JSON
// error every other path answers.
func TestIntegrationErrorsSayWhat(t *testing.T) {
	integration(t)
	s, admin := testenv.StartServer(t, apiserver.Options{})
	k, err := admin.APIKeys().Create(context.Background(), &api.APIKey{Meta: api.Meta{Name: "svc"}, Spec: api.APIKeySpec{Role: api.RoleService}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &api.Credentials{AccessKey: k.Status.AccessKey, SecretKey: k.Status.SecretKey}
	code, body := raw(t, s.URL(), "POST", "/v1/apikeys", `{"name":"x","spec":{"role":"admin"}}`, svc)
	if code != 403 || !strings.Contains(string(body), "may not create apikeys") {
		t.Errorf("POST /v1/apikeys with a service key: %d %s", code, body)
	}
	// A service a compose stack declares: a person's spec change would be
	// put back by the stack; it is refused, saying where the change goes.
	st := mustStack(t, admin, "shop")
	managed, err := admin.Services().Create(context.Background(), &api.Service{Meta: api.Meta{Name: "web", Labels: map[string]string{"io.drover.stack.managed": "true"}},
		Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceContainer, LaunchConfig: &api.LaunchConfig{Image: "nginx"}}})
	if err != nil {
		t.Fatal(err)
	}
	code, body = raw(t, s.URL(), "PATCH", "/v1/services/"+managed.ID, `{"spec":{"scale":5}}`, readCreds(t, s))
	if code != 409 || !strings.Contains(string(body), "edit the file and run drover stack up") {
		t.Errorf("PATCH of a managed service: %d %s", code, body)
	}
	if code, body = raw(t, s.URL(), "PATCH", "/v1/services/"+managed.ID, `{"labels":{"io.drover.stack.managed":"true","team":"a"}}`, readCreds(t, s)); code != 200 {
		t.Errorf("PATCH of a managed service's labels: %d %s", code, body)
	}
	if code, body = raw(t, s.URL(), "PATCH", "/v1/services/"+managed.ID+"?force=true", `{"spec":{"scale":5}}`, readCreds(t, s)); code != 200 {
		t.Errorf("PATCH ?force=true: %d %s", code, body)
	}
	code, body = raw(t, s.URL(), "GET", "/v1/subscribe", "", readCreds(t, s))
	var e api.Error
	if code != 400 || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Message, "WebSocket") {
		t.Errorf("GET /v1/subscribe without an upgrade: %d %s", code, body)
	}
}

// A server that cannot listen (the port is taken) fails before it writes
// anything: its new data dir is not left behind.
func TestIntegrationFailedStartLeavesNothing(t *testing.T) {
	integration(t)
	s, _ := testenv.StartServer(t, apiserver.Options{})
	dir := filepath.Join(t.TempDir(), "data")
	_, err := apiserver.Start(context.Background(), apiserver.Options{DataDir: dir, Listen: strings.TrimPrefix(s.URL(), "http://")})
	if err == nil || !strings.Contains(err.Error(), "listening on") {
		t.Fatalf("start on a taken port: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the failed start left %s behind (%v)", dir, err)
	}
}

// A server pointed at an etcd that does not answer says what it waits
// for, every few seconds, and gives up with an error naming it.
func TestIntegrationWaitsForEtcdSaying(t *testing.T) {
	integration(t)
	var logs strings.Builder
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	port := testenv.FreePort(t)
	start := time.Now()
	_, err := apiserver.Start(context.Background(), apiserver.Options{DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: log,
		EtcdEndpoints: []string{fmt.Sprintf("http://127.0.0.1:%d", port)}, EtcdWait: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "did not answer in 5s") || time.Since(start) < 5*time.Second {
		t.Fatalf("start against no etcd: %v after %s", err, time.Since(start))
	}
	mu.Lock()
	defer mu.Unlock()
	if n := strings.Count(logs.String(), "waiting for etcd"); n < 1 {
		t.Errorf("no \"waiting for etcd\" line in the log:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
