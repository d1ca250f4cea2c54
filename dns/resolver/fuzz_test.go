package resolver

import (
	"errors"
	"net"
	"testing"

	mdns "github.com/miekg/dns"
)

type fakeWriter struct {
	remote net.Addr
	msg    *mdns.Msg
}

func (f *fakeWriter) LocalAddr() net.Addr         { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53} }
func (f *fakeWriter) RemoteAddr() net.Addr        { return f.remote }
func (f *fakeWriter) WriteMsg(m *mdns.Msg) error  { f.msg = m; return nil }
func (f *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (f *fakeWriter) Close() error                { return nil }
func (f *fakeWriter) TsigStatus() error           { return nil }
func (f *fakeWriter) TsigTimersOnly(bool)         {}
func (f *fakeWriter) Hijack()                     {}

// fuzzHandler is a handler over a small record set of every kind, whose
// forwarder answers from memory (no sockets: thousands of inputs a second).
func fuzzHandler() *Handler {
	recs := NewRecords()
	web := map[string]*RRSet{}
	AddA(web, "web.shop.drover.internal.", net.ParseIP("10.42.0.2"))
	AddA(web, "web.shop.drover.internal.", net.ParseIP("fd00::2"))
	web["ext.shop.drover.internal."] = &RRSet{CNAME: "example.org."}
	recs.Set("svc:web", web)
	db := map[string]*RRSet{"_pg._tcp.db.ns.svc.cluster.local.": {SRV: []*mdns.SRV{{Priority: 0, Weight: 100, Port: 5432, Target: "db-0.db.ns.svc.cluster.local."}}}}
	AddA(db, "db-0.db.ns.svc.cluster.local.", net.ParseIP("10.0.0.1"))
	AddPTR(db, net.ParseIP("10.0.0.1"), "db-0.db.ns.svc.cluster.local.")
	recs.Set("svc:db", db)
	recs.Set("version", map[string]*RRSet{"dns-version.cluster.local.": {TXT: []string{"1.1.0"}}})
	// A container's reverse name, as the dns package makes it (owner ptr:<ip>).
	ptr := map[string]*RRSet{}
	AddPTR(ptr, net.ParseIP("10.42.0.2"), "shop-web-1.drover.internal.")
	recs.Set("ptr:10.42.0.2", ptr)
	f := NewForwarder([]string{"192.0.2.53:53"}, 64, Observer{})
	f.exchange = func(m *mdns.Msg, _, _ string) (*mdns.Msg, error) {
		if len(m.Question[0].Name)%3 == 0 {
			return nil, errors.New("unreachable")
		}
		r := new(mdns.Msg)
		r.SetReply(m)
		r.Answer = append(r.Answer, &mdns.A{Hdr: mdns.RR_Header{Name: m.Question[0].Name, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: 30}, A: net.IPv4(192, 0, 2, 1)})
		r.SetEdns0(1232, false)
		return r, nil
	}
	return NewHandler(Config{
		Zones: []string{"drover.internal.", "rancher.internal.", "cluster.local."}, SearchZone: "drover.internal.", ClusterDomain: "cluster.local.",
		TTL: 5, Records: recs, Forward: f.Forward,
		Caller: func(ip string) (string, string) {
			if ip == "127.0.0.2" {
				return "shop", "ns"
			}
			return "", ""
		},
	})
}

// FuzzServeDNS feeds hostile packets through the handler: it must answer
// every parseable query, with the query's id, in a message that packs and
// fits the size the client can take over UDP, and never panic.
func FuzzServeDNS(f *testing.F) {
	h := fuzzHandler()
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"web.shop.drover.internal.", mdns.TypeA}, {"web.shop.drover.internal.", mdns.TypeAAAA}, {"ext.shop.rancher.internal.", mdns.TypeA},
		{"_pg._tcp.db.ns.svc.cluster.local.", mdns.TypeSRV}, {"1.0.0.10.in-addr.arpa.", mdns.TypePTR}, {"web.", mdns.TypeA},
		{"dns-version.cluster.local.", mdns.TypeTXT}, {"x.cluster.local.", mdns.TypeANY}, {"example.org.", mdns.TypeA},
		// Reverse names: a container's, in any case, and malformed ones.
		{"2.0.42.10.in-addr.arpa.", mdns.TypePTR}, {"2.0.42.10.IN-ADDR.ARPA.", mdns.TypePTR}, {"2.0.42.10.in-addr.arpa.", mdns.TypeA},
		{"0.42.10.in-addr.arpa.", mdns.TypePTR}, {"1.2.0.42.10.in-addr.arpa.", mdns.TypePTR}, {"300.0.42.10.in-addr.arpa.", mdns.TypePTR},
		{"in-addr.arpa.", mdns.TypePTR}, {"x.y.in-addr.arpa.", mdns.TypePTR}, {"-2.0.42.10.in-addr.arpa.", mdns.TypePTR}, {"f.ip6.arpa.", mdns.TypePTR}} {
		m := new(mdns.Msg)
		m.SetQuestion(q.name, q.qtype)
		m.SetEdns0(1232, true)
		b, _ := m.Pack()
		f.Add(b)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0})
	from := []net.Addr{&net.UDPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 5353}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 5353}}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(mdns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		w := &fakeWriter{remote: from[len(b)%2]}
		h.ServeDNS(w, m)
		if w.msg == nil {
			t.Fatal("no answer")
		}
		if w.msg.Id != m.Id {
			t.Fatalf("answer id %d, query id %d", w.msg.Id, m.Id)
		}
		out, err := w.msg.Pack()
		if err != nil {
			t.Fatalf("answer does not pack: %v", err)
		}
		if _, udp := w.remote.(*net.UDPAddr); udp {
			limit := mdns.MinMsgSize
			if o := m.IsEdns0(); o != nil {
				limit = max(int(o.UDPSize()), mdns.MinMsgSize)
			}
			if len(out) > limit {
				t.Fatalf("UDP answer of %d bytes; the client takes %d", len(out), limit)
			}
		}
	})
}
