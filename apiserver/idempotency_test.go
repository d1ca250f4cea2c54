package apiserver_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// post sends a create with an Idempotency-Key and returns status, the
// replay header and the body.
func post(t *testing.T, url, path, body, key string, creds *api.Credentials) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Idempotency-Replayed"), b
}

func idOf(t *testing.T, b []byte) string {
	t.Helper()
	var m struct{ ID string }
	if err := json.Unmarshal(b, &m); err != nil || m.ID == "" {
		t.Fatalf("no id in %s", b)
	}
	return m.ID
}

// A create sent again with the same Idempotency-Key is answered with the
// first one's object, never made twice (issue 9, defect 11).
func TestIntegrationIdempotencyKey(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	creds := readCreds(t, s)
	host, err := admin.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	body := `{"name":"once","spec":{"hostId":"` + host.ID + `"}}`
	code, replayed, first := post(t, s.URL(), "/v1/containers", body, "k-1", creds)
	if code != 201 || replayed != "" {
		t.Fatalf("first create: %d (replayed %q) %s", code, replayed, first)
	}
	code, replayed, second := post(t, s.URL(), "/v1/containers", body, "k-1", creds)
	if code != 201 || replayed != "true" || idOf(t, second) != idOf(t, first) {
		t.Fatalf("repeat: %d (replayed %q) %s; want 201, replayed, id %s", code, replayed, second, idOf(t, first))
	}
	// Sent at once many times: one object.
	var wg sync.WaitGroup
	ids := make([]string, 12)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, b := post(t, s.URL(), "/v1/containers", body, "k-race", creds)
			if code != 201 {
				t.Errorf("concurrent create %d: %d %s", i, code, b)
				return
			}
			ids[i] = idOf(t, b)
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("12 concurrent creates with one key made several objects: %v", ids)
		}
	}
	ctrs, _, err := admin.Containers().List(ctx, client.ListOptions{})
	if err != nil || len(ctrs) != 2 {
		t.Fatalf("%d containers (%v), want 2: one per key", len(ctrs), err)
	}
	// The key with another body is a mistake, said so.
	if code, _, b := post(t, s.URL(), "/v1/containers", `{"name":"other","spec":{"hostId":"`+host.ID+`"}}`, "k-1", creds); code != 422 || !strings.Contains(string(b), "another request") {
		t.Fatalf("key reused for another body: %d %s; want 422", code, b)
	}
	// Keys are per API key: another key's "k-1" is another request.
	svcKey, err := admin.APIKeys().Create(ctx, &api.APIKey{Spec: api.APIKeySpec{Role: api.RoleAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	other := &api.Credentials{AccessKey: svcKey.ID, SecretKey: svcKey.Status.SecretKey}
	if code, replayed, b := post(t, s.URL(), "/v1/containers", body, "k-1", other); code != 201 || replayed != "" || idOf(t, b) == idOf(t, first) {
		t.Fatalf("another API key's k-1: %d (replayed %q) %s; want a new object", code, replayed, b)
	}
	// Bad keys, and kinds whose secret is shown once.
	for _, c := range []struct{ path, body, key string }{
		{"/v1/containers", body, "has space"},
		{"/v1/containers", body, strings.Repeat("k", 256)},
		{"/v1/apikeys", `{"spec":{"role":"service"}}`, "k-2"},
	} {
		if code, _, b := post(t, s.URL(), c.path, c.body, c.key, creds); code != 400 {
			t.Errorf("POST %s with Idempotency-Key %.20q: %d %s; want 400", c.path, c.key, code, b)
		}
	}
	// A replay of a deleted object says so.
	if _, err := admin.Containers().Delete(ctx, idOf(t, first)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the container gone", 10*time.Second, func() error {
		_, err := admin.Containers().Get(ctx, idOf(t, first))
		if api.IsNotFound(err) {
			return nil
		}
		return err
	})
	if code, _, b := post(t, s.URL(), "/v1/containers", body, "k-1", creds); code != 409 || !strings.Contains(string(b), "deleted") {
		t.Fatalf("replay of a deleted object: %d %s; want 409 saying it was deleted", code, b)
	}
}

// The client's Create rides out a store that goes away and comes back:
// it retries with its key, and the object is made once.
func TestIntegrationClientCreateRetriesOnce(t *testing.T) {
	integration(t)
	ctx := context.Background()
	cluster := testenv.StartEtcdCluster(t, 1)
	_, admin := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), StoreTimeout: time.Second})
	host, err := admin.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	cluster.Stop(0)
	restarted := make(chan struct{})
	go func() {
		defer close(restarted)
		time.Sleep(2 * time.Second)
		cluster.Start(0)
	}()
	defer func() { <-restarted }()
	admin.CreateRetries = 30
	cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	c, err := admin.Containers().Create(cctx, &api.Container{Meta: api.Meta{Name: "survivor"}, Spec: api.ContainerSpec{HostID: host.ID}})
	if err != nil {
		t.Fatalf("create across an etcd restart: %v", err)
	}
	ctrs, _, err := admin.Containers().List(ctx, client.ListOptions{})
	if err != nil || len(ctrs) != 1 || ctrs[0].ID != c.ID {
		t.Fatalf("after the create: %d containers (%v), want exactly %s", len(ctrs), err, c.ID)
	}
}
