package apiserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

func integration(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real etcd); run without -short")
	}
}

// raw sends a request with the given credentials and returns status and body.
func raw(t *testing.T, url, method, path, body string, creds *api.Credentials) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, url+path, rd)
	if creds != nil {
		req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func readCreds(t *testing.T, s *apiserver.Server) *api.Credentials { return testenv.Credentials(t, s) }

func mustStack(t *testing.T, c *client.Client, name string) *api.Stack {
	t.Helper()
	st, err := c.Stacks().Create(context.Background(), &api.Stack{Meta: api.Meta{Name: name}})
	if err != nil {
		t.Fatalf("creating stack %s: %v", name, err)
	}
	return st
}

func mustService(t *testing.T, c *client.Client, stackID, name string) *api.Service {
	t.Helper()
	scale := 1
	svc, err := c.Services().Create(context.Background(), &api.Service{Meta: api.Meta{Name: name}, Spec: api.ServiceSpec{StackID: stackID, Scale: &scale, LaunchConfig: &api.LaunchConfig{Image: "busybox"}}})
	if err != nil {
		t.Fatalf("creating service %s: %v", name, err)
	}
	return svc
}

func TestIntegrationCRUD(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{})
	st := mustStack(t, c, "web")
	if st.ID == "" || st.Revision == 0 || st.Type != "stack" || st.Spec.Kind != api.StackCompose {
		t.Fatalf("created stack lacks server fields or defaults: %+v", st)
	}
	svc := mustService(t, c, st.ID, "nginx")
	got, err := c.Services().Get(ctx, svc.ID)
	if err != nil || got.Revision != svc.Revision || got.Spec.LaunchConfig.Image != "busybox" {
		t.Fatalf("get = %+v, %v", got, err)
	}
	// PUT with the current revision wins and bumps the revision.
	got.Labels = map[string]string{"tier": "front"}
	upd, err := c.Services().Update(ctx, got.ID, got)
	if err != nil || upd.Revision <= got.Revision || upd.Labels["tier"] != "front" || !upd.CreatedAt.Equal(got.CreatedAt) {
		t.Fatalf("update = %+v, %v", upd, err)
	}
	// PUT with the old revision is a 409.
	if _, err := c.Services().Update(ctx, got.ID, got); !api.IsConflict(err) {
		t.Fatalf("stale PUT: want 409, got %v", err)
	}
	// PATCH merges.
	p, err := c.Services().Patch(ctx, svc.ID, map[string]any{"spec": map[string]any{"scale": 5}, "labels": map[string]any{"env": "prod"}})
	if err != nil || *p.Spec.Scale != 5 || p.Labels["tier"] != "front" || p.Labels["env"] != "prod" || p.Spec.LaunchConfig.Image != "busybox" {
		t.Fatalf("patch = %+v, %v", p, err)
	}
	// A PATCH carrying a stale revision is a 409 too.
	if _, err := c.Services().Patch(ctx, svc.ID, map[string]any{"revision": got.Revision, "spec": map[string]any{"scale": 1}}); !api.IsConflict(err) {
		t.Fatalf("stale PATCH: want 409, got %v", err)
	}
	// Filters.
	mustService(t, c, st.ID, "db")
	other := mustStack(t, c, "other")
	mustService(t, c, other.ID, "nginx") // same name, other stack: allowed
	list, rev, err := c.Services().List(ctx, client.ListOptions{StackID: st.ID})
	if err != nil || len(list) != 2 || rev == 0 {
		t.Fatalf("list by stack = %d items rev %d, %v", len(list), rev, err)
	}
	list, _, _ = c.Services().List(ctx, client.ListOptions{LabelSelector: "tier=front,env!=dev"})
	if len(list) != 1 || list[0].ID != svc.ID {
		t.Fatalf("label selector matched %d services", len(list))
	}
	list, _, _ = c.Services().List(ctx, client.ListOptions{LabelSelector: "!tier"})
	if len(list) != 2 {
		t.Fatalf("!tier matched %d services, want 2", len(list))
	}
	// Names are unique within their scope.
	if _, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "web"}}); !api.IsConflict(err) {
		t.Fatalf("duplicate stack name: want 409, got %v", err)
	}
	// Renaming frees the old name.
	if _, err := c.Stacks().Patch(ctx, other.ID, map[string]any{"name": "other2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "other"}}); err != nil {
		t.Fatalf("old name should be free after rename: %v", err)
	}
	// Deleting a service marks it (it may have containers); the garbage
	// collector finishes it, and then it is gone.
	if d, err := c.Services().Delete(ctx, svc.ID); err != nil || d.ID != svc.ID || d.DeletionTimestamp == nil || !slices.Contains(d.Finalizers, api.FinalizerDependents) {
		t.Fatalf("delete = %+v, %v; want it marked with the dependents finalizer", d, err)
	}
	testenv.Eventually(t, "deleted service gone", 10*time.Second, func() error {
		if _, err := c.Services().Get(ctx, svc.ID); !api.IsNotFound(err) {
			return fmt.Errorf("get after delete: want 404, got %v", err)
		}
		return nil
	})
	creds := readCreds(t, s)
	if code, body := raw(t, s.URL(), "GET", "/metrics", "", creds); code != 200 || !strings.Contains(string(body), "drover_server_requests_total") {
		t.Fatalf("/metrics = %d", code)
	}
	if code, _ := raw(t, s.URL(), "GET", "/healthz", "", nil); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
}

