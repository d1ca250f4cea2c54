package api

import (
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
)

// Selector is a parsed label selector in Kubernetes syntax: comma-separated
// requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`
// (exists) and `!k` (absent). Keys and values follow the Kubernetes label
// rules. The zero Selector selects everything.
type Selector struct{ s labels.Selector }

// ParseSelector parses s; an empty string selects everything.
func ParseSelector(s string) (Selector, error) {
	sel, err := labels.Parse(s)
	if err != nil {
		return Selector{}, fmt.Errorf("label selector %q: %w", s, err)
	}
	if sel.Empty() {
		return Selector{}, nil
	}
	return Selector{sel}, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(m map[string]string) bool {
	return s.s == nil || s.s.Matches(labels.Set(m))
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return s.s == nil }

// String renders the selector back to its text form.
func (s Selector) String() string {
	if s.s == nil {
		return ""
	}
	return s.s.String()
}
