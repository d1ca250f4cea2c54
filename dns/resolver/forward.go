package resolver

import (
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	mdns "github.com/miekg/dns"
	"golang.org/x/sync/singleflight"
)

// Forwarder asks upstream servers in turn (over TCP when a UDP answer comes
// back truncated) and keeps their answers for their TTL in an LRU cache.
// Identical queries in flight share one upstream exchange.
type Forwarder struct {
	upstreams []string
	obs       Observer
	cache     *lru.Cache[string, cacheEntry]
	group     singleflight.Group
	// exchange sends one query; tests of the pure handler replace it.
	exchange func(m *mdns.Msg, network, upstream string) (*mdns.Msg, error)
	udp, tcp *mdns.Client
}

type cacheEntry struct {
	msg     *mdns.Msg
	expires time.Time
}

// MaxTTL bounds how long an upstream answer is kept.
const MaxTTL = 300

// NewForwarder forwards to upstreams (IP:PORT), caching at most entries
// answers.
func NewForwarder(upstreams []string, entries int, obs Observer) *Forwarder {
	c, _ := lru.New[string, cacheEntry](max(entries, 1))
	f := &Forwarder{upstreams: upstreams, obs: obs, cache: c,
		udp: &mdns.Client{Net: "udp", Timeout: 2 * time.Second}, tcp: &mdns.Client{Net: "tcp", Timeout: 2 * time.Second}}
	f.exchange = f.send
	return f
}

func (f *Forwarder) send(m *mdns.Msg, network, upstream string) (*mdns.Msg, error) {
	c := f.udp
	if network == "tcp" {
		c = f.tcp
	}
	r, _, err := c.Exchange(m, upstream)
	return r, err
}

// Len is the number of cached answers.
func (f *Forwarder) Len() int { return f.cache.Len() }

// cacheKey tells apart every question whose answer may differ: the name
// (case-folded), type and class, and the DO and CD bits, so a DNSSEC-OK
// query never gets an answer fetched without signatures, nor a
// checking-disabled one an answer a validating upstream filtered.
func cacheKey(q mdns.Question, do, cd bool) string {
	var b strings.Builder
	b.Grow(len(q.Name) + 16)
	b.WriteString(strings.ToLower(q.Name))
	b.WriteByte('/')
	b.WriteString(strconv.Itoa(int(q.Qtype)))
	b.WriteByte('/')
	b.WriteString(strconv.Itoa(int(q.Qclass)))
	if do {
		b.WriteString("/do")
	}
	if cd {
		b.WriteString("/cd")
	}
	return b.String()
}

// Forward answers req from the cache or the upstreams: SERVFAIL only when
// every upstream failed, and that is never cached.
func (f *Forwarder) Forward(req *mdns.Msg) *mdns.Msg {
	q := req.Question[0]
	do := false
	if o := req.IsEdns0(); o != nil {
		do = o.Do()
	}
	key := cacheKey(q, do, req.CheckingDisabled)
	if e, ok := f.get(key); ok {
		call(f.obs.CacheHit)
		return reply(req, e)
	}
	call(f.obs.CacheMiss)
	v, _, _ := f.group.Do(key, func() (any, error) {
		// A call that finished while this one waited to start has filled
		// the cache.
		if e, ok := f.get(key); ok {
			return e, nil
		}
		e, ok := f.ask(q, do, req.CheckingDisabled)
		if !ok {
			return nil, nil
		}
		if ttl, cacheable := ttlOf(e.msg); cacheable {
			e.expires = time.Now().Add(time.Duration(ttl) * time.Second)
			f.cache.Add(key, e)
		}
		return e, nil
	})
	e, _ := v.(cacheEntry)
	if e.msg == nil {
		fail := new(mdns.Msg)
		fail.SetRcode(req, mdns.RcodeServerFailure)
		return fail
	}
	return reply(req, e)
}

func call(f func()) {
	if f != nil {
		f()
	}
}

func (f *Forwarder) get(key string) (cacheEntry, bool) {
	e, ok := f.cache.Get(key)
	if !ok {
		return cacheEntry{}, false
	}
	if !time.Now().Before(e.expires) {
		f.cache.Remove(key)
		return cacheEntry{}, false
	}
	return e, true
}

// ask tries each upstream in turn.
func (f *Forwarder) ask(q mdns.Question, do, cd bool) (cacheEntry, bool) {
	out := new(mdns.Msg)
	out.SetQuestion(q.Name, q.Qtype)
	out.Question[0].Qclass = q.Qclass
	out.RecursionDesired = true
	out.CheckingDisabled = cd
	out.SetEdns0(4096, do)
	for _, up := range f.upstreams {
		r, err := f.exchange(out, "udp", up)
		if err == nil && r.Truncated {
			r, err = f.exchange(out, "tcp", up)
		}
		if err != nil || r == nil || r.Rcode == mdns.RcodeServerFailure || r.Rcode == mdns.RcodeRefused {
			if f.obs.Forwarded != nil {
				f.obs.Forwarded(up, "error")
			}
			continue
		}
		if f.obs.Forwarded != nil {
			f.obs.Forwarded(up, "ok")
		}
		// The OPT is per hop: each reply gets its own.
		extra := r.Extra[:0:0]
		for _, rr := range r.Extra {
			if rr.Header().Rrtype != mdns.TypeOPT {
				extra = append(extra, rr)
			}
		}
		r.Extra = extra
		return cacheEntry{msg: r}, true
	}
	return cacheEntry{}, false
}

// ttlOf is how long an answer may be kept: its smallest TTL, at most
// MaxTTL. A negative answer without an SOA has no TTL to go by and is not
// kept (RFC 2308).
func ttlOf(m *mdns.Msg) (uint32, bool) {
	ttl := uint32(MaxTTL)
	soa := false
	for _, rr := range append(append([]mdns.RR{}, m.Answer...), m.Ns...) {
		ttl = min(ttl, rr.Header().Ttl)
		if s, ok := rr.(*mdns.SOA); ok {
			soa = true
			ttl = min(ttl, s.Minttl)
		}
	}
	if len(m.Answer) == 0 && !soa {
		return 0, false
	}
	return ttl, ttl > 0
}

// reply is a private copy of a shared answer for req: its id, its question
// as asked, TTLs counted down.
func reply(req *mdns.Msg, e cacheEntry) *mdns.Msg {
	m := e.msg.Copy()
	m.Id = req.Id
	m.Question = append([]mdns.Question(nil), req.Question...)
	m.Compress = true
	if !e.expires.IsZero() {
		left := uint32(time.Until(e.expires).Seconds())
		for _, rrs := range [][]mdns.RR{m.Answer, m.Ns, m.Extra} {
			for _, rr := range rrs {
				rr.Header().Ttl = min(rr.Header().Ttl, left)
			}
		}
	}
	return m
}
