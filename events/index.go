package events

import "github.com/drover/drover/api"

// subIndex files live subscribers so that an event is offered only to those
// it may concern: by collection, and, for subscribers that can only ever see
// objects of one host (an agent's containers and its own host, or any
// hostId= filter), by that host too. A 10,000-container deletion on one host
// then costs nothing for the agents of the others.
//
// The index only narrows; filter.frame still decides. So a subscriber must be
// filed under a key that every event it can match carries: see hostKey and
// eventHostKeys, which follow filter.matches and principal.canSee.
type subIndex struct {
	all   map[*Subscription]struct{}
	colls map[string]*subBucket // by collection; otherCollections for the rest
}

// otherCollections files subscribers of every collection, for events of
// collections that are not (yet) in api.Kinds. No collection has this name:
// it is cut from keys at the first "/".
const otherCollections = "/"

type subBucket struct {
	any    map[*Subscription]struct{}            // every event of the collection
	byHost map[string]map[*Subscription]struct{} // only events that carry this host
}

// subSlot is one place a subscriber is filed: host "" is the any set.
type subSlot struct{ coll, host string }

func newSubIndex() subIndex {
	return subIndex{all: map[*Subscription]struct{}{}, colls: map[string]*subBucket{}}
}

func isKnownCollection(coll string) bool {
	_, ok := api.KindByCollection(coll)
	return ok
}

// hostKey is the host every object of coll that f matches belongs to, or ""
// when f may match objects of any host.
func (f *Filter) hostKey(coll string) string {
	if f.HostID != "" {
		return f.HostID // filter.matches: Spec.HostID == hostID, whatever the collection
	}
	if f.Scope != nil && f.Scope.OwnHost() != "" {
		switch coll {
		case "hosts", "containers", "leases": // principal.canSee
			return f.Scope.OwnHost()
		}
	}
	return ""
}

// eventHostKeys lists the hosts an event belongs to: the host field before
// and after the change (a container moving off a host is sent to that host's
// watchers as a removal), and a host's own id.
func eventHostKeys(ev *event, keys *[3]string) []string {
	out := keys[:0]
	add := func(k string) {
		if k == "" {
			return
		}
		for _, have := range out {
			if have == k {
				return
			}
		}
		out = append(out, k)
	}
	if ev.collection == "hosts" {
		add(ev.id)
	}
	add(ev.cur.Spec.HostID)
	if ev.hasPrev {
		add(ev.prevFields().Spec.HostID)
	}
	return out
}

func (x *subIndex) add(s *Subscription) {
	if _, ok := x.all[s]; ok {
		return
	}
	x.all[s] = struct{}{}
	f := s.filter
	file := func(coll, host string) {
		b := x.colls[coll]
		if b == nil {
			b = &subBucket{any: map[*Subscription]struct{}{}, byHost: map[string]map[*Subscription]struct{}{}}
			x.colls[coll] = b
		}
		if host == "" {
			b.any[s] = struct{}{}
		} else {
			set := b.byHost[host]
			if set == nil {
				set = map[*Subscription]struct{}{}
				b.byHost[host] = set
			}
			set[s] = struct{}{}
		}
		s.slots = append(s.slots, subSlot{coll, host})
	}
	if f.Collections != nil {
		for coll, want := range f.Collections {
			if want && f.allowsCollection(coll) {
				file(coll, f.hostKey(coll))
			}
		}
		return
	}
	for _, k := range api.Kinds {
		if f.allowsCollection(k.Collection) {
			file(k.Collection, f.hostKey(k.Collection))
		}
	}
	file(otherCollections, f.hostKey(otherCollections))
}

func (x *subIndex) remove(s *Subscription) {
	if _, ok := x.all[s]; !ok {
		return
	}
	delete(x.all, s)
	for _, sl := range s.slots {
		b := x.colls[sl.coll]
		if sl.host == "" {
			delete(b.any, s)
		} else if set := b.byHost[sl.host]; set != nil {
			delete(set, s)
			if len(set) == 0 {
				delete(b.byHost, sl.host)
			}
		}
		if len(b.any) == 0 && len(b.byHost) == 0 {
			delete(x.colls, sl.coll)
		}
	}
	s.slots = nil
}

// each calls fn for every subscriber ev may concern, once each. fn may
// remove the subscriber it is given.
func (x *subIndex) each(ev *event, fn func(*Subscription)) {
	var keys [3]string
	hosts := eventHostKeys(ev, &keys)
	visit := func(b *subBucket) {
		if b == nil {
			return
		}
		for s := range b.any {
			fn(s)
		}
		for _, h := range hosts {
			for s := range b.byHost[h] {
				fn(s)
			}
		}
	}
	visit(x.colls[ev.collection])
	if !isKnownCollection(ev.collection) {
		visit(x.colls[otherCollections])
	}
}

func (x *subIndex) len() int { return len(x.all) }
