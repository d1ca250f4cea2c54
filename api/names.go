package api

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// EngineName turns a Kubernetes name (a DNS subdomain up to 253 characters,
// or several joined by "-") into an engine name (a DNS label up to 63): a
// name that already is one stays; otherwise dots become dashes, a name too
// long is cut, and a hash of the whole is added, so distinct names stay
// distinct ("a.b" and "a-b" do not meet).
func EngineName(name string) string {
	n := strings.ReplaceAll(strings.ToLower(name), ".", "-")
	if len(n) <= 63 && dnsLabel.MatchString(n) && n == name {
		return n
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])[:8]
	if len(n) > 54 {
		n = n[:54]
	}
	n = strings.Trim(n, "-")
	return n + "-" + h
}
