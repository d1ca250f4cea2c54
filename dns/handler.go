package dns

import (
	"net"
	"strings"
	"sync"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
)

var _ mdns.Handler = (*Server)(nil)

// ServeDNS answers one query.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	start := time.Now()
	resp, source := s.answer(w.RemoteAddr(), req)
	proto := "udp"
	if _, ok := w.RemoteAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	qtype := "other"
	if len(req.Question) == 1 {
		qtype = mdns.TypeToString[req.Question[0].Qtype]
	}
	s.m.requests.WithLabelValues(proto, qtype).Inc()
	// Fit the answer to what the client can take: EDNS0's size, else 512
	// bytes over UDP (with TC set, so it retries over TCP).
	if proto == "udp" {
		size := mdns.MinMsgSize
		if o := req.IsEdns0(); o != nil {
			size = max(int(o.UDPSize()), mdns.MinMsgSize)
		}
		resp.Truncate(size)
	}
	s.m.responses.WithLabelValues(mdns.RcodeToString[resp.Rcode]).Inc()
	s.m.duration.WithLabelValues(source).Observe(time.Since(start).Seconds())
	w.WriteMsg(resp)
}

// answer builds the response and says where it came from.
func (s *Server) answer(from net.Addr, req *mdns.Msg) (*mdns.Msg, string) {
	resp := new(mdns.Msg)
	resp.SetReply(req)
	resp.Authoritative = false
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
	if zone := s.zoneOf(name); zone != "" {
		s.local(resp, q, name, zone)
		return resp, "local"
	}
	if strings.HasSuffix(name, ".in-addr.arpa.") || strings.HasSuffix(name, ".ip6.arpa.") {
		if rs, ok := s.recs.get(name); ok && rs != nil && len(rs.PTR) > 0 {
			s.local(resp, q, name, "")
			return resp, "local"
		}
	}
	// Short names resolve from the caller's own stack or namespace.
	if target, zone := s.search(from, name); target != "" {
		s.local(resp, q, target, zone)
		return resp, "search"
	}
	return s.forward(req), "forward"
}

func (s *Server) zoneOf(name string) string {
	for _, z := range s.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return z
		}
	}
	return ""
}

// local answers from the record set. Answers carry the name asked (q.Name),
// which differs from name for a searched short name.
func (s *Server) local(resp *mdns.Msg, q mdns.Question, name, zone string) {
	rs, exists := s.recs.get(name)
	if !exists {
		resp.Rcode = mdns.RcodeNameError
		if soa := s.soaFor[zone]; soa != nil {
			resp.Ns = []mdns.RR{soa}
		}
		return
	}
	resp.Authoritative = true
	ttl := s.opts.TTL
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
				if t, ok := s.recs.get(srv.Target); ok && t != nil {
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
		if soa := s.soaFor[zone]; soa != nil {
			resp.Ns = []mdns.RR{soa} // NODATA
		}
	}
}

// search maps a short name to a full one from the caller's point of view:
// "web" and "web.shop" from a container of stack shop mean
// web.shop.drover.internal; "svc" and "svc.ns" from a pod of namespace ns
// mean svc.ns.svc.<cluster domain>.
func (s *Server) search(from net.Addr, name string) (string, string) {
	labels := strings.Count(name, ".")
	if labels < 1 || labels > 3 {
		return "", ""
	}
	ip := addrIP(from)
	s.mu.RLock()
	c := s.ctrs[s.byIP[ip]]
	var stack, ns string
	if c != nil {
		if st := s.stacks[c.Spec.StackID]; st != nil {
			stack = st.Name
			ns = st.Spec.Namespace
			if c.Spec.Kind == api.ContainerKindPod && ns == "" {
				ns = st.Name
			}
		}
	}
	s.mu.RUnlock()
	var candidates [][2]string
	if stack != "" {
		candidates = append(candidates, [2]string{name + strings.ToLower(stack) + "." + engineZones[0], engineZones[0]})
	}
	candidates = append(candidates, [2]string{name + engineZones[0], engineZones[0]})
	if ns != "" {
		candidates = append(candidates, [2]string{name + ns + ".svc." + s.opts.ClusterDomain, s.opts.ClusterDomain})
	}
	candidates = append(candidates, [2]string{name + "svc." + s.opts.ClusterDomain, s.opts.ClusterDomain})
	for _, cand := range candidates {
		if rs, ok := s.recs.get(cand[0]); ok && rs != nil {
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
	}
	host, _, _ := net.SplitHostPort(a.String())
	return host
}

// forward asks the upstreams in turn (TCP when UDP comes back truncated)
// and caches what they answer. SERVFAIL only when every one failed, and
// never cached.
func (s *Server) forward(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	key := strings.ToLower(q.Name) + "/" + mdns.TypeToString[q.Qtype]
	if cached := s.cache.get(key); cached != nil {
		s.m.hits.Inc()
		cached.Id = req.Id
		return cached
	}
	s.m.misses.Inc()
	out := new(mdns.Msg)
	out.SetQuestion(q.Name, q.Qtype)
	out.RecursionDesired = true
	out.SetEdns0(4096, false)
	for _, up := range s.opts.Upstreams {
		c := &mdns.Client{Net: "udp", Timeout: 2 * time.Second}
		r, _, err := c.Exchange(out, up)
		if err == nil && r.Truncated {
			c.Net = "tcp"
			r, _, err = c.Exchange(out, up)
		}
		if err != nil || r.Rcode == mdns.RcodeServerFailure || r.Rcode == mdns.RcodeRefused {
			s.m.forwards.WithLabelValues(up, "error").Inc()
			continue
		}
		s.m.forwards.WithLabelValues(up, "ok").Inc()
		r.Id = req.Id
		r.Compress = true
		s.cache.put(key, r)
		return r.Copy()
	}
	fail := new(mdns.Msg)
	fail.SetRcode(req, mdns.RcodeServerFailure)
	return fail
}

// answerCache keeps upstream answers for their TTL (at most 5 minutes),
// bounded in entries.
type answerCache struct {
	mu      sync.Mutex
	max     int
	entries map[string]cacheEntry
}

type cacheEntry struct {
	msg     *mdns.Msg
	expires time.Time
}

func newAnswerCache(max int) *answerCache {
	return &answerCache{max: max, entries: map[string]cacheEntry{}}
}

func (c *answerCache) get(key string) *mdns.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return nil
	}
	left := time.Until(e.expires)
	if left <= 0 {
		delete(c.entries, key)
		return nil
	}
	m := e.msg.Copy()
	for _, rr := range append(append(m.Answer, m.Ns...), m.Extra...) {
		if rr.Header().Rrtype != mdns.TypeOPT {
			rr.Header().Ttl = uint32(left.Seconds())
		}
	}
	return m
}

func (c *answerCache) put(key string, m *mdns.Msg) {
	ttl := uint32(300)
	for _, rr := range append(append([]mdns.RR{}, m.Answer...), m.Ns...) {
		ttl = min(ttl, rr.Header().Ttl)
	}
	if ttl == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k := range c.entries { // evict one at random
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = cacheEntry{msg: m.Copy(), expires: time.Now().Add(time.Duration(ttl) * time.Second)}
}
