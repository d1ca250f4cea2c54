package apiserver_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// BenchmarkCreateContainer measures the engine's create path in process
// (for profiling with -cpuprofile; the figure beside raw etcd is make
// bench-engine's).
func BenchmarkCreateContainer(b *testing.B) {
	ctx := context.Background()
	_, c := testenv.StartServer(b, apiserver.Options{})
	host, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "bench-host"}})
	if err != nil {
		b.Fatal(err)
	}
	st, _ := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "bench"}})
	one := 1
	svc, err := c.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "web"}, Spec: api.ServiceSpec{StackID: st.ID, Scale: &one, LaunchConfig: &api.LaunchConfig{Image: "nginx:1.27"}}})
	if err != nil {
		b.Fatal(err)
	}
	var seq atomic.Int64
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := seq.Add(1)
			_, err := c.Containers().Create(ctx, &api.Container{
				Meta: api.Meta{Name: fmt.Sprintf("bench-web-%d", n), Labels: map[string]string{"io.drover.stack.name": "bench", "io.drover.service.name": "web"}},
				Spec: api.ContainerSpec{ServiceID: svc.ID, HostID: host.ID, ServiceIndex: int(n), LaunchConfig: &api.LaunchConfig{
					Image: "nginx:1.27", Ports: []string{"80/tcp"}, Environment: map[string]string{"MODE": "bench"}}},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}