func TestIntegrationBadInput(t *testing.T) {
	integration(t)
	s, c := testenv.StartServer(t, apiserver.Options{MaxBodyBytes: 64 << 10})
	creds := readCreds(t, s)
	st := mustStack(t, c, "web")
	svc := mustService(t, c, st.ID, "app")
	big := `{"name":"x","labels":{"a":"` + strings.Repeat("x", 100<<10) + `"}}`
	cases := []struct {
		name, method, path, body string
		status                   int
		code, field              string
	}{
		{"malformed", "POST", "/v1/stacks", `{"name": "a",`, 400, api.CodeInvalidJSON, ""},
		{"not an object", "POST", "/v1/stacks", `[1,2]`, 400, api.CodeInvalidJSON, ""},
		{"trailing data", "POST", "/v1/stacks", `{"name":"a"} {}`, 400, api.CodeInvalidJSON, ""},
		{"empty", "POST", "/v1/stacks", ``, 400, api.CodeInvalidJSON, ""},
		{"unknown field", "POST", "/v1/stacks", `{"name":"a","spec":{"kind":"compose","bogus":1}}`, 400, api.CodeUnknownField, "spec.bogus"},
		{"unknown nested", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"` + st.ID + `","launchConfig":{"image":"x","healthCheck":{"prot":1}}}}`, 400, api.CodeUnknownField, "spec.launchConfig.healthCheck.prot"},
		{"wrong type", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"` + st.ID + `","scale":"3"}}`, 400, api.CodeInvalidField, "spec.scale"},
		{"wrong type in list", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"` + st.ID + `","launchConfig":{"image":"x","ports":["80",81]}}}`, 400, api.CodeInvalidField, "spec.launchConfig.ports[1]"},
		{"bad name", "POST", "/v1/stacks", `{"name":"Web_1"}`, 422, api.CodeInvalidField, "name"},
		{"long name", "POST", "/v1/stacks", `{"name":"` + strings.Repeat("a", 64) + `"}`, 422, api.CodeInvalidField, "name"},
		{"missing name", "POST", "/v1/stacks", `{}`, 422, api.CodeMissingRequired, "name"},
		{"bad enum", "POST", "/v1/stacks", `{"name":"a","spec":{"kind":"swarm"}}`, 422, api.CodeInvalidField, "spec.kind"},
		{"negative scale", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"` + st.ID + `","scale":-1,"launchConfig":{"image":"x"}}}`, 422, api.CodeInvalidField, "spec.scale"},
		{"dangling stack", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"st-nope","launchConfig":{"image":"x"}}}`, 422, api.CodeInvalidReference, "spec.stackId"},
		{"dangling host", "POST", "/v1/containers", `{"spec":{"hostId":"h-nope"}}`, 422, api.CodeInvalidReference, "spec.hostId"},
		{"id given", "POST", "/v1/stacks", `{"id":"st-mine","name":"a"}`, 422, api.CodeInvalidField, "id"},
		{"wrong type field", "POST", "/v1/stacks", `{"type":"host","name":"a"}`, 422, api.CodeInvalidField, "type"},
		{"bad label", "POST", "/v1/stacks", `{"name":"a","labels":{"a b":"c"}}`, 422, api.CodeInvalidField, "labels.a b"},
		{"bad cidr", "POST", "/v1/networks", `{"name":"n","spec":{"cidr":"10.42.0.0/33"}}`, 422, api.CodeInvalidField, "spec.cidr"},
		{"bad ip", "POST", "/v1/services", `{"name":"a","spec":{"stackId":"` + st.ID + `","kind":"external","externalIPs":["1.2.3"]}}`, 422, api.CodeInvalidField, "spec.externalIPs[0]"},
		{"huge body", "POST", "/v1/stacks", big, 413, api.CodeTooLarge, ""},
		{"bad selector", "GET", "/v1/stacks?labelSelector=a=b=c", "", 400, api.CodeInvalidField, "labelSelector"},
		{"unknown collection", "GET", "/v1/widgets", "", 404, api.CodeNotFound, ""},
		{"change stackId", "PATCH", "/v1/services/" + svc.ID, `{"spec":{"stackId":"` + mustStack(t, c, "b").ID + `"}}`, 422, api.CodeInvalidField, "spec.stackId"},
		{"change id", "PUT", "/v1/stacks/" + st.ID, `{"id":"st-other","name":"web"}`, 422, api.CodeInvalidField, "id"},
		{"bad revision", "PATCH", "/v1/stacks/" + st.ID, `{"revision":"x"}`, 400, api.CodeInvalidField, "revision"},
		{"bad since", "GET", "/v1/stacks?watch=true&since=abc", "", 400, api.CodeInvalidField, "since"},
		{"put unknown field", "PUT", "/v1/stacks/" + st.ID, `{"name":"web","color":"red"}`, 400, api.CodeUnknownField, "color"},
		{"certificate without key", "POST", "/v1/certificates", `{"name":"c","spec":{"cert":"x"}}`, 422, api.CodeMissingRequired, "spec.key"},
		{"bad compose", "POST", "/v1/stacks", `{"name":"c","spec":{"compose":"services:\n  web:\n    image: x\n    imagez: y\n"}}`, 422, api.CodeInvalidField, "spec.compose"},
	}
	_, before, err := c.Stacks().List(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, body := raw(t, s.URL(), tc.method, tc.path, tc.body, creds)
			var e api.Error
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("status %d, body is not a JSON error: %s", code, body)
			}
			if code != tc.status || e.Code != tc.code || e.Field != tc.field || e.Status != code || e.Message == "" {
				t.Fatalf("got %d %s field %q (%s); want %d %s field %q", code, e.Code, e.Field, e.Message, tc.status, tc.code, tc.field)
			}
		})
	}
	// Nothing was written: the store revision is where it was.
	_, after, err := c.Stacks().List(context.Background(), client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Fatalf("bad requests changed the store: revision %d -> %d", before, after)
	}
}

func TestIntegrationAuth(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	creds := readCreds(t, s)
	if fi, err := os.Stat(s.CredentialsPath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials.json mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if code, _ := raw(t, s.URL(), "GET", "/v1/stacks", "", nil); code != 401 {
		t.Fatalf("no key: %d, want 401", code)
	}
	if code, _ := raw(t, s.URL(), "GET", "/v1/stacks", "", &api.Credentials{AccessKey: creds.AccessKey, SecretKey: "wrong"}); code != 401 {
		t.Fatalf("bad secret: %d, want 401", code)
	}
	// Bearer form works too.
	req, _ := http.NewRequest("GET", s.URL()+"/v1/stacks", nil)
	req.Header.Set("Authorization", "Bearer "+creds.AccessKey+":"+creds.SecretKey)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("bearer auth failed: %v %v", resp, err)
	}

	// A service key: reads all, cannot manage keys.
	key, err := admin.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: "svc"}, Spec: api.APIKeySpec{Role: api.RoleService}})
	if err != nil || key.Status.SecretKey == "" || key.Status.AccessKey != key.ID {
		t.Fatalf("creating key: %+v %v", key, err)
	}
	again, _ := admin.APIKeys().Get(ctx, key.ID)
	if again.Status.SecretKey != "" {
		t.Fatal("a key's secret must be shown only at creation")
	}
	svc := client.New(s.URL(), key.ID, key.Status.SecretKey)
	if _, err := svc.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "by-service"}}); err != nil {
		t.Fatalf("service key creating a stack: %v", err)
	}
	if _, err := svc.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: "x"}, Spec: api.APIKeySpec{Role: api.RoleAdmin}}); !api.IsStatus(err, 403) {
		t.Fatalf("service key creating a key: want 403, got %v", err)
	}
	if _, _, err := svc.APIKeys().List(ctx, client.ListOptions{}); !api.IsStatus(err, 403) {
		t.Fatalf("service key listing keys: want 403, got %v", err)
	}
	// Deleting the key revokes it at once.
	if _, err := admin.APIKeys().Delete(ctx, key.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.Stacks().List(ctx, client.ListOptions{}); !api.IsStatus(err, 401) {
		t.Fatalf("deleted key: want 401, got %v", err)
	}

	// Registration: token shown once, agent key scoped to its host.
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil || tok.Status.Token == "" {
		t.Fatalf("creating token: %+v %v", tok, err)
	}
	anon := client.New(s.URL(), "", "")
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: "rt-x.bad", Name: "node1"}); !api.IsStatus(err, 401) {
		t.Fatalf("bad token: want 401, got %v", err)
	}
	reg, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node1", AgentIP: "10.0.0.1", Labels: map[string]string{"zone": "a"}})
	if err != nil || reg.Host.Name != "node1" || reg.Host.Labels["zone"] != "a" || reg.Host.Status.AgentIP != "10.0.0.1" {
		t.Fatalf("register: %+v %v", reg, err)
	}
	other, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(s.URL(), reg.AccessKey, reg.SecretKey)
	st := mustStack(t, admin, "app")
	sv := mustService(t, admin, st.ID, "web")
	mine, err := admin.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{ServiceID: sv.ID, HostID: reg.Host.ID}})
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := admin.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{ServiceID: sv.ID, HostID: other.Host.ID}})
	if err != nil {
		t.Fatal(err)
	}
	cs, _, err := agent.Containers().List(ctx, client.ListOptions{})
	if err != nil || len(cs) != 1 || cs[0].ID != mine.ID {
		t.Fatalf("agent sees %d containers (%v), want only its own", len(cs), err)
	}
	if _, err := agent.Containers().Get(ctx, theirs.ID); !api.IsStatus(err, 403) {
		t.Fatalf("agent reading another host's container: want 403, got %v", err)
	}
	if _, err := agent.Containers().PatchStatus(ctx, mine.ID, map[string]any{"status": map[string]any{"state": "running", "primaryIP": "10.42.0.5"}}); err != nil {
		t.Fatalf("agent updating its container's status: %v", err)
	}
	if _, err := agent.Containers().PatchStatus(ctx, theirs.ID, map[string]any{"status": map[string]any{"state": "running"}}); !api.IsStatus(err, 403) {
		t.Fatalf("agent updating another host's container: want 403, got %v", err)
	}
	// What an agent runs and how its host is scheduled are not its to change.
	if _, err := agent.Containers().Patch(ctx, mine.ID, map[string]any{"spec": map[string]any{"launchConfig": map[string]any{"image": "x", "privileged": true}}}); !api.IsStatus(err, 403) {
		t.Fatalf("agent changing its container's launch config: want 403, got %v", err)
	}
	for _, p := range []map[string]any{{"labels": map[string]any{"zone": "mine"}}, {"spec": map[string]any{"unschedulable": true}}, {"name": "renamed"}} {
		if _, err := agent.Hosts().Patch(ctx, reg.Host.ID, p); !api.IsStatus(err, 403) {
			t.Fatalf("agent patching its host with %v: want 403, got %v", p, err)
		}
	}
	if _, err := agent.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "nope"}}); !api.IsStatus(err, 403) {
		t.Fatalf("agent creating a stack: want 403, got %v", err)
	}
	hosts, _, _ := agent.Hosts().List(ctx, client.ListOptions{})
	if len(hosts) != 1 || hosts[0].ID != reg.Host.ID {
		t.Fatalf("agent sees %d hosts, want its own", len(hosts))
	}
	// The agent re-registering with its own key gets the same host and a new
	// key, and the old key is revoked.
	reg2, err := agent.Register(ctx, api.RegisterRequest{Name: "node1", AgentIP: "10.0.0.9"})
	if err != nil || reg2.Host.ID != reg.Host.ID || reg2.Host.Status.AgentIP != "10.0.0.9" || reg2.Host.Labels["zone"] != "a" {
		t.Fatalf("re-register: %+v %v", reg2, err)
	}
	if _, _, err := agent.Hosts().List(ctx, client.ListOptions{}); !api.IsStatus(err, 401) {
		t.Fatalf("old agent key after re-register: want 401, got %v", err)
	}
	// What the re-registration reported is stored, not only answered.
	if h, err := admin.Hosts().Get(ctx, reg.Host.ID); err != nil || h.Status.AgentIP != "10.0.0.9" {
		t.Fatalf("host after re-registering from 10.0.0.9: %+v %v", h, err)
	}
}

func TestIntegrationCascadeDelete(t *testing.T) {
	integration(t)
	ctx := context.Background()
	_, c := testenv.StartServer(t, apiserver.Options{})
	host, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "h1"}})
	if err != nil {
		t.Fatal(err)
	}
	doomed, kept := mustStack(t, c, "doomed"), mustStack(t, c, "kept")
	for _, st := range []*api.Stack{doomed, kept} {
		for i := 0; i < 3; i++ {
			sv := mustService(t, c, st.ID, fmt.Sprintf("s%d", i))
			for j := 0; j < 5; j++ {
				if _, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{StackID: st.ID, ServiceID: sv.ID, HostID: host.ID}}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// Pods belong to a stack (namespace) without a service.
	for _, st := range []*api.Stack{doomed, kept} {
		if _, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{Kind: api.ContainerKindPod, StackID: st.ID, HostID: host.ID}}); err != nil {
			t.Fatal(err)
		}
	}
	// A container's stack is its service's.
	svcOfKept, _, _ := c.Services().List(ctx, client.ListOptions{StackID: kept.ID})
	derived, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{ServiceID: svcOfKept[0].ID, HostID: host.ID}})
	if err != nil || derived.Spec.StackID != kept.ID {
		t.Fatalf("container stack not derived from its service: %+v %v", derived, err)
	}
	if _, err := c.Containers().Create(ctx, &api.Container{Spec: api.ContainerSpec{ServiceID: svcOfKept[0].ID, StackID: doomed.ID}}); !api.IsStatus(err, 422) {
		t.Fatalf("container in another stack than its service: want 422, got %v", err)
	}
	if _, err := c.Stacks().Delete(ctx, doomed.ID); err != nil {
		t.Fatal(err)
	}
	// No new child while the stack is going.
	if _, err := c.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "late"}, Spec: api.ServiceSpec{StackID: doomed.ID, LaunchConfig: &api.LaunchConfig{Image: "busybox"}}}); !api.IsStatus(err, 409) {
		t.Fatalf("service in a stack being deleted: want 409, got %v", err)
	}
	var ctrs []api.Container
	testenv.Eventually(t, "the stack's services and containers collected", 10*time.Second, func() error {
		svcs, _, _ := c.Services().List(ctx, client.ListOptions{})
		ctrs, _, _ = c.Containers().List(ctx, client.ListOptions{})
		if _, err := c.Stacks().Get(ctx, doomed.ID); !api.IsNotFound(err) || len(svcs) != 3 || len(ctrs) != 17 {
			return fmt.Errorf("after deleting a stack: stack %v, %d services, %d containers; want 404, 3 and 17", err, len(svcs), len(ctrs))
		}
		return nil
	})
	for _, ct := range ctrs {
		if ct.Spec.StackID != kept.ID {
			t.Fatalf("container %s of the deleted stack survived", ct.ID)
		}
	}
	// A stack's name is free again once it is gone.
	mustStack(t, c, "doomed")
	// Deleting the host removes what was placed on it.
	if _, err := c.Hosts().Delete(ctx, host.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the host's containers collected", 10*time.Second, func() error {
		if ctrs, _, _ := c.Containers().List(ctx, client.ListOptions{}); len(ctrs) != 0 {
			return fmt.Errorf("%d containers survived their host", len(ctrs))
		}
		if _, err := c.Hosts().Get(ctx, host.ID); !api.IsNotFound(err) {
			return fmt.Errorf("host: want 404, got %v", err)
		}
		return nil
	})
}

func TestIntegrationConcurrentUpdates(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, c := testenv.StartServer(t, apiserver.Options{})
	st := mustStack(t, c, "race")
	const writers = 20
	var wg sync.WaitGroup
	codes := make([]int, writers)
	creds := readCreds(t, s)
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			body := fmt.Sprintf(`{"revision":%d,"labels":{"writer":"%d"}}`, st.Revision, i)
			codes[i], _ = raw(t, s.URL(), "PATCH", "/v1/stacks/"+st.ID, body, creds)
		}(i)
	}
	wg.Wait()
	won := 0
	for _, code := range codes {
		switch code {
		case 200:
			won++
		case 409:
		default:
			t.Fatalf("unexpected status %d", code)
		}
	}
	if won != 1 {
		t.Fatalf("%d writers won with the same revision; want exactly 1", won)
	}
	got, _ := c.Stacks().Get(ctx, st.ID)
	if got.Labels["writer"] == "" {
		t.Fatal("the winning write is not stored")
	}
}

func TestIntegrationCredentialsReusedAcrossRestart(t *testing.T) {
	integration(t)
	dir := t.TempDir()
	s1, c1 := testenv.StartServer(t, apiserver.Options{DataDir: dir})
	st := mustStack(t, c1, "persist")
	first := readCreds(t, s1)
	s1.Close()
	s2, c2 := testenv.StartServer(t, apiserver.Options{DataDir: dir})
	second := readCreds(t, s2)
	if first.AccessKey != second.AccessKey || first.SecretKey != second.SecretKey {
		t.Fatal("restart replaced the bootstrap admin key")
	}
	if got, err := c2.Stacks().Get(context.Background(), st.ID); err != nil || got.Name != "persist" {
		t.Fatalf("data did not survive a restart: %v", err)
	}
}
