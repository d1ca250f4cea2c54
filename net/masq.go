package overlay

import (
	"bytes"
	"fmt"
	"net"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Masquerade: traffic from the overlay to anywhere outside it leaves with
// the host's address; traffic between overlay subnets keeps its source (it
// is routed over VXLAN untouched). One nftables table of drover's own, so
// nothing else's rules are read or changed:
//
//	table ip drover { chain postrouting { type nat hook postrouting priority srcnat;
//	    ip saddr <network> ip daddr != <network> masquerade } }

const masqTable = "drover"

func (p *Programmer) nft() (*nftables.Conn, error) {
	if p.ns.IsOpen() {
		return nftables.New(nftables.WithNetNSFd(int(p.ns)))
	}
	return nftables.New()
}

// EnsureMasquerade installs the rule, or leaves it if it is already there
// as wanted. It returns the number of changes.
func (p *Programmer) EnsureMasquerade() (int, error) {
	c, err := p.nft()
	if err != nil {
		return 0, fmt.Errorf("overlay: nftables: %w", err)
	}
	tag := []byte("drover masquerade " + p.cfg.Network.String())
	table := &nftables.Table{Name: masqTable, Family: nftables.TableFamilyIPv4}
	chain := &nftables.Chain{Name: "postrouting", Table: table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}
	if rules, err := c.GetRules(table, chain); err == nil && len(rules) == 1 && bytes.Equal(rules[0].UserData, tag) {
		return 0, nil // as wanted: touch nothing (conntrack entries stay)
	}
	// Made anew, in one batch: the table replaces any older shape of ours.
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return 0, fmt.Errorf("overlay: listing nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == masqTable {
			c.DelTable(table)
		}
	}
	c.AddTable(table)
	c.AddChain(chain)
	network := p.cfg.Network.IP.To4()
	mask := net.IP(p.cfg.Network.Mask).To4()
	c.AddRule(&nftables.Rule{Table: table, Chain: chain, UserData: tag, Exprs: []expr.Any{
		// ip saddr & mask == network
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: network},
		// ip daddr & mask != network
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: network},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("overlay: installing masquerade: %w", err)
	}
	return 1, nil
}

// RemoveMasquerade deletes drover's table, if there is one.
func (p *Programmer) RemoveMasquerade() error {
	c, err := p.nft()
	if err != nil {
		return err
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return err
	}
	for _, t := range tables {
		if t.Name == masqTable {
			c.DelTable(&nftables.Table{Name: masqTable, Family: nftables.TableFamilyIPv4})
			return c.Flush()
		}
	}
	return nil
}
