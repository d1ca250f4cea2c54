// Package scheduler turns services into containers placed on hosts: scale N
// or one per eligible host (global), hard affinity rules filter hosts, soft
// ones rank them, spread across hosts by default, sidekicks share their
// primary's host, and unschedulable or lost hosts get nothing new.
//
// Plan is a pure function of the desired and observed state, so decisions
// are testable and benchmarkable without a store; the placement controller
// (controllers/placement) feeds it from the engine's watch caches and
// applies what it returns, and the upgrade controller (controllers/upgrade)
// uses the unit helpers here.
package scheduler

import (
	"fmt"
	"sort"
	"strconv"

	"github.com/drover/drover/api"
	"github.com/drover/drover/stacks"
)

// Host is a host as the scheduler sees it.
type Host struct {
	ID     string
	Name   string
	Labels map[string]string
	// Eligible: active and not cordoned. Ineligible hosts keep what they
	// run but get nothing new.
	Eligible bool
	// Lost: disconnected longer than the timeout; its non-global
	// containers are placed elsewhere.
	Lost bool
}

// Unit is one deployment unit of a service: a primary container and its
// sidekicks, always on one host.
type Unit struct {
	ID         string // deploymentUnit
	Index      int    // serviceIndex
	HostID     string
	Containers []*api.Container
}

// Create asks for one new deployment unit.
type Create struct {
	ServiceID string
	Unit      string
	Index     int
	HostID    string
}

// Plan is what to do for one service.
type Plan struct {
	Create  []Create
	Delete  []*api.Container // whole units, removed together
	Pending string           // why some wanted containers could not be placed
}

// State is what the planner reads. HostContainers lists every container on
// each host (for spread and container affinity).
type State struct {
	Hosts          []*Host
	HostContainers map[string][]*api.Container
	// On, if set, is used instead of HostContainers: the placement
	// controller answers from its cache indexes without building a map.
	On func(hostID string) []*api.Container
}

func (st *State) containersOn(hostID string) []*api.Container {
	if st.On != nil {
		return st.On(hostID)
	}
	return st.HostContainers[hostID]
}

// Units groups a service's containers by deployment unit.
func Units(ctrs []*api.Container) []*Unit {
	byID := map[string]*Unit{}
	var out []*Unit
	for _, c := range ctrs {
		u := byID[c.Spec.DeploymentUnit]
		if u == nil {
			u = &Unit{ID: c.Spec.DeploymentUnit, Index: c.Spec.ServiceIndex, HostID: c.Spec.HostID}
			byID[c.Spec.DeploymentUnit] = u
			out = append(out, u)
		}
		u.Containers = append(u.Containers, c)
		if c.Spec.LaunchConfigName == "" {
			u.HostID, u.Index = c.Spec.HostID, c.Spec.ServiceIndex
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Index < out[j].Index })
	return out
}

// PlanService decides the creates and deletes that bring svc to its
// desired count. newUnit names new deployment units.
func PlanService(svc *api.Service, ctrs []*api.Container, st *State, newUnit func() string) (Plan, error) {
	var p Plan
	lc := svc.Spec.LaunchConfig
	if lc == nil || (svc.Spec.Kind != api.ServiceContainer && svc.Spec.Kind != api.ServiceLoadBalancer) {
		return p, nil // nothing to run
	}
	rules, err := stacks.Affinity(lc.Labels)
	if err != nil {
		return p, err
	}
	hosts := map[string]*Host{}
	for _, h := range st.Hosts {
		hosts[h.ID] = h
	}
	units := Units(ctrs)
	var keep []*Unit
	used := map[int]bool{}
	for _, u := range units {
		h := hosts[u.HostID]
		gone := u.HostID != "" && h == nil
		// A global service's unit leaves a host that no longer qualifies;
		// any unit leaves a host that is gone or lost.
		lost := h != nil && h.Lost && !svc.Spec.Global
		unfit := svc.Spec.Global && h != nil && !fits(h, rules, st, svc)
		if gone || lost || unfit || u.HostID == "" || used[u.Index] {
			p.Delete = append(p.Delete, u.Containers...)
			continue
		}
		used[u.Index] = true
		keep = append(keep, u)
	}
	nextIndex := func() int {
		for i := 1; ; i++ {
			if !used[i] {
				used[i] = true
				return i
			}
		}
	}
	// Placement sees its own decisions: a unit placed counts for spread.
	placed := map[string]int{}
	for _, u := range keep {
		placed[u.HostID]++
	}
	if svc.Spec.Global {
		for _, h := range st.Hosts {
			if placed[h.ID] > 0 || !h.Eligible || h.Lost || !fits(h, rules, st, svc) {
				continue
			}
			p.Create = append(p.Create, Create{ServiceID: svc.ID, Unit: newUnit(), Index: nextIndex(), HostID: h.ID})
			placed[h.ID]++
		}
		return p, nil
	}
	want := 1
	if svc.Spec.Scale != nil {
		want = *svc.Spec.Scale
	}
	if u := svc.Status.Upgrade; u != nil {
		want += u.Surge // a start-first batch runs beside the old units
	}
	// Too many: remove units running an older launch config first, then
	// the highest indexes.
	sort.SliceStable(keep, func(i, j int) bool {
		oi, oj := UnitOutdated(svc, keep[i]), UnitOutdated(svc, keep[j])
		if oi != oj {
			return oj
		}
		return keep[i].Index < keep[j].Index
	})
	for len(keep) > want {
		u := keep[len(keep)-1]
		keep = keep[:len(keep)-1]
		p.Delete = append(p.Delete, u.Containers...)
	}
	for n := len(keep); n < want; n++ {
		h := choose(st, rules, svc, placed)
		if h == nil {
			p.Pending = fmt.Sprintf("%d of %d containers cannot be placed: no active, schedulable host satisfies %s", want-n, want, describe(rules))
			break
		}
		p.Create = append(p.Create, Create{ServiceID: svc.ID, Unit: newUnit(), Index: nextIndex(), HostID: h.ID})
		placed[h.ID]++
	}
	return p, nil
}

