package agent_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/internal/testenv"
)

// A reader of the secrets directory sees a certificate and key of one
// version, never a new certificate beside an old key, while the files are
// replaced; the directory stays the same one (a bind mount keeps working).
func TestWriteAtomicSwapsFilesTogether(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "c1")
	pair := func(v int) map[string][]byte {
		return map[string][]byte{"x.crt": fmt.Appendf(nil, "cert %d", v), "x.key": fmt.Appendf(nil, "key %d", v), "credentials.json": []byte("{}")}
	}
	if changed, err := agent.WriteAtomic(dir, pair(0)); err != nil || !changed {
		t.Fatalf("first write: changed=%v err=%v", changed, err)
	}
	st0, _ := os.Stat(dir)
	if changed, err := agent.WriteAtomic(dir, pair(0)); err != nil || changed {
		t.Fatalf("same files again: changed=%v err=%v, want no change", changed, err)
	}

	var stop atomic.Bool
	var mismatches, reads, nameErrs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			// A reader resolves ..data once (as a process opening both
			// files of one version does): the pair must match.
			d, err := os.Readlink(filepath.Join(dir, "..data"))
			if err != nil {
				continue
			}
			c, err1 := os.ReadFile(filepath.Join(dir, d, "x.crt"))
			k, err2 := os.ReadFile(filepath.Join(dir, d, "x.key"))
			if err1 != nil || err2 != nil {
				continue // that version was already cleaned up
			}
			reads.Add(1)
			if !bytes.Equal(bytes.TrimPrefix(c, []byte("cert ")), bytes.TrimPrefix(k, []byte("key "))) {
				mismatches.Add(1)
			}
			// And through the names, which resolve to the current or
			// the previous version (the one before is kept for readers
			// that resolved ..data just before a swap).
			if _, err := os.ReadFile(filepath.Join(dir, "x.key")); err != nil {
				nameErrs.Add(1)
			}
		}
	}()
	for v := 1; v <= 300; v++ {
		if _, err := agent.WriteAtomic(dir, pair(v)); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if mismatches.Load() != 0 {
		t.Fatalf("%d of %d reads of one version held a certificate and key of different versions", mismatches.Load(), reads.Load())
	}
	t.Logf("%d reads, %d reads through the names failed", reads.Load(), nameErrs.Load())
	if b, _ := os.ReadFile(filepath.Join(dir, "x.key")); string(b) != "key 300" {
		t.Fatalf("x.key = %q after 300 versions", b)
	}
	st1, _ := os.Stat(dir)
	if !os.SameFile(st0, st1) {
		t.Fatal("the directory was replaced: a container's bind mount would keep the old one")
	}
	// Old versions are gone; a name left out is gone.
	if _, err := agent.WriteAtomic(dir, map[string][]byte{"x.crt": []byte("cert 301")}); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		entries, _ := os.ReadDir(dir)
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	if n := names(); len(n) != 4 { // ..data, this version and the previous, x.crt
		t.Fatalf("directory holds %v, want ..data, two versions and x.crt", n)
	}
	// The previous version goes a moment later (its removal is what file
	// watchers see).
	testenv.Eventually(t, "the previous version removed", 5*time.Second, func() error {
		if n := names(); len(n) != 3 {
			return fmt.Errorf("directory holds %v, want ..data, one version and x.crt", n)
		}
		return nil
	})
	if _, err := os.Stat(filepath.Join(dir, "x.key")); !os.IsNotExist(err) {
		t.Fatalf("x.key still there: %v", err)
	}
	if _, err := agent.WriteAtomic(dir, map[string][]byte{"../x": nil}); err == nil {
		t.Fatal("a file name with a path was accepted")
	}
}
