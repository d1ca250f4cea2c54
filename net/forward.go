package overlay

import (
	"fmt"
	"os/exec"

	"github.com/coreos/go-iptables/iptables"
)

// Forwarding through a host whose FORWARD policy is DROP (Docker sets it
// so): two rules at the top of the filter table's FORWARD chain accept
// traffic from and to the overlay, as flannel does. Without them a
// connection into a container from another host is dropped by Docker's
// rules. They go through the iptables binary (github.com/coreos/go-iptables),
// because that is where Docker keeps its rules; a host without iptables
// needs none.

func (p *Programmer) forwardRules() [][]string {
	cidr := p.cfg.Network.String()
	return [][]string{
		{"-s", cidr, "-m", "comment", "--comment", "drover overlay", "-j", "ACCEPT"},
		{"-d", cidr, "-m", "comment", "--comment", "drover overlay", "-j", "ACCEPT"},
	}
}

// EnsureForward installs the rules if iptables is there and they are not.
func (p *Programmer) EnsureForward() (int, error) {
	if _, err := exec.LookPath("iptables"); err != nil {
		return 0, nil
	}
	changes := 0
	err := p.inNS(func() error {
		ipt, err := iptables.New()
		if err != nil {
			return err
		}
		for _, r := range p.forwardRules() {
			ok, err := ipt.Exists("filter", "FORWARD", r...)
			if err != nil {
				return err
			}
			if !ok {
				if err := ipt.Insert("filter", "FORWARD", 1, r...); err != nil {
					return err
				}
				changes++
			}
		}
		return nil
	})
	if err != nil {
		return changes, fmt.Errorf("overlay: FORWARD rules: %w", err)
	}
	return changes, nil
}

// RemoveForward deletes the rules.
func (p *Programmer) RemoveForward() error {
	if _, err := exec.LookPath("iptables"); err != nil {
		return nil
	}
	return p.inNS(func() error {
		ipt, err := iptables.New()
		if err != nil {
			return err
		}
		for _, r := range p.forwardRules() {
			if err := ipt.DeleteIfExists("filter", "FORWARD", r...); err != nil {
				return err
			}
		}
		return nil
	})
}
