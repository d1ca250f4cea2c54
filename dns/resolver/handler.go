// Package resolver answers DNS queries: drover's own names from a record
// set, short names through the caller's search path, and everything else
// through a forwarder with singleflight and a bounded cache. It holds no
// engine state and no listeners, so it can be fuzzed and tested alone; the
// dns package feeds it.
package resolver

import (
	"net"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// Observer receives what the dns package turns into metrics. Nil funcs are
// skipped.
type Observer struct {
	Answered  func(proto, qtype, rcode, source string, took time.Duration)
	CacheHit  func()
	CacheMiss func()
	Forwarded func(upstream, result string)
}

// Config is what a Handler answers from.
type Config struct {
	// Zones are the zones answered locally (lowercase, fully qualified).
	Zones []string
	// SearchZone is the engine zone short names are completed in
	// (drover.internal.); ClusterDomain is Kubernetes' (cluster.local.).
	SearchZone    string
	ClusterDomain string
	TTL           uint32
	Records       *Records
	// Caller names the stack and Kubernetes namespace of the container at
	// ip ("" when it is none), for search paths.
	Caller func(ip string) (stack, namespace string)
	// Ready reports whether Records is complete. Until it is, names in
	// Zones answer SERVFAIL (a resolver retries or asks elsewhere) rather
	// than a NXDOMAIN it would cache.
	Ready func() bool
	// Forward answers the rest; nil answers SERVFAIL.
	Forward  func(req *mdns.Msg) *mdns.Msg
	Observer Observer
}

// Handler is an mdns.Handler over a Config.
type Handler struct {
	cfg    Config
	soaFor map[string]*mdns.SOA
}

var _ mdns.Handler = (*Handler)(nil)

// NewHandler builds a handler.
func NewHandler(cfg Config) *Handler {
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	if cfg.Caller == nil {
		cfg.Caller = func(string) (string, string) { return "", "" }
	}
	h := &Handler{cfg: cfg, soaFor: map[string]*mdns.SOA{}}
	for _, z := range cfg.Zones {
		h.soaFor[z] = &mdns.SOA{Hdr: mdns.RR_Header{Name: z, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: cfg.TTL},
			Ns: "ns.dns." + z, Mbox: "hostmaster." + z, Serial: uint32(time.Now().Unix()), Refresh: 7200, Retry: 1800, Expire: 86400, Minttl: cfg.TTL}
	}
	return h
}

// ServeDNS answers one query.
func (h *Handler) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	start := time.Now()
	resp, source := h.Answer(w.RemoteAddr(), req)
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	opt := req.IsEdns0()
	// RFC 6891: an OPT in the answer only when the query had one.
	if opt != nil && resp.IsEdns0() == nil {
		resp.SetEdns0(4096, opt.Do())
	}
	// Fit the answer to what the client can take: EDNS0's size, else 512
	// bytes over UDP (with TC set, so it retries over TCP).
	if proto == "udp" {
		size := mdns.MinMsgSize
		if opt != nil {
			size = max(int(opt.UDPSize()), mdns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	if o := h.cfg.Observer.Answered; o != nil {
		qtype := "other"
		if len(req.Question) == 1 {
			qtype = mdns.TypeToString[req.Question[0].Qtype]
		}
		o(proto, qtype, mdns.RcodeToString[resp.Rcode], source, time.Since(start))
	}
	w.WriteMsg(resp)
}

// Answer builds the response to req from a caller at from and says where
// it came from (local, search, forward, refused, unsynced).
func (h *Handler) Answer(from net.Addr, req *mdns.Msg) (*mdns.Msg, string) {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	// Recursion is offered when there is an upstream to forward to.
	resp.RecursionAvailable = h.cfg.Forward != nil
	if req.Opcode != mdns.OpcodeQuery {
		resp.SetRcode(req, mdns.RcodeNotImplemented)
		return resp, "refused"
	}
	if len(req.Question) != 1 {
		// Multi-question queries have no defined meaning; refuse cleanly.
		resp.SetRcode(req, mdns.RcodeFormatError)
		return resp, "refused"
	}
	q := req.Question[0]
	if q.Qtype == mdns.TypeANY || q.Qclass != mdns.ClassINET {
		resp.SetRcode(req, mdns.RcodeRefused)
		return resp, "refused"
	}
	name := strings.ToLower(mdns.Fqdn(q.Name))
	ready := h.cfg.Ready()
	if zone := h.zoneOf(name); zone != "" {
		if !ready {
			resp.SetRcode(req, mdns.RcodeServerFailure)
			return resp, "unsynced"
		}
		h.local(resp, q, name, zone)
		return resp, "local"
	}
	if ready {
		if strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa.") {
			if rs, ok := h.cfg.Records.Get(name); ok && rs != nil && len(rs.PTR) > 0 {
				h.local(resp, q, name, "")
				return resp, "local"
			}
		}
		// Short names resolve from the caller's own stack or namespace.
		if target, zone := h.search(from, name); target != "" {
			h.local(resp, q, target, zone)
			return resp, "search"
		}
	}
	if h.cfg.Forward == nil {
		resp.SetRcode(req, mdns.RcodeServerFailure)
		return resp, "forward"
	}
	return h.cfg.Forward(req), "forward"
}

func (h *Handler) zoneOf(name string) string {
	for _, z := range h.cfg.Zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

// local answers from the record set. Answers carry the name asked (q.Name),
// which differs from name for a searched short name.
func (h *Handler) local(resp *mdns.Msg, q mdns.Question, name, zone string) {
	rs, exists := h.cfg.Records.Get(name)
	// The server is the authority for its zones: a name it does not have
	// does not exist (NXDOMAIN with AA), as for one it has.
	resp.Authoritative = true
	if !exists {
		resp.Rcode = mdns.RcodeNameError
		if soa := h.soaFor[zone]; soa != nil {
			resp.Ns = []mdns.RR{soa}
		}
		return
	}
	ttl := h.cfg.TTL
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: ttl}
	}
	if rs != nil {
		switch {
		case rs.CNAME != "":
			resp.Answer = append(resp.Answer, &mdns.CNAME{Hdr: hdr(mdns.TypeCNAME), Target: rs.CNAME})
		case q.Qtype == mdns.TypeA:
			for _, ip := range rs.A {
				if v4 := ip.To4(); v4 != nil {
					resp.Answer = append(resp.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: v4})
				}
			}
		case q.Qtype == mdns.TypeAAAA:
			for _, ip := range rs.A {
				if ip.To4() == nil {
					resp.Answer = append(resp.Answer, &mdns.AAAA{Hdr: hdr(mdns.TypeAAAA), AAAA: ip})
				}
			}
		case q.Qtype == mdns.TypeSRV:
			for _, srv := range rs.SRV {
				rr := *srv
				rr.Hdr = hdr(mdns.TypeSRV)
				resp.Answer = append(resp.Answer, &rr)
				if t, ok := h.cfg.Records.Get(srv.Target); ok && t != nil {
					for _, ip := range t.A {
						if v4 := ip.To4(); v4 != nil {
							resp.Extra = append(resp.Extra, &mdns.A{Hdr: mdns.RR_Header{Name: srv.Target, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: ttl}, A: v4})
						}
					}
				}
			}
		case q.Qtype == mdns.TypePTR:
			for _, p := range rs.PTR {
				resp.Answer = append(resp.Answer, &mdns.PTR{Hdr: hdr(mdns.TypePTR), Ptr: p})
			}
		case q.Qtype == mdns.TypeTXT:
			if len(rs.TXT) > 0 {
				resp.Answer = append(resp.Answer, &mdns.TXT{Hdr: hdr(mdns.TypeTXT), Txt: rs.TXT})
			}
		}
	}
	if len(resp.Answer) == 0 {
		if soa := h.soaFor[zone]; soa != nil {
			resp.Ns = []mdns.RR{soa} // NODATA
		}
	}
}

