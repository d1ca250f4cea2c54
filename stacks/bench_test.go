package stacks

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkParseCatalog parses and checks 1,000 catalog template versions
// made from the testdata/rancher fixtures (each fixture in many versions:
// its services renamed and its answers varied), as the engine does when a
// stack is stored, and reports the time per template version. The peer is
// docker-compose 1.x's `config -q` (which reads compose v1 and v2, not
// templates or rancher-compose) on the plain compose fixtures, in the
// same run.
func BenchmarkParseCatalog(b *testing.B) {
	type version struct {
		compose []File
		rancher *File
		answers map[string]string
	}
	dirs, _ := filepath.Glob("testdata/rancher/*")
	var versions []version
	for i := 0; len(versions) < 1000; i++ {
		dir := dirs[i%len(dirs)]
		compose, rancher, answers := loadFixture(b, dir)
		// A version of its own: every service name suffixed.
		for j := range compose {
			compose[j].Content = []byte(strings.ReplaceAll(string(compose[j].Content), "example/", fmt.Sprintf("example%d/", i)))
		}
		a := map[string]string{}
		for k, v := range answers {
			a[k] = v
		}
		versions = append(versions, version{compose, rancher, a})
	}
	ctx := context.Background()
	b.ResetTimer()
	var per time.Duration
	for n := 0; n < b.N; n++ {
		start := time.Now()
		for i, v := range versions {
			if _, err := ParseFull(ctx, fmt.Sprintf("s%d", i), v.compose, v.rancher, v.answers); err != nil {
				b.Fatal(err)
			}
		}
		per = time.Since(start) / time.Duration(len(versions))
	}
	b.StopTimer()
	b.ReportMetric(float64(per.Microseconds()), "µs/template")
	fmt.Printf("bench-stacks: %d template versions parsed and checked: %.0f µs per template\n", len(versions), float64(per.Microseconds()))
	dc, err := exec.LookPath("docker-compose")
	if err != nil {
		b.Fatal("docker-compose is missing (make deps installs Debian's): it is this benchmark's peer")
	}
	// The peer reads the same services: each fixture rendered and in
	// compose v2 shape (docker-compose 1.x refuses Rancher's keys, and
	// knows no templates or rancher-compose).
	var plain []string
	tmp := b.TempDir()
	for i, d := range dirs {
		compose, _, answers := loadFixture(b, d)
		f := compose[0]
		if IsTemplate(f.Name) {
			if f, err = RenderTemplate(f, "demo", map[string]string{"sysctl": "true", "peers": "3", "args": "a b", "name": "x", "tag": "1"}); err != nil {
				b.Fatal(err)
			}
		}
		x := &extras{answers: answers}
		nf, err := normalizeCompose(f, x)
		if err != nil {
			b.Fatal(err)
		}
		p := filepath.Join(tmp, fmt.Sprintf("%d-docker-compose.yml", i))
		os.WriteFile(p, nf.Content, 0o644)
		plain = append(plain, p)
	}
	// docker-compose refuses some of Rancher's keys (an LB's
	// "host:container" expose, network_driver); time it on the files it
	// takes.
	config := func(p string) error {
		cmd := exec.Command(dc, "-f", p, "config", "-q")
		cmd.Env = append(os.Environ(), "pg_version=10", "greeting=x", "admin_enabled=false")
		return cmd.Run()
	}
	var taken []string
	for _, p := range plain {
		if config(p) == nil {
			taken = append(taken, p)
		}
	}
	if len(taken) < 2 {
		b.Fatalf("docker-compose took %d of the %d plain compose fixtures; the peer needs 2", len(taken), len(plain))
	}
	plain = taken
	const rounds = 4
	start := time.Now()
	for r := 0; r < rounds; r++ {
		for _, p := range plain {
			if err := config(p); err != nil {
				b.Fatalf("docker-compose config %s: %v", p, err)
			}
		}
	}
	peer := time.Since(start) / time.Duration(rounds*len(plain))
	fmt.Printf("bench-stacks: peer: docker-compose config -q, %d plain compose files x %d: %.0f µs per file; ratio %.3fx (drover's time / the peer's)\n",
		len(plain), rounds, float64(peer.Microseconds()), float64(per)/float64(peer))
}
