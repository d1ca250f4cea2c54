package server

import "github.com/drover/drover/api"

// filter decides what one subscriber sees: the types it asked for, its
// selectors, and what its role allows.
type filter struct {
	collections map[string]bool // nil: all
	selector    api.Selector
	stackID     string
	serviceID   string
	hostID      string
	scope       *principal
}

func (f *filter) allowsCollection(coll string) bool {
	if f.collections != nil && !f.collections[coll] {
		return false
	}
	return f.scope == nil || f.scope.canRead(coll)
}

func (f *filter) matches(coll, id string, fl *eventFields) bool {
	if f.scope != nil && !f.scope.canSee(coll, id, fl.Spec.HostID) {
		return false
	}
	if f.stackID != "" && fl.Spec.StackID != f.stackID && !(coll == "stacks" && id == f.stackID) {
		return false
	}
	if f.serviceID != "" && fl.Spec.ServiceID != f.serviceID {
		return false
	}
	if f.hostID != "" && fl.Spec.HostID != f.hostID {
		return false
	}
	return f.selector.Matches(fl.Labels)
}

// frame returns what to send for ev, if anything. The hub calls it under its
// lock when it offers a live event, so it must stay cheap and never block. An object that stops
// matching is sent as a removal, as Kubernetes watches do.
func (f *filter) frame(ev *event) ([]byte, bool) {
	if !f.allowsCollection(ev.collection) {
		return nil, false
	}
	if ev.remove {
		return ev.frame, f.matches(ev.collection, ev.id, &ev.cur)
	}
	if f.matches(ev.collection, ev.id, &ev.cur) {
		return ev.frame, true
	}
	if ev.hasPrev && f.matches(ev.collection, ev.id, &ev.prev) {
		return ev.removalFrame(), true
	}
	return nil, false
}
