package dns

import (
	"fmt"
	"testing"
	"time"

	"github.com/drover/drover/api"
)

// loaded is a server holding 10,000 services (1,000 of them Kubernetes
// services) and 50,000 containers, as the benchmark asks.
func loaded(tb testing.TB) (*testServer, []*api.Container) {
	s := newTestServer()
	var ctrs []*api.Container
	for st := 0; st < 100; st++ {
		stID := fmt.Sprintf("st%d", st)
		s.putStack(&api.Stack{Meta: api.Meta{ID: stID, Name: fmt.Sprintf("stack%d", st)}})
		for sv := 0; sv < 100; sv++ {
			svID := fmt.Sprintf("sv%d-%d", st, sv)
			svc := &api.Service{Meta: api.Meta{ID: svID, Name: fmt.Sprintf("svc%d", sv)}, Spec: api.ServiceSpec{StackID: stID, Kind: api.ServiceContainer}}
			if sv%10 == 0 {
				svc.Spec.Kind, svc.Spec.VIP = api.ServiceKubernetes, fmt.Sprintf("10.43.%d.%d", st, sv)
				svc.Labels = map[string]string{"io.drover.kubernetes.namespace": fmt.Sprintf("ns%d", st), "io.drover.kubernetes.name": fmt.Sprintf("svc%d", sv)}
				svc.Spec.Ports = []api.ServicePort{{Name: "http", Port: 80, Protocol: "tcp"}}
			}
			s.putService(svc)
			for c := 0; c < 5; c++ {
				ct := &api.Container{Meta: api.Meta{ID: fmt.Sprintf("c%d-%d-%d", st, sv, c), Name: fmt.Sprintf("stack%d-svc%d-%d", st, sv, c+1)},
					Spec:   api.ContainerSpec{ServiceID: svID, StackID: stID, ServiceIndex: c + 1},
					Status: api.ContainerStatus{State: "running", PrimaryIP: fmt.Sprintf("10.%d.%d.%d", 42+st/50, (st%50)*5+c, sv+1)}}
				s.putContainer(ct)
				ctrs = append(ctrs, ct)
			}
		}
	}
	return s, ctrs
}

// BenchmarkApplyContainerChange: the CPU time to apply one container change
// with 10,000 services and 50,000 containers loaded (goal < 1 ms).
func BenchmarkApplyContainerChange(b *testing.B) {
	s, ctrs := loaded(b)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		c := *ctrs[i%len(ctrs)]
		if i%2 == 0 {
			c.Status.Health = "unhealthy"
		}
		s.putContainer(&c)
	}
	per := time.Since(start) / time.Duration(b.N)
	if b.N >= 1000 {
		fmt.Printf("dns: apply one container change (10,000 services, 50,000 containers loaded): %.1f µs (goal < 1 ms)\n", float64(per.Nanoseconds())/1000)
	}
}
