package apiserver

import (
	"regexp"
	"testing"
)

// The expressions the hand-written name checks stand for.
var (
	dnsLabelRe     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dnsSubdomainRe = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	labelKeyRe     = regexp.MustCompile(`^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.:]*[A-Za-z0-9])?$`)
)

var nameCases = []string{
	"", "a", "A", "-", "a-", "-a", "a-b", "web", "web-1", "Web", "a.b", "a..b", ".a", "a.",
	"io.rancher.scheduler.affinity:host_label", "shop.example.com/tier", "example.com/", "/x",
	"a/b/c", "x_y", "_x", "x_", "x:y", "a.b-c/d.e_f:g", "ünïcode", "a\u200bb", "a b", "0", "0-0",
	"foo.bar/Baz", "Foo.bar/baz", "foo-.bar/baz", "foo.-bar/baz", "a/", "a/.", "a/a.", "a/-a",
}

func checkNames(t *testing.T, s string) {
	t.Helper()
	if got, want := isDNSLabel(s), dnsLabelRe.MatchString(s); got != want {
		t.Errorf("isDNSLabel(%q) = %v, the expression says %v", s, got, want)
	}
	if got, want := isDNSSubdomain(s), dnsSubdomainRe.MatchString(s); got != want {
		t.Errorf("isDNSSubdomain(%q) = %v, the expression says %v", s, got, want)
	}
	if got, want := isLabelKey(s), labelKeyRe.MatchString(s); got != want {
		t.Errorf("isLabelKey(%q) = %v, the expression says %v", s, got, want)
	}
}

func TestNamesMatchExpressions(t *testing.T) {
	accepted := 0
	for _, s := range nameCases {
		checkNames(t, s)
		if isLabelKey(s) {
			accepted++
		}
	}
	// The table must exercise both answers.
	if accepted == 0 || accepted == len(nameCases) {
		t.Fatalf("isLabelKey accepted %d of %d cases: the table tests one side only", accepted, len(nameCases))
	}
}

func FuzzNames(f *testing.F) {
	for _, s := range nameCases {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkNames(t, s) })
}
