package events

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
)

var (
	testAdmin   = &auth.Principal{AccessKey: "admin", Role: api.RoleAdmin}
	testService = &auth.Principal{AccessKey: "svc", Role: api.RoleService}
	testAgent1  = &auth.Principal{AccessKey: "a1", Role: api.RoleAgent, HostID: "h-1"}
	testAgent2  = &auth.Principal{AccessKey: "a2", Role: api.RoleAgent, HostID: "h-2"}
)

func testEvent(coll, id string, rev int64, remove bool, cur, prev *Fields) *event {
	ev := &event{rev: rev, collection: coll, id: id, remove: remove}
	if cur != nil {
		ev.cur = *cur
	}
	if prev != nil {
		ev.prev, ev.hasPrev = *prev, true
	}
	ev.frame = encodeFrame(remove, rev, []byte(`{"id":"`+id+`"}`))
	return ev
}

func fields(host string, labels map[string]string) *Fields {
	f := &Fields{Labels: labels}
	f.Spec.HostID = host
	return f
}

// The index may only narrow what filter.frame would pick: every subscriber
// whose filter wants an event is offered it, exactly once. This ties the
// index's keys to filter.matches and principal.canSee.
func TestSubIndexOffersEveryMatchingSubscriberOnce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	colls := []string{"hosts", "containers", "stacks", "leases", "apikeys", "widgets"}
	hosts := []string{"", "h-1", "h-2", "h-3"}
	scopes := []Scope{nil, testAdmin, testService, testAgent1, testAgent2}
	labelSets := []map[string]string{nil, {"tier": "web"}, {"tier": "db"}}
	selectors := []string{"", "tier=web", "tier!=web", "!tier"}

	idx := newSubIndex()
	var subs []*Subscription
	for i := 0; i < 400; i++ {
		f := &Filter{Scope: scopes[rng.IntN(len(scopes))], HostID: hosts[rng.IntN(len(hosts))]}
		if rng.IntN(3) > 0 {
			f.Collections = map[string]bool{}
			for _, c := range colls {
				if rng.IntN(3) == 0 {
					f.Collections[c] = true
				}
			}
		}
		sel, err := api.ParseSelector(selectors[rng.IntN(len(selectors))])
		if err != nil {
			t.Fatal(err)
		}
		f.Selector = sel
		s := &Subscription{filter: f}
		subs = append(subs, s)
		idx.add(s)
	}
	// Removing and adding again leaves no trace.
	for _, s := range subs[:100] {
		idx.remove(s)
	}
	for _, s := range subs[:100] {
		idx.add(s)
	}
	if idx.len() != len(subs) {
		t.Fatalf("index holds %d subscribers, want %d", idx.len(), len(subs))
	}

	for i := 0; i < 3000; i++ {
		coll := colls[rng.IntN(len(colls))]
		id := "c-" + strconv.Itoa(i)
		if coll == "hosts" {
			id = hosts[1+rng.IntN(len(hosts)-1)]
		}
		cur := fields(hosts[rng.IntN(len(hosts))], labelSets[rng.IntN(len(labelSets))])
		var prev *Fields
		if rng.IntN(2) == 0 {
			prev = fields(hosts[rng.IntN(len(hosts))], labelSets[rng.IntN(len(labelSets))])
		}
		ev := testEvent(coll, id, int64(i+1), rng.IntN(4) == 0, cur, prev)
		offered := map[*Subscription]int{}
		idx.each(ev, func(s *Subscription) { offered[s]++ })
		for _, s := range subs {
			if offered[s] > 1 {
				t.Fatalf("event %s/%s offered %d times to one subscriber", coll, id, offered[s])
			}
			if _, want := s.filter.frame(ev); want && offered[s] == 0 {
				t.Fatalf("event %s/%s (host %q, prev %+v) wanted by %+v (scope %+v) but not offered", coll, id, cur.Spec.HostID, prev, *s.filter, s.filter.Scope)
			}
		}
	}
}

