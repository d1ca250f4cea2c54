package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// stack up --template DIR --dry-run reads a catalog version folder as it
// is (the .tpl rendered, question defaults applied) and prints the
// services without a server; several -f files merge in order.
func TestStackUpTemplateDryRun(t *testing.T) {
	var out, errOut bytes.Buffer
	dir := filepath.Join("..", "..", "stacks", "testdata", "rancher", "v2-template")
	answers := filepath.Join(t.TempDir(), "answers.txt")
	os.WriteFile(answers, []byte("sysctl=true\npeers=2\n"), 0o644)
	err := run(context.Background(), []string{"stack", "up", "tpl", "--template", dir, "--answers", answers, "--dry-run"}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, want := range []string{"name: Templated", "PEERS: peer-0,peer-1", "name: web-sysctl", "scale: 2", "STACK: tpl"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("dry run output lacks %q:\n%s", want, out.String())
		}
	}
	// A missing required answer: every problem named, nothing sent.
	out.Reset()
	errOut.Reset()
	err = run(context.Background(), []string{"stack", "up", "v1", "--template", filepath.Join("..", "..", "stacks", "testdata", "rancher", "v1-catalog"), "--dry-run"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "greeting") || !strings.Contains(err.Error(), "ca_crt") {
		t.Errorf("missing answers: %v", err)
	}
	// Several -f: the second overrides the first.
	d := t.TempDir()
	a, b := filepath.Join(d, "a.yml"), filepath.Join(d, "b.yml")
	os.WriteFile(a, []byte("services:\n  web:\n    image: nginx:1\n"), 0o644)
	os.WriteFile(b, []byte("services:\n  web:\n    image: nginx:2\n"), 0o644)
	out.Reset()
	if err := run(context.Background(), []string{"stack", "up", "m", "-f", a, "-f", b, "--dry-run"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "image: nginx:2") {
		t.Errorf("merge: %v\n%s", err, out.String())
	}
}
