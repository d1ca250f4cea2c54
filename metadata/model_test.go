package metadata

import (
	"maps"
	"testing"

	"github.com/drover/drover/api"
)

func TestContainerLabels(t *testing.T) {
	svc := &api.Service{Meta: api.Meta{ID: "sv", Name: "web"}}
	for _, tc := range []struct {
		name string
		c    *api.Container
		x    containerCtx
		want map[string]string
	}{{
		name: "primary, as placement labels it",
		c: &api.Container{Meta: api.Meta{ID: "c1", Name: "shop-web-1", Labels: map[string]string{
			"io.drover.stack.name": "shop", "io.drover.service.name": "web", "io.drover.stack_service.name": "shop/web",
			"io.rancher.stack.name": "shop", "io.rancher.stack_service.name": "shop/web",
			"io.drover.service.launch.config": "io.drover.service.primary.launch.config", "app": "x"}},
			Spec: api.ContainerSpec{ServiceID: "sv", DeploymentUnit: "u1"}},
		x: containerCtx{stackName: "shop", service: svc},
		want: map[string]string{
			"io.drover.stack.name": "shop", "io.drover.service.name": "web", "io.drover.stack_service.name": "shop/web",
			"io.drover.service.launch.config": "io.drover.service.primary.launch.config", "app": "x",
			"io.rancher.stack.name": "shop", "io.rancher.service.name": "web", "io.rancher.stack_service.name": "shop/web",
			"io.rancher.service.launch.config": "io.rancher.service.primary.launch.config",
			"io.rancher.container.name":        "shop-web-1", "io.rancher.container.uuid": "c1", "io.rancher.service.deployment.unit": "u1",
		},
	}, {
		name: "sidekick without labels: from the spec",
		c:    &api.Container{Meta: api.Meta{ID: "c2", Name: "shop-web-log-1"}, Spec: api.ContainerSpec{ServiceID: "sv", LaunchConfigName: "log"}},
		x:    containerCtx{stackName: "shop", service: svc},
		want: map[string]string{"io.rancher.stack.name": "shop", "io.rancher.stack_service.name": "shop/web", "io.rancher.service.launch.config": "log",
			"io.rancher.container.name": "shop-web-log-1", "io.rancher.container.uuid": "c2"},
	}, {
		name: "a label the container has wins",
		c: &api.Container{Meta: api.Meta{ID: "c3", Name: "n", Labels: map[string]string{"io.drover.stack.name": "a", "io.rancher.stack.name": "b", "io.rancher.container.name": "mine"}},
			Spec: api.ContainerSpec{ServiceID: "sv"}},
		x: containerCtx{stackName: "a", service: svc},
		want: map[string]string{"io.drover.stack.name": "a", "io.rancher.stack.name": "b", "io.rancher.container.name": "mine", "io.rancher.container.uuid": "c3",
			"io.rancher.stack_service.name": "a/web", "io.rancher.service.launch.config": "io.rancher.service.primary.launch.config"},
	}, {
		name: "no service",
		c:    &api.Container{Meta: api.Meta{ID: "c4", Name: "pod", Labels: map[string]string{"io.drover.kubernetes.name": "pod"}}},
		want: map[string]string{"io.drover.kubernetes.name": "pod", "io.rancher.kubernetes.name": "pod", "io.rancher.container.name": "pod", "io.rancher.container.uuid": "c4"},
	}} {
		before := maps.Clone(tc.c.Labels)
		if got := containerLabels(tc.c, tc.x); !maps.Equal(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
		if !maps.Equal(before, tc.c.Labels) {
			t.Errorf("%s: the cached container's labels were changed: %v", tc.name, tc.c.Labels)
		}
	}
}

func TestServiceLinks(t *testing.T) {
	s := &api.Service{Spec: api.ServiceSpec{Links: []string{"db:database", "cache", "other/search", "other/queue:q"}}}
	want := map[string]string{"shop/db": "database", "shop/cache": "cache", "other/search": "search", "other/queue": "q"}
	if got := serviceLinks(s, "shop"); !maps.Equal(got, want) {
		t.Errorf("links: %v, want %v", got, want)
	}
}

func TestCreateIndexAndHostID(t *testing.T) {
	for _, tc := range []struct {
		c    api.Container
		want int
	}{
		{api.Container{Meta: api.Meta{Name: "shop-web-9"}, Spec: api.ContainerSpec{ServiceIndex: 3}}, 3},
		{api.Container{Meta: api.Meta{Name: "shop-web-12"}}, 12},
		{api.Container{Meta: api.Meta{Name: "shop-web-x"}}, 0},
		{api.Container{Meta: api.Meta{Name: "standalone"}}, 0},
		{api.Container{Meta: api.Meta{Name: "odd--1"}}, 1},
	} {
		if got := createIndex(&tc.c); got != tc.want {
			t.Errorf("createIndex(%s, serviceIndex %d) = %d, want %d", tc.c.Name, tc.c.Spec.ServiceIndex, got, tc.want)
		}
	}
	a, b := hostID("h-rmoxvl6ta0xe"), hostID("h-rmoxvl6ta0xf")
	if a != hostID("h-rmoxvl6ta0xe") || a == b || a <= 0 || a >= 1<<31 || b <= 0 || b >= 1<<31 {
		t.Errorf("host ids %d %d: not stable, distinct and in (0, 2^31)", a, b)
	}
}
