package resolver

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/internal/testenv"
)

// upstream is a real DNS server on a loopback port that counts the queries
// it gets. Answers carry an RRSIG only when the query had DO set, as a
// signing resolver's would. While hold is open, it waits before answering.
type upstream struct {
	addr    string
	queries atomic.Int64
	do      atomic.Int64
	hold    chan struct{}
}

func startUpstream(t *testing.T, hold chan struct{}) *upstream {
	t.Helper()
	u := &upstream{hold: hold}
	pc, ln := testenv.ListenUDPAndTCP(t)
	u.addr = pc.LocalAddr().String()
	h := mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		u.queries.Add(1)
		if u.hold != nil {
			<-u.hold
		}
		m := new(mdns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		do := r.IsEdns0() != nil && r.IsEdns0().Do()
		if do {
			u.do.Add(1)
		}
		switch q.Name {
		case "example.org.", "shared.example.org.":
			m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.ParseIP("192.0.2.1")})
			if do {
				m.Answer = append(m.Answer, &mdns.RRSIG{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeRRSIG, Class: mdns.ClassINET, Ttl: 60},
					TypeCovered: mdns.TypeA, Algorithm: mdns.ECDSAP256SHA256, Labels: 2, OrigTtl: 60, Expiration: 2e9, Inception: 1e9, KeyTag: 1, SignerName: "example.org.", Signature: "AAAA"})
			}
		case "big.example.org.":
			for i := 0; i < 60; i++ {
				m.Answer = append(m.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: q.Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(i+1))})
			}
			if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
				m.Answer, m.Truncated = nil, true
			}
		case "fail.example.org.":
			m.Rcode = mdns.RcodeServerFailure
		default:
			m.Rcode = mdns.RcodeNameError
		}
		if o := r.IsEdns0(); o != nil {
			m.SetEdns0(1232, do)
		}
		w.WriteMsg(m)
	})
	us := &mdns.Server{PacketConn: pc, Handler: h}
	ts := &mdns.Server{Listener: ln, Handler: h}
	go us.ActivateAndServe()
	go ts.ActivateAndServe()
	t.Cleanup(func() { us.Shutdown(); ts.Shutdown() })
	return u
}

func question(name string, qtype uint16, do, cd bool) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	if do {
		m.SetEdns0(1232, true)
	}
	m.CheckingDisabled = cd
	return m
}

func hasRRSIG(m *mdns.Msg) bool {
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == mdns.TypeRRSIG {
			return true
		}
	}
	return false
}

// Identical queries in flight share one upstream exchange: every one of
// them has missed the cache before the upstream answers, so without
// singleflight each would be sent.
func TestForwardSingleflight(t *testing.T) {
	hold := make(chan struct{})
	up := startUpstream(t, hold)
	var misses atomic.Int64
	f := NewForwarder([]string{up.addr}, 100, Observer{CacheMiss: func() { misses.Add(1) }})
	const n = 20
	var wg sync.WaitGroup
	answers := make([]*mdns.Msg, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := question("shared.example.org.", mdns.TypeA, false, false)
			q.Id = uint16(i + 1)
			answers[i] = f.Forward(q)
		}()
	}
	for misses.Load() < n {
		time.Sleep(time.Millisecond)
	}
	close(hold)
	wg.Wait()
	if got := up.queries.Load(); got != 1 {
		t.Fatalf("%d concurrent identical queries sent %d upstream, want 1", n, got)
	}
	for i, a := range answers {
		if a.Id != uint16(i+1) || len(a.Answer) != 1 {
			t.Fatalf("answer %d: id %d, %d records: every caller gets its own copy", i, a.Id, len(a.Answer))
		}
	}
}

