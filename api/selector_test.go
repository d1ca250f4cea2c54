package api

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/labels"
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
	// Engine labels carry Rancher values Kubernetes label values may not.
	long := map[string]string{"io.rancher.stack_service.name": "shop/web", "name": strings.Repeat("v", 100)}
	for _, sel := range []string{"io.rancher.stack_service.name=shop/web", "name=" + strings.Repeat("v", 100), "io.rancher.stack_service.name in (shop/web,x)"} {
		s, err := ParseSelector(sel)
		if err != nil || !s.Matches(long) {
			t.Errorf("%q: %v; want it to parse and match", sel, err)
		}
	}
	for _, bad := range []string{"a=b=c", "=x", "!", "a b=c", "tier in (", "tier in a,b)", "tier in ((a))", "k in (a b)"} {
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

// Where both parsers accept a selector, they agree on what it selects.
func TestSelectorAgreesWithApimachinery(t *testing.T) {
	sets := []map[string]string{{}, {"app": "web"}, {"app": "db", "tier": "front"}, {"tier": "back", "env": "prod"}}
	for _, sel := range []string{"", "app=web", "app!=web", "app", "!app", "app in (web,db)", "app notin (web)", "tier in (front), env notin (dev,qa)", "app==db,tier=front", "!env,app"} {
		ours, err := ParseSelector(sel)
		if err != nil {
			t.Fatalf("%q: %v", sel, err)
		}
		theirs, err := labels.Parse(sel)
		if err != nil {
			t.Fatalf("apimachinery %q: %v", sel, err)
		}
		for _, set := range sets {
			if a, b := ours.Matches(set), theirs.Matches(labels.Set(set)); a != b {
				t.Errorf("%q on %v: ours %v, apimachinery %v", sel, set, a, b)
			}
		}
	}
}
