package metadata

import (
	"net/netip"

	"github.com/drover/drover/api"
)

// Hosts and networks: besides their own views, containers show something
// of them (a host network container's hostname, every container's
// network_uuid), so their changes render those containers again.

func (s *state) setHost(h *api.Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := renderHost(h)
	s.host[h.ID] = &node{name: h.Name, id: h.ID, json: mustJSON(r)}
	lists := []string{"hosts"}
	if s.hostnames[h.ID] != r.Hostname {
		s.hostnames[h.ID] = r.Hostname
		lists = append(lists, s.rerenderHostNetwork(h.ID)...)
	}
	s.bump(h.Revision, lists...)
}

func (s *state) deleteHost(h *api.Host) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.host, h.ID)
	delete(s.hostnames, h.ID)
	s.bump(0, append([]string{"hosts"}, s.rerenderHostNetwork(h.ID)...)...)
}

// rerenderHostNetwork re-renders the containers on the host's network of
// a host whose hostname changed, and says which lists that changes.
// Called locked.
func (s *state) rerenderHostNetwork(hostID string) []string {
	var lists []string
	for _, c := range s.ctrs.ByIndex(byHost, hostID) {
		if !hostNetwork(c) {
			continue
		}
		s.renderContainer(c)
		s.dropService(c.Spec.ServiceID)
		delete(s.stackViews, c.Spec.StackID)
		lists = []string{"containers", "services", "stacks"}
	}
	return lists
}

func (s *state) setNetwork(n *api.Network) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.net[n.ID] = &node{name: n.Name, id: n.ID, json: mustJSON(&Network{Name: n.Name, UUID: n.ID, CIDR: n.Spec.CIDR, MTU: n.Spec.MTU})}
	lists := []string{"networks"}
	p, err := netip.ParsePrefix(n.Spec.CIDR)
	if was, had := s.cidrs[n.ID]; err == nil && (!had || was != p.Masked()) {
		s.cidrs[n.ID] = p.Masked()
		lists = append(lists, s.rerenderAllContainers()...)
	} else if err != nil && had {
		delete(s.cidrs, n.ID)
		lists = append(lists, s.rerenderAllContainers()...)
	}
	s.bump(n.Revision, lists...)
}

func (s *state) deleteNetwork(n *api.Network) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.net, n.ID)
	lists := []string{"networks"}
	if _, had := s.cidrs[n.ID]; had {
		delete(s.cidrs, n.ID)
		lists = append(lists, s.rerenderAllContainers()...)
	}
	s.bump(0, lists...)
}

// rerenderAllContainers follows a change of the networks' address plan,
// which any container's network_uuid may depend on. Networks are made
// once per installation and almost never change, and the metadata server
// starts its containers after its networks, so this is not the path of
// ordinary changes. Called locked.
func (s *state) rerenderAllContainers() []string {
	if len(s.ctr) == 0 {
		return nil
	}
	for id := range s.ctr {
		if c, ok := s.ctrs.Get(id); ok {
			s.renderContainer(c)
		}
	}
	clear(s.svcViews)
	clear(s.stackViews)
	return []string{"containers", "services", "stacks"}
}

// networkOf is the id of the network whose CIDR holds ip: the most
// specific one, then the lowest id, so the answer never depends on map
// order. Called locked.
func (s *state) networkOf(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ""
	}
	best, bits := "", -1
	for id, p := range s.cidrs {
		if p.Contains(a.Unmap()) && (p.Bits() > bits || (p.Bits() == bits && id < best)) {
			best, bits = id, p.Bits()
		}
	}
	return best
}
