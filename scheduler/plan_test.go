package scheduler

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/drover/drover/api"
)

func hosts(n int, labels func(i int) map[string]string) []*Host {
	var out []*Host
	for i := 0; i < n; i++ {
		out = append(out, &Host{ID: fmt.Sprintf("h%d", i), Name: fmt.Sprintf("host%02d", i), Labels: labels(i), Eligible: true})
	}
	return out
}

func svc(id string, scale int, labels map[string]string) *api.Service {
	return &api.Service{Meta: api.Meta{ID: id, Name: id}, Spec: api.ServiceSpec{Kind: api.ServiceContainer, Scale: &scale, LaunchConfig: &api.LaunchConfig{Image: "x", Labels: labels}}}
}

var seq int

func unit() string { seq++; return "u" + strconv.Itoa(seq) }

func TestSpreadAndAffinity(t *testing.T) {
	st := &State{Hosts: hosts(3, func(i int) map[string]string { return map[string]string{"zone": []string{"a", "a", "b"}[i]} }), HostContainers: map[string][]*api.Container{}}
	p, _ := PlanService(svc("s", 3, nil), nil, st, unit)
	on := map[string]int{}
	for _, c := range p.Create {
		on[c.HostID]++
	}
	if len(p.Create) != 3 || len(on) != 3 {
		t.Fatalf("scale 3 over 3 hosts should spread: %v", on)
	}
	p, _ = PlanService(svc("s", 4, map[string]string{"io.rancher.scheduler.affinity:host_label": "zone=a"}), nil, st, unit)
	for _, c := range p.Create {
		if c.HostID == "h2" {
			t.Fatal("hard host_label affinity placed on zone b")
		}
	}
	p, _ = PlanService(svc("s", 2, map[string]string{"io.drover.scheduler.affinity:host_label_ne": "zone=a"}), nil, st, unit)
	if len(p.Create) != 2 || p.Create[0].HostID != "h2" || p.Create[1].HostID != "h2" {
		t.Fatalf("anti-affinity: %+v", p.Create)
	}
	p, _ = PlanService(svc("s", 1, map[string]string{"io.rancher.scheduler.affinity:host_label_soft": "zone=b"}), nil, st, unit)
	if p.Create[0].HostID != "h2" {
		t.Fatalf("soft affinity should prefer zone b: %+v", p.Create)
	}
	p, _ = PlanService(svc("s", 1, map[string]string{"io.rancher.scheduler.affinity:host_label": "zone=c"}), nil, st, unit)
	if len(p.Create) != 0 || p.Pending == "" {
		t.Fatalf("unsatisfiable: %+v", p)
	}
}

func TestGlobalAndCordon(t *testing.T) {
	st := &State{Hosts: hosts(3, func(int) map[string]string { return nil }), HostContainers: map[string][]*api.Container{}}
	st.Hosts[1].Eligible = false // cordoned
	g := svc("g", 0, nil)
	g.Spec.Global, g.Spec.Scale = true, nil
	p, _ := PlanService(g, nil, st, unit)
	if len(p.Create) != 2 {
		t.Fatalf("global over 3 hosts, one cordoned: %d creates", len(p.Create))
	}
}

func TestScaleDownAndLostHost(t *testing.T) {
	st := &State{Hosts: hosts(2, func(int) map[string]string { return nil }), HostContainers: map[string][]*api.Container{}}
	var ctrs []*api.Container
	for i := 1; i <= 3; i++ {
		ctrs = append(ctrs, &api.Container{Meta: api.Meta{ID: "c" + strconv.Itoa(i)}, Spec: api.ContainerSpec{ServiceID: "s", HostID: "h" + strconv.Itoa(i%2), ServiceIndex: i, DeploymentUnit: "u" + strconv.Itoa(i)}})
	}
	p, _ := PlanService(svc("s", 2, nil), ctrs, st, unit)
	if len(p.Delete) != 1 || p.Delete[0].ID != "c3" || len(p.Create) != 0 {
		t.Fatalf("scale 3->2 should drop the highest index: %+v", p)
	}
	st.Hosts[1].Lost = true // h1 holds c1 and c3
	p, _ = PlanService(svc("s", 3, nil), ctrs, st, unit)
	if len(p.Delete) != 2 || len(p.Create) != 2 || p.Create[0].HostID != "h0" {
		t.Fatalf("a lost host's units move: %+v", p)
	}
}

// BenchmarkSchedule: 1,000 services of scale 10 over 100 hosts, decisions
// only (no store). Prints the figure; goal under 1 s.
func BenchmarkSchedule(b *testing.B) {
	for i := 0; i < b.N; i++ {
		st := &State{Hosts: hosts(100, func(i int) map[string]string { return map[string]string{"zone": strconv.Itoa(i % 3)} }), HostContainers: map[string][]*api.Container{}}
		start := time.Now()
		decisions := 0
		for s := 0; s < 1000; s++ {
			labels := map[string]string{}
			if s%4 == 0 {
				labels["io.rancher.scheduler.affinity:host_label_soft"] = "zone=1"
			}
			sv := svc("s"+strconv.Itoa(s), 10, labels)
			p, err := PlanService(sv, nil, st, unit)
			if err != nil || len(p.Create) != 10 {
				b.Fatalf("%v %+v", err, p)
			}
			for _, c := range p.Create {
				st.HostContainers[c.HostID] = append(st.HostContainers[c.HostID], &api.Container{Spec: api.ContainerSpec{ServiceID: sv.ID, HostID: c.HostID}})
				decisions++
			}
		}
		if i == 0 {
			fmt.Printf("scheduler: %d placements (1000 services x scale 10 over 100 hosts, decisions only): %.3f s (goal < 1 s)\n", decisions, time.Since(start).Seconds())
		}
	}
}
