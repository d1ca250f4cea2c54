package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// Host subnets.
//
// Every host gets a subnet of the managed network (ManagedNetwork) in the
// transaction that creates it: the allocation is a key
//
//	a/subnets/<subnet, "/" as "_">  -> host id
//
// put only if absent (so no subnet goes to two hosts), beside the host
// whose status.subnet names it, and deleted with the host (Purge). Every
// allocation also rewrites a/subnets, whose revision a change of the
// network's cidr compares, so the cidr of a network in use cannot change
// under a concurrent registration. A host that exists keeps its subnet; a
// full network leaves the new host without one and says so in its
// status.message.

// ManagedNetwork is the name of the network hosts get their subnets from.
const ManagedNetwork = "managed"

const allocMarker = "a/subnets"

func (s *Store) allocKey(subnet string) string {
	return s.Prefix + allocMarker + "/" + strings.ReplaceAll(subnet, "/", "_")
}

// managedNetwork reads the managed network, or nil if there is none.
func (s *Store) managedNetwork(ctx context.Context) (*api.Network, int64, error) {
	resp, err := s.Cli.Get(ctx, s.NameKey("networks", "-", ManagedNetwork))
	if err != nil || len(resp.Kvs) == 0 {
		return nil, 0, err
	}
	raw, rev, err := s.Get(ctx, "networks", string(resp.Kvs[0].Value))
	if err == ErrNotFound {
		return nil, 0, nil
	} else if err != nil {
		return nil, 0, err
	}
	var n api.Network
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, 0, err
	}
	return &n, rev, nil
}

// subnetsOf lists the subnets of a network in order.
func subnetsOf(n *api.Network) ([]string, error) {
	_, ipnet, err := net.ParseCIDR(n.Spec.CIDR)
	if err != nil || ipnet.IP.To4() == nil {
		return nil, fmt.Errorf("network %s: cidr %q is not IPv4", n.Name, n.Spec.CIDR)
	}
	ones, _ := ipnet.Mask.Size()
	size := n.Spec.HostSubnetSize
	if size <= ones || size > 30 {
		return nil, fmt.Errorf("network %s: hostSubnetSize %d does not fit /%d", n.Name, size, ones)
	}
	count := 1 << (size - ones)
	base := binary.BigEndian.Uint32(ipnet.IP.To4())
	out := make([]string, count)
	for i := range out {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+uint32(i)<<(32-size))
		out[i] = fmt.Sprintf("%s/%d", ip, size)
	}
	return out, nil
}

// allocateSubnet picks a free subnet of the managed network for a new host
// h, sets h.Status.Subnet, and returns what the host's transaction must
// compare and write. With no managed network it does nothing; with a full
// one it sets h.Status.Message and returns nothing to write. skip lists
// subnets a concurrent registration took meanwhile.
func (s *Store) allocateSubnet(ctx context.Context, h *api.Host, skip map[string]bool) ([]clientv3.Cmp, []clientv3.Op, *api.Error) {
	h.Status.Subnet = ""
	n, netRev, err := s.managedNetwork(ctx)
	if err != nil {
		return nil, nil, Unavailable(err)
	}
	if n == nil {
		return nil, nil, nil
	}
	all, err := subnetsOf(n)
	if err != nil {
		return nil, nil, InternalError(err)
	}
	taken := map[string]bool{}
	prefix := s.Prefix + allocMarker + "/"
	if _, err := s.List(ctx, prefix, true, func(key string, _ []byte, _ int64) error {
		taken[strings.ReplaceAll(strings.TrimPrefix(key, prefix), "_", "/")] = true
		return nil
	}); err != nil {
		return nil, nil, Unavailable(err)
	}
	for _, sn := range all {
		if taken[sn] || skip[sn] {
			continue
		}
		h.Status.Subnet = sn
		key := s.allocKey(sn)
		netKey := s.ObjectKey("networks", n.ID)
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0), clientv3.Compare(clientv3.ModRevision(netKey), "=", netRev)},
			[]clientv3.Op{clientv3.OpPut(key, h.ID), clientv3.OpPut(s.Prefix+allocMarker, sn)}, nil
	}
	h.Status.Message = fmt.Sprintf("network %s (%s) is full: all %d subnets of /%d are taken; this host has no overlay subnet until a host is deleted and it registers again",
		n.Name, n.Spec.CIDR, len(all), n.Spec.HostSubnetSize)
	return nil, nil, nil
}

// releaseSubnet returns the op that frees h's subnet, if h still holds it.
func (s *Store) releaseSubnet(h *api.Host) (clientv3.Op, bool) {
	if h.Status.Subnet == "" {
		return clientv3.Op{}, false
	}
	key := s.allocKey(h.Status.Subnet)
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", h.ID)}, []clientv3.Op{clientv3.OpDelete(key)}, nil), true
}

// CheckNetworkChange refuses a change of a network's cidr or subnet size
// while hosts hold subnets of it, and otherwise returns the comparison that
// keeps it so until the change is written.
func (s *Store) CheckNetworkChange(ctx context.Context, cur, next *api.Network) (*clientv3.Cmp, *api.Error) {
	if cur.Name != ManagedNetwork || cur.Spec.CIDR == next.Spec.CIDR && cur.Spec.HostSubnetSize == next.Spec.HostSubnetSize {
		return nil, nil
	}
	resp, err := s.Cli.Get(ctx, s.Prefix+allocMarker+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return nil, Unavailable(err)
	}
	if resp.Count > 0 {
		return nil, api.NewError(http.StatusConflict, api.CodeConflict, "spec.cidr",
			"network %s is in use: %d hosts hold subnets of %s, so its cidr and hostSubnetSize cannot change; delete the hosts first", cur.Name, resp.Count, cur.Spec.CIDR)
	}
	cmp := clientv3.Compare(clientv3.ModRevision(s.Prefix+allocMarker), "<", resp.Header.Revision+1)
	return &cmp, nil
}
