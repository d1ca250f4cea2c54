package stacks_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/stacks"
)

// Every Rancher-shaped fixture, stored as a stack in a real engine, gets
// from the stack controller exactly the services the parser makes, field
// by field (the server renders .tpl files and applies question defaults
// itself).
func TestIntegrationRancherFixturesDeploy(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (real etcd and engine)")
	}
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{})
	ctx := context.Background()
	dirs, _ := filepath.Glob("testdata/rancher/*")
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			spec := api.StackSpec{Kind: api.StackCompose, Answers: map[string]string{}}
			var compose []stacks.File
			for _, n := range []string{"docker-compose.yml.tpl", "docker-compose.yml"} {
				if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
					spec.Compose, spec.ComposeName = string(b), n
					compose = append(compose, stacks.File{Name: n, Content: b})
					break
				}
			}
			var rancher *stacks.File
			if b, err := os.ReadFile(filepath.Join(dir, "rancher-compose.yml")); err == nil {
				spec.RancherCompose = string(b)
				rancher = &stacks.File{Name: "rancher-compose.yml", Content: b}
			}
			if b, err := os.ReadFile(filepath.Join(dir, "answers.yml")); err == nil {
				yaml.Unmarshal(b, &spec.Answers)
			}
			want, err := stacks.Parse(ctx, name, compose, rancher, spec.Answers)
			if err != nil {
				t.Fatal(err)
			}
			st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: name}, Spec: spec})
			if err != nil {
				t.Fatalf("the engine refused the stack: %v", err)
			}
			testenv.Eventually(t, "the stack's services", 30*time.Second, func() error {
				svcs, _, err := eng.Services().List(ctx, client.ListOptions{StackID: st.ID})
				if err != nil {
					return err
				}
				got := map[string]api.ServiceSpec{}
				for _, s := range svcs {
					sp := s.Spec
					sp.StackID = ""
					got[s.Name] = sp
				}
				for _, w := range want {
					g, ok := got[w.Name]
					if !ok {
						return fmt.Errorf("service %s not created yet (%d of %d)", w.Name, len(got), len(want))
					}
					a, _ := json.Marshal(g)
					b, _ := json.Marshal(w.Spec)
					if string(a) != string(b) {
						return fmt.Errorf("service %s:\nengine: %s\nparser: %s", w.Name, a, b)
					}
				}
				if len(got) != len(want) {
					return fmt.Errorf("%d services, want %d", len(got), len(want))
				}
				return nil
			})
		})
	}
}
