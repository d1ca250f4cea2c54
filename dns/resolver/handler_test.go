package resolver

import (
	"net"
	"testing"

	mdns "github.com/miekg/dns"
)

// Reverse names drover holds answer locally, in the case asked; every
// other reverse name, malformed ones included, goes upstream, as it did
// before drover answered any.
func TestReverseLookups(t *testing.T) {
	h := fuzzHandler()
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5353}
	for _, tc := range []struct {
		name   string
		qtype  uint16
		source string
		ptr    string
	}{
		{"2.0.42.10.in-addr.arpa.", mdns.TypePTR, "local", "shop-web-1.drover.internal."},
		{"2.0.42.10.IN-ADDR.arpa.", mdns.TypePTR, "local", "shop-web-1.drover.internal."},
		{"1.0.0.10.in-addr.arpa.", mdns.TypePTR, "local", "db-0.db.ns.svc.cluster.local."},
		{"3.0.42.10.in-addr.arpa.", mdns.TypePTR, "forward", ""},   // no container there
		{"0.42.10.in-addr.arpa.", mdns.TypePTR, "forward", ""},     // a parent of a container's name
		{"1.2.0.42.10.in-addr.arpa.", mdns.TypePTR, "forward", ""}, // five labels
		{"300.0.42.10.in-addr.arpa.", mdns.TypePTR, "forward", ""},
		{"in-addr.arpa.", mdns.TypePTR, "forward", ""},
		{"x.y.in-addr.arpa.", mdns.TypePTR, "forward", ""},
		{"2.0.42.10.in-addr.arpa.", mdns.TypeA, "local", ""}, // the name, without that type
	} {
		req := new(mdns.Msg)
		req.SetQuestion(tc.name, tc.qtype)
		resp, source := h.Answer(from, req)
		if source != tc.source {
			t.Errorf("%s %s: answered from %s, want %s", tc.name, mdns.TypeToString[tc.qtype], source, tc.source)
			continue
		}
		if tc.source != "local" {
			continue
		}
		var ptrs []string
		for _, rr := range resp.Answer {
			if p, ok := rr.(*mdns.PTR); ok {
				ptrs = append(ptrs, p.Ptr)
				if p.Hdr.Name != tc.name {
					t.Errorf("%s: answer named %s", tc.name, p.Hdr.Name)
				}
			}
		}
		if (tc.ptr == "" && len(ptrs) != 0) || (tc.ptr != "" && (len(ptrs) != 1 || ptrs[0] != tc.ptr)) || resp.Rcode != mdns.RcodeSuccess {
			t.Errorf("%s %s: %s %v, want %q", tc.name, mdns.TypeToString[tc.qtype], mdns.RcodeToString[resp.Rcode], ptrs, tc.ptr)
		}
	}
}

// Answers for our zones are authoritative, NXDOMAIN included (with the
// zone's SOA); RA says recursion is offered (there is an upstream).
func TestAuthoritativeAndRecursionFlags(t *testing.T) {
	h := fuzzHandler()
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5353}
	for _, tc := range []struct {
		name  string
		rcode int
		aa    bool
	}{
		{"web.shop.drover.internal.", mdns.RcodeSuccess, true},
		{"nope.shop.drover.internal.", mdns.RcodeNameError, true},
		{"nope.ns.svc.cluster.local.", mdns.RcodeNameError, true},
		{"2.0.42.10.in-addr.arpa.", mdns.RcodeSuccess, true},
	} {
		req := new(mdns.Msg)
		req.SetQuestion(tc.name, mdns.TypeA)
		resp, _ := h.Answer(from, req)
		if resp.Rcode != tc.rcode || resp.Authoritative != tc.aa || !resp.RecursionAvailable {
			t.Errorf("%s: rcode %s AA %v RA %v, want %s AA %v RA true", tc.name, mdns.RcodeToString[resp.Rcode], resp.Authoritative, resp.RecursionAvailable, mdns.RcodeToString[tc.rcode], tc.aa)
		}
	}
}
