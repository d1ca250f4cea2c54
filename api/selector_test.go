package api

import (
	"strings"
	"testing"
)

func TestSelector(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front", "io.rancher.scheduler.global": "true"}
	cases := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"app=web", true},
		{"app==web", true},
		{"app=db", false},
		{"app!=db", true},
		{"app!=web", false},
		{"tier", true},
		{"!tier", false},
		{"!missing", true},
		{"app=web, tier=front", true},
		{"io.rancher.scheduler.global=true", true},
		{"missing!=x", true},
		{"tier in (front,back)", true},
		{"tier notin (front)", false},
		{"app in (db)", false},
	}
	for _, tc := range cases {
		s, err := ParseSelector(tc.sel)
		if err != nil {
			t.Fatalf("%q: %v", tc.sel, err)
		}
		if got := s.Matches(labels); got != tc.want {
			t.Errorf("%q matches = %v, want %v", tc.sel, got, tc.want)
		}
	}
	for _, bad := range []string{"a=b=c", "=x", "!", "a b=c", "tier in (", "k=" + strings.Repeat("v", 64)} {
		if _, err := ParseSelector(bad); err == nil {
			t.Errorf("%q should not parse", bad)
		}
	}
}

func FuzzParseSelector(f *testing.F) {
	for _, s := range []string{"a=b", "a!=b,c", "!x", "a==b, c!=d", "=", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := ParseSelector(s)
		if err != nil {
			return
		}
		// What parses renders to text that parses to the same selector.
		again, err := ParseSelector(sel.String())
		if err != nil || again.String() != sel.String() {
			t.Fatalf("%q -> %q -> %v %v", s, sel.String(), again, err)
		}
		sel.Matches(map[string]string{"a": "b"})
	})
}
