package dns

import (
	"net"
	"sort"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
)

// rrset is what one name answers: addresses, an alias, SRV targets, PTR
// names, TXT strings.
type rrset struct {
	A     []net.IP
	CNAME string
	SRV   []*mdns.SRV
	PTR   []string
	TXT   []string
}

// records maps names to answers. Each owner (a service or a container)
// contributes a set of names; a change replaces one owner's names, so the
// work is proportional to that owner, not to the whole record set.
type records struct {
	mu     sync.RWMutex
	names  map[string]*rrset
	owner  map[string]string   // name -> owner
	owned  map[string][]string // owner -> names
	exists map[string]int      // every ancestor of a name (for NODATA vs NXDOMAIN), with counts
}

func newRecords() *records {
	return &records{names: map[string]*rrset{}, owner: map[string]string{}, owned: map[string][]string{}, exists: map[string]int{}}
}

// set replaces everything owner contributed with recs.
func (r *records) set(owner string, recs map[string]*rrset) {
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
func (r *records) ancestors(n string, delta int) {
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

func (r *records) get(name string) (*rrset, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	rs, ok := r.names[name]
	if !ok {
		return nil, r.exists[name] > 0
	}
	return rs, true
}

// addA adds an address to a name's set in recs.
func addA(recs map[string]*rrset, name string, ip net.IP) {
	if ip == nil {
		return
	}
	rs := recs[name]
	if rs == nil {
		rs = &rrset{}
		recs[name] = rs
	}
	for _, have := range rs.A {
		if have.Equal(ip) {
			return
		}
	}
	rs.A = append(rs.A, ip)
}

func addPTR(recs map[string]*rrset, ip net.IP, target string) {
	rev, err := mdns.ReverseAddr(ip.String())
	if err != nil {
		return
	}
	rs := recs[rev]
	if rs == nil {
		rs = &rrset{}
		recs[rev] = rs
	}
	rs.PTR = append(rs.PTR, target)
}

func sortIPs(recs map[string]*rrset) {
	for _, rs := range recs {
		sort.Slice(rs.A, func(i, j int) bool { return rs.A[i].String() < rs.A[j].String() })
	}
}

// serving says whether a container's address belongs in its service's
// answer: running, and healthy (or without a health check).
func serving(c *api.Container) bool {
	return c.Status.State == api.ContainerRunning && c.Status.PrimaryIP != "" && (c.Status.Health == "" || c.Status.Health == "healthy")
}

// engineZones are the engine's own zones; Rancher's spelling is kept so its
// stacks' DNS names work unchanged.
var engineZones = []string{"drover.internal.", "rancher.internal."}

// kubernetesRecords builds the Kubernetes DNS specification 1.1.0 records
// of one service synced by kubernetes-agent.
func kubernetesRecords(s *api.Service, clusterDomain string) map[string]*rrset {
	ns, name := s.Labels["io.drover.kubernetes.namespace"], s.Labels["io.drover.kubernetes.name"]
	if ns == "" || name == "" {
		return nil
	}
	recs := map[string]*rrset{}
	fqdn := name + "." + ns + ".svc." + clusterDomain
	switch {
	case s.Spec.Hostname != "": // ExternalName
		recs[fqdn] = &rrset{CNAME: mdns.Fqdn(s.Spec.Hostname)}
		return recs
	case s.Spec.VIP != "": // ClusterIP
		ip := net.ParseIP(s.Spec.VIP)
		addA(recs, fqdn, ip)
		addPTR(recs, ip, fqdn)
	}
	headless := s.Spec.VIP == ""
	for _, ep := range s.Status.Endpoints {
		ip := net.ParseIP(ep.IP)
		if ip == nil {
			continue
		}
		host := ep.Hostname
		if host == "" {
			host = strings.NewReplacer(".", "-", ":", "-").Replace(ep.IP)
		}
		epName := host + "." + fqdn
		if headless {
			addA(recs, fqdn, ip)
			addA(recs, epName, ip)
			addPTR(recs, ip, epName)
		}
	}
	// SRV per named port: the service (ClusterIP) or each endpoint (headless).
	for _, p := range s.Spec.Ports {
		if p.Name == "" {
			continue
		}
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		srvName := "_" + p.Name + "._" + proto + "." + fqdn
		rs := &rrset{}
		if !headless {
			rs.SRV = append(rs.SRV, &mdns.SRV{Priority: 0, Weight: 100, Port: uint16(p.Port), Target: fqdn})
		} else {
			for _, ep := range s.Status.Endpoints {
				host := ep.Hostname
				if host == "" {
					host = strings.NewReplacer(".", "-", ":", "-").Replace(ep.IP)
				}
				port := p.Port
				for _, epp := range ep.Ports {
					if epp.Name == p.Name {
						port = epp.Port
					}
				}
				rs.SRV = append(rs.SRV, &mdns.SRV{Priority: 0, Weight: 100, Port: uint16(port), Target: host + "." + fqdn})
			}
		}
		if len(rs.SRV) > 0 {
			recs[srvName] = rs
		}
	}
	sortIPs(recs)
	return recs
}
