package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

func twentyServices() string {
	var b strings.Builder
	b.WriteString("services:\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&b, "  svc%02d:\n    image: drover-test-app:v1\n    environment:\n      VERSION: \"%d\"\n", i, i)
	}
	return b.String()
}

// BenchmarkStackUp times a 20-service stack until every container runs on
// one host, with drover (engine + scheduler + agent) and, in the same run,
// with `docker-compose up -d` of the same file. Run: make bench-stack.
func BenchmarkStackUp(b *testing.B) {
	compose := twentyServices()
	dir := b.TempDir()
	file := filepath.Join(dir, "docker-compose.yml")
	if err := os.WriteFile(file, []byte(compose), 0o644); err != nil {
		b.Fatal(err)
	}
	if _, err := exec.LookPath("docker-compose"); err != nil {
		b.Fatal("docker-compose is not installed: apt-get install docker-compose")
	}
	c := newClusterTB(b)
	c.startAgent("bench", nil)
	ctx := context.Background()
	waitHosts(b, c, 1)
	var droverTimes, composeTimes []time.Duration
	for i := 0; i < 3; i++ {
		start := time.Now()
		st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("bench%d", i)}, Spec: api.StackSpec{Compose: compose}})
		if err != nil {
			b.Fatal(err)
		}
		for {
			ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, ct := range ctrs {
				if ct.Status.State == api.ContainerRunning {
					n++
				}
			}
			if n == 20 {
				break
			}
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("only %d of 20 running after 2 minutes", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
		droverTimes = append(droverTimes, time.Since(start))
		c.eng.Stacks().Delete(ctx, st.ID)

		project := fmt.Sprintf("drovercmp%d", i)
		start = time.Now()
		if out, err := exec.Command("docker-compose", "-p", project, "-f", file, "up", "-d").CombinedOutput(); err != nil {
			b.Fatalf("docker-compose up: %v\n%s", err, out)
		}
		composeTimes = append(composeTimes, time.Since(start))
		exec.Command("docker-compose", "-p", project, "-f", file, "down", "-t", "0").Run()
		time.Sleep(2 * time.Second) // let the agent finish removing the drover stack
	}
	best := func(ds []time.Duration) time.Duration {
		m := ds[0]
		for _, d := range ds {
			m = min(m, d)
		}
		return m
	}
	fmt.Printf("stackup: 20-service stack all running on one host, drover (engine + scheduler + agent): best %.2f s of %v\n", best(droverTimes).Seconds(), round(droverTimes))
	fmt.Printf("stackup: same file, docker-compose up -d: best %.2f s of %v (goal: drover at least as fast)\n", best(composeTimes).Seconds(), round(composeTimes))
}

func round(ds []time.Duration) []string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%.2fs", d.Seconds()))
	}
	return out
}
