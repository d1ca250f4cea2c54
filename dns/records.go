package dns

import (
	"net"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
	"github.com/drover/drover/dns/resolver"
)

type rrsets = map[string]*resolver.RRSet

// serving says whether a container's address belongs in its service's
// answer: running, and healthy (or without a health check).
func serving(c *api.Container) bool {
	return c.Status.State == api.ContainerRunning && c.Status.PrimaryIP != "" && (c.Status.Health == "" || c.Status.Health == "healthy")
}

// engineZones are the engine's own zones; Rancher's spelling is kept so its
// stacks' DNS names work unchanged.
var engineZones = []string{"drover.internal.", "rancher.internal."}

// containerRecords: <container>.<zone> for a serving container.
func containerRecords(c *api.Container) rrsets {
	if !serving(c) || c.Spec.Kind == api.ContainerKindPod {
		return nil
	}
	recs := rrsets{}
	for _, z := range engineZones {
		resolver.AddA(recs, strings.ToLower(c.Name)+"."+z, net.ParseIP(c.Status.PrimaryIP))
	}
	return recs
}

// reverseRecords: the reverse name of ip (in-addr.arpa or ip6.arpa) points
// at the forward name of the container that answers at it,
// <container>.drover.internal, so a reverse lookup and the forward lookup
// of its answer agree. Several containers can hold one address (a sidekick
// in its primary's network namespace has the primary's); the one whose
// namespace it is (not network_mode container:...) is the answer, then
// the oldest, then by name, so the answer never depends on the order
// changes came in. Addresses of no serving container get no record and
// are forwarded, like any other reverse name.
func reverseRecords(ip string, holders []*api.Container) rrsets {
	addr := net.ParseIP(ip)
	if addr == nil {
		return nil
	}
	var best *api.Container
	for _, c := range holders {
		if !serving(c) || c.Spec.Kind == api.ContainerKindPod || c.Status.PrimaryIP != ip {
			continue
		}
		if best == nil || ptrBefore(c, best) {
			best = c
		}
	}
	if best == nil {
		return nil
	}
	recs := rrsets{}
	resolver.AddPTR(recs, addr, strings.ToLower(best.Name)+"."+engineZones[0])
	return recs
}

// ptrBefore orders the containers sharing an address for reverseRecords.
func ptrBefore(a, b *api.Container) bool {
	if ao, bo := ownsNetwork(a), ownsNetwork(b); ao != bo {
		return ao
	}
	if !a.CreatedAt.Equal(b.CreatedAt) {
		return a.CreatedAt.Before(b.CreatedAt)
	}
	if a.Name != b.Name {
		return a.Name < b.Name
	}
	return a.ID < b.ID
}

func ownsNetwork(c *api.Container) bool {
	return c.Spec.LaunchConfig == nil || !strings.HasPrefix(c.Spec.LaunchConfig.NetworkMode, "container:")
}

