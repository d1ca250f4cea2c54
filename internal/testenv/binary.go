package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// DroverBinary builds cmd/drover once per test binary and returns its path.
func DroverBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		// One path for every test binary of every run, replaced by a
		// rename (a process running the old one keeps it): nothing piles
		// up in /tmp.
		dir := filepath.Join(os.TempDir(), "drover-test-bin")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "drover")
		tmp := fmt.Sprintf("%s.%d", binPath, os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "./cmd/drover")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			os.Remove(tmp)
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		binErr = os.Rename(tmp, binPath)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