// search maps a short name to a full one from the caller's point of view:
// "web" and "web.shop" from a container of stack shop mean
// web.shop.drover.internal; "svc" and "svc.ns" from a pod of namespace ns
// mean svc.ns.svc.<cluster domain>.
func (h *Handler) search(from net.Addr, name string) (string, string) {
	labels := strings.Count(name, ".")
	if labels < 1 || labels > 3 {
		return "", ""
	}
	stack, ns := h.cfg.Caller(addrIP(from))
	sz, cd := h.cfg.SearchZone, h.cfg.ClusterDomain
	var candidates [][2]string
	if stack != "" {
		candidates = append(candidates, [2]string{name + strings.ToLower(stack) + "." + sz, sz})
	}
	candidates = append(candidates, [2]string{name + sz, sz})
	if ns != "" {
		candidates = append(candidates, [2]string{name + ns + ".svc." + cd, cd})
	}
	candidates = append(candidates, [2]string{name + "svc." + cd, cd})
	for _, cand := range candidates {
		if rs, ok := h.cfg.Records.Get(cand[0]); ok && rs != nil {
			return cand[0], cand[1]
		}
	}
	return "", ""
}

func addrIP(a net.Addr) string {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.IP.String()
	case *net.TCPAddr:
		return v.IP.String()
	case nil:
		return ""
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host
}
