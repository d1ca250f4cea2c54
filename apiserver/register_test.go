package apiserver_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// A registration token does not take over a host that exists (issue 9,
// defect 7), and tokens can be limited and revoked.
func TestIntegrationRegistrationCannotTakeOverAHost(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	anon := client.New(s.URL(), "", "")
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(s.URL(), reg.AccessKey, reg.SecretKey)
	other, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node2"})
	if err != nil {
		t.Fatal(err)
	}
	otherAgent := client.New(s.URL(), other.AccessKey, other.SecretKey)

	// The reproduction: anyone with a token re-registers node1 and gets its key.
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node1"}); !api.IsStatus(err, 409) {
		t.Fatalf("re-registering node1 with a plain token: want 409, got %v", err)
	}
	if _, err := agent.Hosts().Get(ctx, reg.Host.ID); err != nil {
		t.Fatalf("node1's agent key after a refused takeover: %v", err)
	}
	// Another host's agent key does not do it either, with or without a token.
	if _, err := otherAgent.Register(ctx, api.RegisterRequest{Name: "node1"}); !api.IsStatus(err, 403) {
		t.Fatalf("node2's agent registering node1 without a token: want 403, got %v", err)
	}
	if _, err := otherAgent.Register(ctx, api.RegisterRequest{Name: "node1", Token: tok.Status.Token}); !api.IsStatus(err, 409) {
		t.Fatalf("node2's agent registering node1 with a plain token: want 409, got %v", err)
	}
	// Two agents racing for one new name: one gets it, the other a 409.
	var wg sync.WaitGroup
	results := make([]error, 2)
	ids := make([]string, 2)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "raced"})
			if err == nil {
				ids[i] = r.Host.ID
			}
			results[i] = err
		}()
	}
	wg.Wait()
	if (results[0] == nil) == (results[1] == nil) {
		t.Fatalf("two registrations of one new name: want one success and one 409, got %v and %v", results[0], results[1])
	}
	for _, err := range results {
		if err != nil && !api.IsStatus(err, 409) {
			t.Fatalf("the losing registration: want 409, got %v", err)
		}
	}

	// The ways that do work: the host's own key, a token for that exact
	// name, an admin key.
	again, err := agent.Register(ctx, api.RegisterRequest{Name: "node1"})
	if err != nil || again.Host.ID != reg.Host.ID {
		t.Fatalf("node1's agent re-registering with its key: %+v %v", again, err)
	}
	named, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: api.RegistrationTokenSpec{HostNamePattern: "node1", MaxUses: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := anon.Register(ctx, api.RegisterRequest{Token: named.Status.Token, Name: "node1"}); err != nil || r.Host.ID != reg.Host.ID {
		t.Fatalf("re-registering node1 with a token issued for it: %+v %v", r, err)
	}
	if r, err := admin.Register(ctx, api.RegisterRequest{Name: "node1"}); err != nil || r.Host.ID != reg.Host.ID {
		t.Fatalf("an admin re-registering node1: %+v %v", r, err)
	}
}

