package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
)

func runCLI(args ...string) (string, string, error) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

// Help everywhere (exit 0), usage errors exit 2 on one line, flags
// anywhere, flags a command does not take refused.
func TestCLIConventions(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"help"}, {"stack", "--help"}, {"host", "--help"}, {"service", "--help"}, {"stack", "up", "--help"}, {"ps", "--help"}, {"inspect", "--help"}, {"server", "--help"}, {"kubectld", "--help"}, {"completion", "bash"}} {
		out, errOut, err := runCLI(args...)
		if err != nil || exitCode(err) == 2 || out+errOut == "" {
			t.Errorf("%v: %v (exit %d)\n%s%s", args, err, exitCode(err), out, errOut)
		}
	}
	for _, args := range [][]string{{"nosuch"}, {"stack", "rm", "x", "-o", "json"}, {"ps", "--bogus"}, {"stack", "up"}, {"host"}, {"ps", "-o", "xml", "--credentials", "/nonexistent"}} {
		_, _, err := runCLI(args...)
		if err == nil || exitCode(err) != 2 || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: want a one-line usage error (exit 2), got %v", args, err)
		}
	}
}

// Every listing in every format, label selectors, the name before or
// after the flags, and inspect, against a real engine.
func TestIntegrationListings(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (real etcd and engine)")
	}
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{})
	ctx := context.Background()
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(srv.URL(), "", "").Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "h1", AgentIP: "127.0.0.1", Labels: map[string]string{"zone": "a"}}); err != nil {
		t.Fatal(err)
	}
	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "shop", Labels: map[string]string{"team": "a"}}, Spec: api.StackSpec{Kind: api.StackCompose, Compose: "services:\n  web:\n    image: nginx\n  db:\n    image: postgres\n"}})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the stack's services", 30*time.Second, func() error {
		svcs, _, err := eng.Services().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(svcs) != 2 {
			return fmt.Errorf("%d services (%v)", len(svcs), err)
		}
		return nil
	})
	creds := []string{"--credentials", srv.CredentialsPath()}
	cli := func(args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(append(args, creds...)...)
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut)
		}
		return out
	}
	if out := cli("stack", "ls"); !strings.HasPrefix(out, "NAME") || !strings.Contains(out, "shop") {
		t.Errorf("stack ls:\n%s", out)
	}
	if out := cli("stack", "ls", "-o", "wide"); !strings.Contains(out, st.ID) || !strings.Contains(out, "team=a") {
		t.Errorf("stack ls -o wide:\n%s", out)
	}
	if out := cli("stack", "ls", "-o", "name", "-l", "team=a"); out != "shop\n" {
		t.Errorf("stack ls -o name -l team=a: %q", out)
	}
	if out := cli("stack", "ls", "-l", "team=b", "-o", "name"); out != "" {
		t.Errorf("stack ls -l team=b: %q", out)
	}
	var stacks []api.Stack
	if out := cli("stack", "ls", "-o", "json"); json.Unmarshal([]byte(out), &stacks) != nil || len(stacks) != 1 {
		t.Errorf("stack ls -o json:\n%s", out)
	}
	if out := cli("stack", "ls", "-o", "yaml"); !strings.Contains(out, "name: shop") {
		t.Errorf("stack ls -o yaml:\n%s", out)
	}
	if out := cli("service", "ls", "--stack", "shop", "-o", "name"); out != "db\nweb\n" {
		t.Errorf("service ls -o name: %q", out)
	}
	if out := cli("service", "ls", "-o", "wide"); !strings.Contains(out, "nginx") || !strings.Contains(out, "postgres") {
		t.Errorf("service ls -o wide:\n%s", out)
	}
	if out := cli("host", "ls", "-l", "zone=a", "-o", "name"); out != "h1\n" {
		t.Errorf("host ls -l zone=a: %q", out)
	}
	if out := cli("ps", "-o", "wide"); !strings.HasPrefix(out, "NAME") {
		t.Errorf("ps -o wide:\n%s", out)
	}
	if out := cli("inspect", "stack", "shop"); !strings.Contains(out, "name: shop") || !strings.Contains(out, st.ID) {
		t.Errorf("inspect stack shop:\n%s", out)
	}
	if out := cli("inspect", "-o", "json", "stack", st.ID); !strings.Contains(out, `"name": "shop"`) {
		t.Errorf("inspect -o json stack ID:\n%s", out)
	}
	// The name after the flags works as before them.
	if out := cli("stack", "rm", "--wait", "30s", "shop"); out != "" {
		t.Logf("%s", out)
	}
	if out := cli("stack", "ls", "-o", "name"); out != "" {
		t.Errorf("stack rm NAME after flags did not remove it: %q", out)
	}
	if _, _, err := runCLI(append([]string{"ps", "-l", "=x"}, creds...)...); err == nil || exitCode(err) != 2 {
		t.Errorf("a bad selector: %v", err)
	}
}
