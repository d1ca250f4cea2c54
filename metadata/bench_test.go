package metadata

import (
	"fmt"
	"testing"
	"time"

	"github.com/drover/drover/api"
)

// BenchmarkApplyContainerChange: the CPU time to apply one container change
// with 10,000 services and 50,000 containers loaded (goal < 1 ms).
func BenchmarkApplyContainerChange(b *testing.B) {
	st := newTestState()
	var ctrs []*api.Container
	for s := 0; s < 100; s++ {
		stID := fmt.Sprintf("st%d", s)
		st.putStack(&api.Stack{Meta: api.Meta{ID: stID, Name: fmt.Sprintf("stack%d", s)}})
		for v := 0; v < 100; v++ {
			svID := fmt.Sprintf("sv%d-%d", s, v)
			st.putService(&api.Service{Meta: api.Meta{ID: svID, Name: fmt.Sprintf("svc%d", v)}, Spec: api.ServiceSpec{StackID: stID, LaunchConfig: &api.LaunchConfig{Image: "x"}}})
			for c := 0; c < 5; c++ {
				ct := &api.Container{Meta: api.Meta{ID: fmt.Sprintf("c%d-%d-%d", s, v, c), Name: fmt.Sprintf("stack%d-svc%d-%d", s, v, c+1), Labels: map[string]string{"a": "b"}},
					Spec:   api.ContainerSpec{ServiceID: svID, StackID: stID, ServiceIndex: c + 1, LaunchConfig: &api.LaunchConfig{Image: "x", Ports: []string{"80/tcp"}}},
					Status: api.ContainerStatus{State: "running", PrimaryIP: fmt.Sprintf("10.%d.%d.%d", 42+s/50, (s%50)*5+c, v+1)}}
				st.putContainer(ct)
				ctrs = append(ctrs, ct)
			}
		}
	}
	// Reading the full lists once makes the lazily rebuilt views exist, so
	// the change below also pays for invalidating them.
	st.mu.RLock()
	st.list("containers")
	st.list("stacks")
	st.mu.RUnlock()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c := *ctrs[i%len(ctrs)]
		c.Status.StartCount = i
		c.Revision = int64(i + 1)
		st.putContainer(&c)
	}
	per := time.Since(start) / time.Duration(b.N)
	if b.N >= 1000 {
		fmt.Printf("metadata: apply one container change (10,000 services, 50,000 containers loaded): %.1f µs (goal < 1 ms)\n", float64(per.Nanoseconds())/1000)
	}
}