// engineServiceRecords: <service>.<stack>.<zone> -> VIP, or the serving
// containers; sidekicks at <sidekick>.<service>.<stack>.<zone>; external
// services' IPs or hostname; alias services' targets.
func (s *Server) engineServiceRecords(v *api.Service) rrsets {
	st, ok := s.stacks.Get(v.Spec.StackID)
	if !ok {
		return nil
	}
	var members []*api.Container
	var aliased [][]net.IP
	switch v.Spec.Kind {
	case api.ServiceExternal:
	case api.ServiceAlias:
		siblings := s.services.ByIndex(byStack, v.Spec.StackID) // alias services are few and change rarely
		for _, target := range v.Spec.Links {
			t, _, _ := strings.Cut(target, ":")
			for _, other := range siblings {
				if other.Name == t && other.ID != v.ID {
					aliased = append(aliased, s.serviceIPs(other))
				}
			}
		}
	default:
		if v.Spec.VIP == "" {
			members = s.ctrs.ByIndex(byService, v.ID)
		}
	}
	recs := rrsets{}
	base := strings.ToLower(v.Name + "." + st.Name)
	for _, z := range engineZones {
		name := base + "." + z
		switch v.Spec.Kind {
		case api.ServiceExternal:
			if v.Spec.Hostname != "" {
				recs[name] = &resolver.RRSet{CNAME: mdns.Fqdn(v.Spec.Hostname)}
				continue
			}
			for _, ip := range v.Spec.ExternalIPs {
				resolver.AddA(recs, name, net.ParseIP(ip))
			}
		case api.ServiceAlias:
			for _, ips := range aliased {
				for _, ip := range ips {
					resolver.AddA(recs, name, ip)
				}
			}
		default:
			if v.Spec.VIP != "" {
				resolver.AddA(recs, name, net.ParseIP(v.Spec.VIP))
				continue
			}
			for _, c := range members {
				if !serving(c) {
					continue
				}
				n := name
				if c.Spec.LaunchConfigName != "" {
					n = strings.ToLower(c.Spec.LaunchConfigName) + "." + name
				}
				resolver.AddA(recs, n, net.ParseIP(c.Status.PrimaryIP))
			}
			if recs[name] == nil {
				recs[name] = &resolver.RRSet{} // exists, no address: NODATA
			}
		}
	}
	resolver.SortIPs(recs)
	return recs
}

// serviceIPs are a service's answer addresses.
func (s *Server) serviceIPs(v *api.Service) []net.IP {
	if v.Spec.VIP != "" {
		return []net.IP{net.ParseIP(v.Spec.VIP)}
	}
	var out []net.IP
	if v.Spec.Kind == api.ServiceExternal {
		for _, ip := range v.Spec.ExternalIPs {
			out = append(out, net.ParseIP(ip))
		}
		return out
	}
	for _, c := range s.ctrs.ByIndex(byService, v.ID) {
		if serving(c) && c.Spec.LaunchConfigName == "" {
			out = append(out, net.ParseIP(c.Status.PrimaryIP))
		}
	}
	return out
}

// kubernetesRecords builds the Kubernetes DNS specification 1.1.0 records
// of one service synced by kubernetes-agent.
func kubernetesRecords(s *api.Service, clusterDomain string) rrsets {
	ns, name := s.Labels["io.drover.kubernetes.namespace"], s.Labels["io.drover.kubernetes.name"]
	if ns == "" || name == "" {
		return nil
	}
	recs := rrsets{}
	fqdn := name + "." + ns + ".svc." + clusterDomain
	switch {
	case s.Spec.Hostname != "": // ExternalName
		recs[fqdn] = &resolver.RRSet{CNAME: mdns.Fqdn(s.Spec.Hostname)}
		return recs
	case s.Spec.VIP != "": // ClusterIP
		ip := net.ParseIP(s.Spec.VIP)
		resolver.AddA(recs, fqdn, ip)
		resolver.AddPTR(recs, ip, fqdn)
	}
	headless := s.Spec.VIP == ""
	dashed := strings.NewReplacer(".", "-", ":", "-")
	for _, ep := range s.Status.Endpoints {
		ip := net.ParseIP(ep.IP)
		if ip == nil {
			continue
		}
		host := ep.Hostname
		if host == "" {
			host = dashed.Replace(ep.IP)
		}
		epName := host + "." + fqdn
		if headless {
			resolver.AddA(recs, fqdn, ip)
			resolver.AddA(recs, epName, ip)
			resolver.AddPTR(recs, ip, epName)
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
		rs := &resolver.RRSet{}
		if !headless {
			rs.SRV = append(rs.SRV, &mdns.SRV{Priority: 0, Weight: 100, Port: uint16(p.Port), Target: fqdn})
		} else {
			for _, ep := range s.Status.Endpoints {
				host := ep.Hostname
				if host == "" {
					host = dashed.Replace(ep.IP)
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
	resolver.SortIPs(recs)
	return recs
}
