package resolver

import (
	"net"
	"sort"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"
)

// RRSet is what one name answers: addresses, an alias, SRV targets, PTR
// names, TXT strings.
type RRSet struct {
	A     []net.IP
	CNAME string
	SRV   []*mdns.SRV
	PTR   []string
	TXT   []string
}

// Records maps names to answers. Each owner (a service or a container)
// contributes a set of names; a change replaces one owner's names, so the
// work is proportional to that owner, not to the whole record set.
type Records struct {
	mu     sync.RWMutex
	names  map[string]*RRSet
	owner  map[string]string   // name -> owner
	owned  map[string][]string // owner -> names
	exists map[string]int      // every ancestor of a name (for NODATA vs NXDOMAIN), with counts
}

// NewRecords returns an empty record set.
func NewRecords() *Records {
	return &Records{names: map[string]*RRSet{}, owner: map[string]string{}, owned: map[string][]string{}, exists: map[string]int{}}
}

// Set replaces everything owner contributed with recs (names lowercase,
// fully qualified); nil removes the owner.
func (r *Records) Set(owner string, recs map[string]*RRSet) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, n := range r.owned[owner] {
		if r.owner[n] == owner {
			delete(r.names, n)
			delete(r.owner, n)
		}
		r.ancestors(n, -1)
	}
	delete(r.owned, owner)
	if len(recs) == 0 {
		return
	}
	names := make([]string, 0, len(recs))
	for n, rs := range recs {
		r.names[n], r.owner[n] = rs, owner
		names = append(names, n)
		r.ancestors(n, 1)
	}
	r.owned[owner] = names
}

// ancestors counts n and its parent names as existing (empty non-terminals
// answer NODATA, not NXDOMAIN).
func (r *Records) ancestors(n string, delta int) {
	for {
		r.exists[n] += delta
		if r.exists[n] <= 0 {
			delete(r.exists, n)
		}
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			return
		}
		n = n[i+1:]
	}
}

// Get returns a name's answers (nil for an empty non-terminal) and whether
// the name exists at all.
func (r *Records) Get(name string) (*RRSet, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rs, ok := r.names[name]
	if !ok {
		return nil, r.exists[name] > 0
	}
	return rs, true
}

// Len is the number of names held.
func (r *Records) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.names)
}

// AddA adds an address to a name's set in recs.
func AddA(recs map[string]*RRSet, name string, ip net.IP) {
	if ip == nil {
		return
	}
	rs := recs[name]
	if rs == nil {
		rs = &RRSet{}
		recs[name] = rs
	}
	for _, have := range rs.A {
		if have.Equal(ip) {
			return
		}
	}
	rs.A = append(rs.A, ip)
}

// AddPTR adds the reverse name of ip pointing at target.
func AddPTR(recs map[string]*RRSet, ip net.IP, target string) {
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	rs := recs[rev]
	if rs == nil {
		rs = &RRSet{}
		recs[rev] = rs
	}
	rs.PTR = append(rs.PTR, target)
}

// SortIPs orders every set's addresses, so answers do not depend on the
// order changes arrived in.
func SortIPs(recs map[string]*RRSet) {
	for _, rs := range recs {
		sort.Slice(rs.A, func(i, j int) bool { return rs.A[i].String() < rs.A[j].String() })
	}
}
