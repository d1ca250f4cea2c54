// Package doc runs the README's examples against the real parts, so the
// README cannot drift from what the code does.
package doc

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
)

var doctestRe = regexp.MustCompile("(?s)<!-- doctest: ([a-z-]+)[^>]*-->\n```sh\n(.*?)```")

// Every README block marked "doctest" runs, in order, in one bash (set -e,
// so every command must succeed), against a real engine with its
// controllers, from a directory whose .drover/credentials.json is that
// engine's (as after make engine).
func TestIntegrationReadmeExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (real etcd and engine)")
	}
	for _, tool := range []string{"bash", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (make deps installs it)", tool)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := doctestRe.FindAllSubmatch(readme, -1)
	if len(blocks) < 3 {
		t.Fatalf("found %d doctest blocks in README.md; want the engine-api, keys and tokens ones", len(blocks))
	}
	srv, _ := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{})
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, ".drover"), 0o700)
	creds, err := os.ReadFile(srv.CredentialsPath())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, ".drover", "credentials.json"), creds, 0o600)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	for _, b := range blocks {
		script.WriteString("echo '--- doctest: " + string(b[1]) + "'\n")
		script.Write(b[2])
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("a README example failed (%v); the last block started is the one:\n%s", err, out)
	}
	for _, b := range blocks {
		if !strings.Contains(string(out), "--- doctest: "+string(b[1])) {
			t.Errorf("block %s did not run", b[1])
		}
	}
}