// Subscribers scoped to a host are not even offered the events of others.
func TestSubIndexSkipsOtherHosts(t *testing.T) {
	idx := newSubIndex()
	agent := &Subscription{filter: &Filter{Scope: testAgent1, Collections: map[string]bool{"containers": true, "hosts": true}}}
	byFilter := &Subscription{filter: &Filter{Scope: testAdmin, HostID: "h-1"}}
	everything := &Subscription{filter: &Filter{Scope: testAdmin}}
	for _, s := range []*Subscription{agent, byFilter, everything} {
		idx.add(s)
	}
	offered := func(ev *event) map[*Subscription]bool {
		got := map[*Subscription]bool{}
		idx.each(ev, func(s *Subscription) { got[s] = true })
		return got
	}
	for _, tc := range []struct {
		name string
		ev   *event
		want []*Subscription
	}{
		{"another host's container", testEvent("containers", "c-1", 1, false, fields("h-2", nil), nil), []*Subscription{everything}},
		{"its own container", testEvent("containers", "c-2", 2, false, fields("h-1", nil), nil), []*Subscription{agent, byFilter, everything}},
		{"a container moved away", testEvent("containers", "c-3", 3, false, fields("h-2", nil), fields("h-1", nil)), []*Subscription{agent, byFilter, everything}},
		// byFilter is offered it (hostId= is filed under the host's id for
		// hosts too) and its filter declines it: the index only narrows.
		{"its own host", testEvent("hosts", "h-1", 4, false, fields("", nil), nil), []*Subscription{agent, byFilter, everything}},
		{"another host", testEvent("hosts", "h-2", 5, false, fields("", nil), nil), []*Subscription{everything}},
		{"a stack", testEvent("stacks", "st-1", 6, false, fields("", nil), nil), []*Subscription{everything}},
	} {
		got := offered(tc.ev)
		if len(got) != len(tc.want) {
			t.Errorf("%s: offered to %d subscribers, want %d", tc.name, len(got), len(tc.want))
		}
		for _, s := range tc.want {
			if !got[s] {
				t.Errorf("%s: not offered to %+v", tc.name, *s.filter)
			}
		}
	}
	idx.remove(agent)
	if got := offered(testEvent("containers", "c-4", 7, false, fields("h-1", nil), nil)); got[agent] || len(got) != 2 {
		t.Fatalf("after removal: offered to %d subscribers (agent %v)", len(got), got[agent])
	}
}

// An object that stops matching goes out as a removal, encoded once.
func TestFilterSendsRemovalWhenObjectStopsMatching(t *testing.T) {
	sel, _ := api.ParseSelector("tier=web")
	f := &Filter{Selector: sel}
	ev := testEvent("containers", "c-1", 42, false, fields("", map[string]string{"tier": "db"}), fields("", map[string]string{"tier": "web"}))
	b, ok := f.frame(ev)
	if want := `{"name":"resource.remove","revision":42,"resource":{"id":"c-1"}}`; !ok || string(b) != want {
		t.Fatalf("frame = %s %v, want %s", b, ok, want)
	}
	if again, _ := f.frame(ev); &again[0] != &b[0] {
		t.Fatal("removal frame encoded twice")
	}
}

// BenchmarkHubOffer measures offering one container event to 1,000 agent
// subscribers (one per host) and 10 watchers of everything: through the
// index (the cost of 11 subscribers) and, for comparison, to every
// subscriber in turn as the hub did before it had one.
func BenchmarkHubOffer(b *testing.B) {
	h := New(nil, "", nil, NewMetrics(), 16)
	var subs []*Subscription
	for i := 0; i < 1000; i++ {
		p := &auth.Principal{Role: api.RoleAgent, HostID: fmt.Sprintf("h-%d", i)}
		subs = append(subs, h.Subscribe(0, &Filter{Scope: p, Collections: map[string]bool{"containers": true}}, 1<<20))
	}
	for i := 0; i < 10; i++ {
		subs = append(subs, h.Subscribe(0, &Filter{Scope: testService}, 1<<20))
	}
	drain := func() {
		for _, s := range subs {
			for len(s.ch) > 0 {
				<-s.ch
			}
		}
	}
	evs := make([]*event, 1000)
	for i := range evs {
		evs[i] = testEvent("containers", "c-1", int64(i+1), false, fields(fmt.Sprintf("h-%d", i), nil), nil)
	}
	for _, bc := range []struct {
		name  string
		offer func(ev *event)
	}{
		{"indexed", func(ev *event) { h.subs.each(ev, func(s *Subscription) { s.offer(ev) }) }},
		{"every-subscriber", func(ev *event) {
			for s := range h.subs.all {
				s.offer(ev)
			}
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				ev := evs[i%len(evs)]
				if i%len(evs) == 0 {
					b.StopTimer()
					drain()
					for _, s := range subs {
						s.minRev = 0
					}
					b.StartTimer()
				}
				h.mu.Lock()
				bc.offer(ev)
				h.mu.Unlock()
			}
		})
	}
}