// DO and CD are part of the cache key: a DNSSEC-OK query never gets the
// answer fetched without signatures.
func TestForwardCacheKeyHasDOAndCD(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, 100, Observer{})
	plain := f.Forward(question("example.org.", mdns.TypeA, false, false))
	if hasRRSIG(plain) || plain.IsEdns0() != nil {
		t.Fatalf("plain query got DNSSEC records or an OPT: %v", plain)
	}
	signed := f.Forward(question("example.org.", mdns.TypeA, true, false))
	if !hasRRSIG(signed) {
		t.Fatalf("DO query answered without its RRSIG (from the plain cache entry?): %v", signed)
	}
	// Again, both from the cache, each its own.
	if a := f.Forward(question("EXAMPLE.org.", mdns.TypeA, false, false)); hasRRSIG(a) || a.Question[0].Name != "EXAMPLE.org." {
		t.Fatalf("cached plain answer: %v", a)
	}
	if a := f.Forward(question("example.org.", mdns.TypeA, true, false)); !hasRRSIG(a) {
		t.Fatalf("cached DO answer lost its RRSIG: %v", a)
	}
	if up.queries.Load() != 2 || up.do.Load() != 1 || f.Len() != 2 {
		t.Fatalf("upstream saw %d queries (%d with DO), cache holds %d; want 2, 1, 2", up.queries.Load(), up.do.Load(), f.Len())
	}
	f.Forward(question("example.org.", mdns.TypeA, false, true))
	if up.queries.Load() != 3 || f.Len() != 3 {
		t.Fatalf("a CD query was answered from a non-CD entry: %d queries, %d entries", up.queries.Load(), f.Len())
	}
}

func TestForwardTruncatedRetriesOverTCP(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, 100, Observer{})
	if a := f.Forward(question("big.example.org.", mdns.TypeA, false, false)); len(a.Answer) != 60 {
		t.Fatalf("%d answers, want 60 (over TCP)", len(a.Answer))
	}
}

// Failures are tried on the next upstream, and SERVFAIL is never kept.
// NXDOMAIN without an SOA carries no TTL to keep it for.
func TestForwardFailuresNotCached(t *testing.T) {
	up := startUpstream(t, nil)
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	results := map[string]int{}
	var mu sync.Mutex
	f := NewForwarder([]string{deadAddr, up.addr}, 100, Observer{Forwarded: func(u, r string) { mu.Lock(); results[u+" "+r]++; mu.Unlock() }})
	if a := f.Forward(question("example.org.", mdns.TypeA, false, false)); len(a.Answer) != 1 {
		t.Fatalf("second upstream not tried: %v", a)
	}
	if results[deadAddr+" error"] != 1 || results[up.addr+" ok"] != 1 {
		t.Fatalf("forward results: %v", results)
	}
	for range 2 {
		if a := f.Forward(question("fail.example.org.", mdns.TypeA, false, false)); a.Rcode != mdns.RcodeServerFailure {
			t.Fatalf("fail: %s", mdns.RcodeToString[a.Rcode])
		}
		if a := f.Forward(question("missing.example.org.", mdns.TypeA, false, false)); a.Rcode != mdns.RcodeNameError {
			t.Fatalf("missing: %s", mdns.RcodeToString[a.Rcode])
		}
	}
	if f.Len() != 1 {
		t.Fatalf("cache holds %d answers, want only example.org's", f.Len())
	}
}

// The cache is bounded: the least recently used answer goes first.
func TestForwardCacheBounded(t *testing.T) {
	up := startUpstream(t, nil)
	f := NewForwarder([]string{up.addr}, 2, Observer{})
	f.Forward(question("example.org.", mdns.TypeA, false, false))
	f.Forward(question("example.org.", mdns.TypeA, true, false))
	f.Forward(question("example.org.", mdns.TypeA, false, false)) // used again: kept
	f.Forward(question("shared.example.org.", mdns.TypeA, false, false))
	if f.Len() != 2 {
		t.Fatalf("cache holds %d, bound is 2", f.Len())
	}
	before := up.queries.Load()
	f.Forward(question("example.org.", mdns.TypeA, false, false))
	if up.queries.Load() != before {
		t.Fatal("the recently used answer was evicted")
	}
}
