package events

import "github.com/drover/drover/api"

// filter decides what one subscriber sees: the types it asked for, its
// selectors, and what its role allows.
type Filter struct {
	Collections map[string]bool // nil: all
	Selector    api.Selector
	StackID     string
	ServiceID   string
	HostID      string
	Scope       Scope
}

func (f *Filter) allowsCollection(coll string) bool {
	if f.Collections != nil && !f.Collections[coll] {
		return false
	}
	return f.Scope == nil || f.Scope.CanRead(coll)
}

func (f *Filter) Matches(coll, id string, fl *Fields) bool {
	if f.Scope != nil && !f.Scope.CanSee(coll, id, fl.Spec.HostID) {
		return false
	}
	if f.StackID != "" && fl.Spec.StackID != f.StackID && !(coll == "stacks" && id == f.StackID) {
		return false
	}
	if f.ServiceID != "" && fl.Spec.ServiceID != f.ServiceID {
		return false
	}
	if f.HostID != "" && fl.Spec.HostID != f.HostID {
		return false
	}
	return f.Selector.Matches(fl.Labels)
}

// frame returns what to send for ev, if anything. The hub calls it under its
// lock when it offers a live event, so it must stay cheap and never block. An object that stops
// matching is sent as a removal, as Kubernetes watches do.
func (f *Filter) frame(ev *event) ([]byte, bool) {
	if !f.allowsCollection(ev.collection) {
		return nil, false
	}
	if ev.remove {
		return ev.frame, f.Matches(ev.collection, ev.id, &ev.cur)
	}
	if f.Matches(ev.collection, ev.id, &ev.cur) {
		return ev.frame, true
	}
	if ev.hasPrev && f.Matches(ev.collection, ev.id, ev.prevFields()) {
		return ev.removalFrame(), true
	}
	return nil, false
}
