// Package backoff is the one retry delay every drover component uses: a
// jittered exponential delay between a minimum and a maximum, reset on
// success.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff doubles from Min to Max; each wait is drawn from [d/2, d].
type Backoff struct {
	Min, Max time.Duration
	d        time.Duration
}

// New returns a backoff from min to max.
func New(min, max time.Duration) *Backoff { return &Backoff{Min: min, Max: max} }

// Next returns the next delay and doubles it.
func (b *Backoff) Next() time.Duration {
	if b.d < b.Min {
		b.d = b.Min
	}
	d := b.d/2 + rand.N(b.d/2+1)
	if b.d *= 2; b.d > b.Max {
		b.d = b.Max
	}
	return d
}

// Wait sleeps for the next delay or until ctx ends, and reports whether it
// slept the whole delay.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Reset starts again from Min.
func (b *Backoff) Reset() { b.d = 0 }
