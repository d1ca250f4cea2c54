package server

import (
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/drover/drover/api"
)

var (
	testAdmin   = &principal{accessKey: "admin", role: api.RoleAdmin}
	testService = &principal{accessKey: "svc", role: api.RoleService}
	testAgent1  = &principal{accessKey: "a1", role: api.RoleAgent, hostID: "h-1"}
	testAgent2  = &principal{accessKey: "a2", role: api.RoleAgent, hostID: "h-2"}
)

func testEvent(coll, id string, rev int64, remove bool, cur, prev *eventFields) *event {
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

func fields(host string, labels map[string]string) *eventFields {
	f := &eventFields{Labels: labels}
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
	scopes := []*principal{nil, testAdmin, testService, testAgent1, testAgent2}
	labelSets := []map[string]string{nil, {"tier": "web"}, {"tier": "db"}}
	selectors := []string{"", "tier=web", "tier!=web", "!tier"}

	idx := newSubIndex()
	var subs []*subscription
	for i := 0; i < 400; i++ {
		f := &filter{scope: scopes[rng.IntN(len(scopes))], hostID: hosts[rng.IntN(len(hosts))]}
		if rng.IntN(3) > 0 {
			f.collections = map[string]bool{}
			for _, c := range colls {
				if rng.IntN(3) == 0 {
					f.collections[c] = true
				}
			}
		}
		sel, err := api.ParseSelector(selectors[rng.IntN(len(selectors))])
		if err != nil {
			t.Fatal(err)
		}
		f.selector = sel
		s := &subscription{filter: f}
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
		var prev *eventFields
		if rng.IntN(2) == 0 {
			prev = fields(hosts[rng.IntN(len(hosts))], labelSets[rng.IntN(len(labelSets))])
		}
		ev := testEvent(coll, id, int64(i+1), rng.IntN(4) == 0, cur, prev)
		offered := map[*subscription]int{}
		idx.each(ev, func(s *subscription) { offered[s]++ })
		for _, s := range subs {
			if offered[s] > 1 {
				t.Fatalf("event %s/%s offered %d times to one subscriber", coll, id, offered[s])
			}
			if _, want := s.filter.frame(ev); want && offered[s] == 0 {
				t.Fatalf("event %s/%s (host %q, prev %+v) wanted by %+v (scope %+v) but not offered", coll, id, cur.Spec.HostID, prev, *s.filter, s.filter.scope)
			}
		}
	}
}

// Subscribers scoped to a host are not even offered the events of others.
func TestSubIndexSkipsOtherHosts(t *testing.T) {
	idx := newSubIndex()
	agent := &subscription{filter: &filter{scope: testAgent1, collections: map[string]bool{"containers": true, "hosts": true}}}
	byFilter := &subscription{filter: &filter{scope: testAdmin, hostID: "h-1"}}
	everything := &subscription{filter: &filter{scope: testAdmin}}
	for _, s := range []*subscription{agent, byFilter, everything} {
		idx.add(s)
	}
	offered := func(ev *event) map[*subscription]bool {
		got := map[*subscription]bool{}
		idx.each(ev, func(s *subscription) { got[s] = true })
		return got
	}
	for _, tc := range []struct {
		name string
		ev   *event
		want []*subscription
	}{
		{"another host's container", testEvent("containers", "c-1", 1, false, fields("h-2", nil), nil), []*subscription{everything}},
		{"its own container", testEvent("containers", "c-2", 2, false, fields("h-1", nil), nil), []*subscription{agent, byFilter, everything}},
		{"a container moved away", testEvent("containers", "c-3", 3, false, fields("h-2", nil), fields("h-1", nil)), []*subscription{agent, byFilter, everything}},
		// byFilter is offered it (hostId= is filed under the host's id for
		// hosts too) and its filter declines it: the index only narrows.
		{"its own host", testEvent("hosts", "h-1", 4, false, fields("", nil), nil), []*subscription{agent, byFilter, everything}},
		{"another host", testEvent("hosts", "h-2", 5, false, fields("", nil), nil), []*subscription{everything}},
		{"a stack", testEvent("stacks", "st-1", 6, false, fields("", nil), nil), []*subscription{everything}},
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
	f := &filter{selector: sel}
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
	h := newHub(nil, nil, newMetrics(), 16)
	var subs []*subscription
	for i := 0; i < 1000; i++ {
		p := &principal{role: api.RoleAgent, hostID: fmt.Sprintf("h-%d", i)}
		subs = append(subs, h.subscribe(0, &filter{scope: p, collections: map[string]bool{"containers": true}}, 1<<20))
	}
	for i := 0; i < 10; i++ {
		subs = append(subs, h.subscribe(0, &filter{scope: testService}, 1<<20))
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
		{"indexed", func(ev *event) { h.subs.each(ev, func(s *subscription) { s.offer(ev) }) }},
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
