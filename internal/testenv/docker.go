package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestImage is the local test image (test/images/app, FROM scratch).
const TestImage = "drover-test-app"

var imageOnce sync.Once
var imageErr error

// BuildTestImage builds drover-test-app:v1 and :v2 from the repository's
// tiny test program, with the local Docker Engine and no registry. Tests that
// need Docker fail, saying so, when it is not there.
func BuildTestImage(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is not installed; tests need a running Docker Engine")
	}
	if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("Docker Engine not reachable: %v\n%s", err, out)
	}
	imageOnce.Do(func() {
		root := repoRoot(t)
		dir, err := os.MkdirTemp("", "drover-test-image-")
		if err != nil {
			imageErr = err
			return
		}
		defer os.RemoveAll(dir)
		build := exec.Command("go", "build", "-o", filepath.Join(dir, "app"), "./test/images/app")
		build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			imageErr = &buildErr{"go build", err, out}
			return
		}
		os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY app /app\nENTRYPOINT [\"/app\"]\n"), 0o644)
		for _, tag := range []string{"v1", "v2"} {
			cmd := exec.Command("docker", "build", "-q", "--label", "io.drover.test-image="+tag, "-t", TestImage+":"+tag, dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				imageErr = &buildErr{"docker build", err, out}
				return
			}
		}
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
}

type buildErr struct {
	what string
	err  error
	out  []byte
}

func (e *buildErr) Error() string { return e.what + ": " + e.err.Error() + "\n" + string(e.out) }

func repoRoot(t testing.TB) string {
	dir, _ := os.Getwd()
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/drover/drover\n") {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the drover repository root")
		}
		dir = parent
	}
}

// RemoveDockerContainers force-removes every container carrying label=value.
func RemoveDockerContainers(label string) {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+label).Output()
	ids := strings.Fields(string(out))
	if len(ids) > 0 {
		exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
}