func describe(rules []stacks.Rule) string {
	var hard []string
	for _, r := range rules {
		if !r.Soft {
			hard = append(hard, r.String())
		}
	}
	if len(hard) == 0 {
		return "the service's needs"
	}
	return fmt.Sprint(hard)
}

// fits checks the hard rules on a host.
func fits(h *Host, rules []stacks.Rule, st *State, svc *api.Service) bool {
	for _, r := range rules {
		if !r.Soft && match(h, r, st, svc) == r.Not {
			return false
		}
	}
	return true
}

// match reports whether the host has what the rule names.
func match(h *Host, r stacks.Rule, st *State, svc *api.Service) bool {
	switch r.On {
	case stacks.OnHostLabel:
		v, ok := h.Labels[r.Key]
		return ok && v == r.Value
	case stacks.OnContainerLabel:
		for _, c := range st.containersOn(h.ID) {
			if c.Spec.ServiceID == svc.ID {
				continue // a service is never its own affinity
			}
			lbls := c.Labels
			if c.Spec.LaunchConfig != nil && len(c.Spec.LaunchConfig.Labels) > 0 {
				lbls = c.Spec.LaunchConfig.Labels
			}
			if v, ok := lbls[r.Key]; ok && v == r.Value {
				return true
			}
			if v, ok := c.Labels[r.Key]; ok && v == r.Value {
				return true
			}
		}
	case stacks.OnContainer:
		for _, c := range st.containersOn(h.ID) {
			if c.Name == r.Value || c.ID == r.Value {
				return true
			}
		}
	}
	return false
}

// choose picks the best host for one more unit: hard rules filter, then
// the most soft rules satisfied, then the fewest units of this service
// (spread), then the fewest containers, then the name (stable).
func choose(st *State, rules []stacks.Rule, svc *api.Service, placed map[string]int) *Host {
	var best *Host
	var bestKey [4]int
	for _, h := range st.Hosts {
		if !h.Eligible || h.Lost || !fits(h, rules, st, svc) {
			continue
		}
		soft := 0
		for _, r := range rules {
			if r.Soft && match(h, r, st, svc) != r.Not {
				soft++
			}
		}
		key := [4]int{-soft, placed[h.ID], len(st.containersOn(h.ID)), 0}
		if best == nil || less(key, bestKey) || (key == bestKey && h.Name < best.Name) {
			best, bestKey = h, key
		}
	}
	return best
}

func less(a, b [4]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// ContainerName is Rancher's naming: stack-service-N, and for a sidekick
// stack-service-sidekick-N.
func ContainerName(stack, service, sidekick string, index int) string {
	n := stack + "-" + service
	if sidekick != "" {
		n += "-" + sidekick
	}
	n += "-" + strconv.Itoa(index)
	if len(n) > 63 {
		n = n[len(n)-63:]
		for len(n) > 0 && (n[0] == '-') {
			n = n[1:]
		}
	}
	return n
}
