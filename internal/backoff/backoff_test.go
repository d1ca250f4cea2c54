package backoff

import (
	"testing"
	"time"
)

func TestBackoffDoublesWithinBounds(t *testing.T) {
	b := New(100*time.Millisecond, time.Second)
	ceil := 100 * time.Millisecond
	for i := 0; i < 10; i++ {
		d := b.Next()
		if d < ceil/2 || d > ceil {
			t.Fatalf("step %d: %s not in [%s, %s]", i, d, ceil/2, ceil)
		}
		ceil = min(ceil*2, time.Second)
	}
	b.Reset()
	if d := b.Next(); d > 100*time.Millisecond {
		t.Fatalf("after reset: %s", d)
	}
}
