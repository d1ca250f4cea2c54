package overlay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// IPAM hands out the addresses of one host's subnet to its Docker
// containers and its pods alike, so the two never overlap. It keeps one file
// per address in use under <dir>/<subnet>/, named by the address and
// holding the owner ("<container id> <interface>"): created with O_EXCL, so
// two allocators racing for one address cannot both get it, and kept on
// disk, so a restarted agent or kubelet never hands out an address still in
// use. The first address is the gateway; the network and broadcast
// addresses are never given.
type IPAM struct {
	dir    string
	subnet *net.IPNet
}

// DefaultIPAMDir is where the agent and the CNI plugin keep allocations.
const DefaultIPAMDir = "/var/lib/drover/ipam"

// ErrSubnetFull says every address of the subnet is in use.
var ErrSubnetFull = errors.New("no free address")

// NewIPAM returns the allocator of subnet, keeping its files under dir.
func NewIPAM(dir string, subnet *net.IPNet) (*IPAM, error) {
	if subnet.IP.To4() == nil {
		return nil, fmt.Errorf("ipam: %s is not IPv4", subnet)
	}
	d := filepath.Join(dir, strings.ReplaceAll(subnet.String(), "/", "_"))
	if err := os.MkdirAll(d, 0o700); err != nil {
		return nil, fmt.Errorf("ipam: %w", err)
	}
	return &IPAM{dir: d, subnet: subnet}, nil
}

func owner(id, ifname string) string { return id + " " + ifname }

// Allocate returns the address of (id, ifname), reserving the lowest free
// one if it has none.
func (a *IPAM) Allocate(id, ifname string) (net.IP, error) {
	if ip, ok, err := a.Lookup(id, ifname); err != nil || ok {
		return ip, err
	}
	base := binary.BigEndian.Uint32(a.subnet.IP.To4())
	ones, bits := a.subnet.Mask.Size()
	size := uint32(1) << (bits - ones)
	for off := uint32(2); off < size-1; off++ {
		ip := make(net.IP, 4)
		binary.BigEndian.PutUint32(ip, base+off)
		f, err := os.OpenFile(filepath.Join(a.dir, ip.String()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("ipam: %w", err)
		}
		_, werr := f.WriteString(owner(id, ifname))
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			os.Remove(f.Name())
			return nil, fmt.Errorf("ipam: %w", werr)
		}
		return ip, nil
	}
	return nil, fmt.Errorf("ipam: %s: %w (%d addresses)", a.subnet, ErrSubnetFull, size-3)
}

// Lookup returns the address (id, ifname) holds.
func (a *IPAM) Lookup(id, ifname string) (net.IP, bool, error) {
	var found net.IP
	err := a.each(func(ip net.IP, o string) error {
		if o == owner(id, ifname) {
			found = ip
		}
		return nil
	})
	return found, found != nil, err
}

// Release frees what (id, ifname) holds; releasing nothing is no error.
func (a *IPAM) Release(id, ifname string) error {
	return a.each(func(ip net.IP, o string) error {
		if o == owner(id, ifname) {
			if err := os.Remove(filepath.Join(a.dir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		return nil
	})
}

// Keep frees every address whose owner keep does not accept, and returns
// how many it freed (CNI GC, an agent that lost containers).
func (a *IPAM) Keep(keep func(id, ifname string) bool) (int, error) {
	n := 0
	err := a.each(func(ip net.IP, o string) error {
		id, ifname, _ := strings.Cut(o, " ")
		if keep(id, ifname) {
			return nil
		}
		if err := os.Remove(filepath.Join(a.dir, ip.String())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		n++
		return nil
	})
	return n, err
}

// InUse lists the addresses held and their owners.
func (a *IPAM) InUse() (map[string]string, error) {
	out := map[string]string{}
	err := a.each(func(ip net.IP, o string) error { out[ip.String()] = o; return nil })
	return out, err
}

func (a *IPAM) each(f func(ip net.IP, owner string) error) error {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return fmt.Errorf("ipam: %w", err)
	}
	for _, e := range entries {
		ip := net.ParseIP(e.Name()).To4()
		if ip == nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(a.dir, e.Name()))
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) {
			continue // released meanwhile
		} else if err != nil {
			return fmt.Errorf("ipam: %w", err)
		}
		if err := f(ip, strings.TrimSpace(string(b))); err != nil {
			return err
		}
	}
	return nil
}