func TestIntegrationRegistrationTokenLimits(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	anon := client.New(s.URL(), "", "")
	mk := func(spec api.RegistrationTokenSpec) *api.RegistrationToken {
		t.Helper()
		tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: spec})
		if err != nil {
			t.Fatalf("creating a token %+v: %v", spec, err)
		}
		return tok
	}

	// Uses: 8 agents race for a token of 3 uses; exactly 3 get in.
	three := mk(api.RegistrationTokenSpec{MaxUses: 3})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, usedUp := 0, 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := anon.Register(ctx, api.RegisterRequest{Token: three.Status.Token, Name: "racer-" + string(rune('a'+i))})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case api.IsStatus(err, 401):
				usedUp++
			default:
				t.Errorf("registration with a token of 3 uses: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 3 || usedUp != 5 {
		t.Fatalf("8 registrations with a token of 3 uses: %d succeeded and %d were refused as used up; want 3 and 5", ok, usedUp)
	}
	got, err := admin.RegistrationTokens().Get(ctx, three.ID)
	if err != nil || got.Status.Uses != 3 || got.Status.LastUsedAt == nil || got.Status.Token != "" {
		t.Fatalf("token after 3 uses: %+v %v; want uses 3, lastUsedAt set, no secret", got, err)
	}

	// Expiry.
	past := time.Now().Add(-time.Minute)
	expired := mk(api.RegistrationTokenSpec{ExpiresAt: &past})
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: expired.Status.Token, Name: "late"}); !api.IsStatus(err, 401) {
		t.Fatalf("expired token: want 401, got %v", err)
	}

	// Host-name pattern.
	workers := mk(api.RegistrationTokenSpec{HostNamePattern: "worker-*"})
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: workers.Status.Token, Name: "db-1"}); !api.IsStatus(err, 403) {
		t.Fatalf("token for worker-* registering db-1: want 403, got %v", err)
	}
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: workers.Status.Token, Name: "worker-1"}); err != nil {
		t.Fatalf("token for worker-* registering worker-1: %v", err)
	}
	if _, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: api.RegistrationTokenSpec{HostNamePattern: "worker-[a"}}); !api.IsStatus(err, 422) {
		t.Fatalf("a token with a broken pattern: want 422, got %v", err)
	}
	if _, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: api.RegistrationTokenSpec{MaxUses: -1}}); !api.IsStatus(err, 422) {
		t.Fatalf("a token with maxUses -1: want 422, got %v", err)
	}

	// Revocation: a deleted token registers nothing.
	if _, err := admin.RegistrationTokens().Delete(ctx, workers.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: workers.Status.Token, Name: "worker-2"}); !api.IsStatus(err, 401) {
		t.Fatalf("deleted token: want 401, got %v", err)
	}
	// A bad name is refused before any use is counted.
	if _, err := anon.Register(ctx, api.RegisterRequest{Token: three.Status.Token, Name: "Not A Name"}); !api.IsStatus(err, 422) {
		t.Fatalf("register with a bad name: want 422, got %v", err)
	}
}

// An agent reports what it observes of its host and nothing else; the
// capacity it claims is clamped to what a machine can have (issue 9,
// defect 6).
func TestIntegrationAgentHostStatusLimited(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := client.New(s.URL(), "", "").Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	agent := client.New(s.URL(), reg.AccessKey, reg.SecretKey)
	for _, st := range []map[string]any{
		{"state": "active"},
		{"nodeLabels": map[string]any{"node-role.kubernetes.io/control-plane": ""}},
		{"subnet": "10.42.7.0/24"},
		{"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}},
	} {
		if _, err := agent.Hosts().PatchStatus(ctx, reg.Host.ID, map[string]any{"status": st}); !api.IsStatus(err, 403) {
			t.Errorf("agent patching its host's status with %v: want 403, got %v", st, err)
		}
	}
	h, err := agent.Hosts().PatchStatus(ctx, reg.Host.ID, map[string]any{"status": map[string]any{
		"dockerVersion": "20.10.24", "hostname": "h1.example", "agentIP": "10.0.0.7",
		"capacity": map[string]any{"milliCPU": int64(1) << 50, "memoryBytes": 8 << 30},
	}})
	if err != nil {
		t.Fatalf("agent reporting what it observes: %v", err)
	}
	if h.Status.Capacity.MilliCPU != 4096*1000 || h.Status.Capacity.MemoryBytes != 8<<30 || h.Status.DockerVersion != "20.10.24" {
		t.Fatalf("after a claim of 2^50 milliCPU: %+v; want it clamped to 4,096 cores, the rest as reported", h.Status)
	}
	if _, err := agent.Hosts().PatchStatus(ctx, reg.Host.ID, map[string]any{"status": map[string]any{"capacity": map[string]any{"milliCPU": -1}}}); !api.IsStatus(err, 422) {
		t.Fatalf("negative capacity: want 422, got %v", err)
	}
	// What the agent may not write, an admin still may.
	if _, err := admin.Hosts().PatchStatus(ctx, reg.Host.ID, map[string]any{"status": map[string]any{"nodeLabels": map[string]any{"a": "b"}}}); err != nil {
		t.Fatalf("admin patching nodeLabels: %v", err)
	}
}
