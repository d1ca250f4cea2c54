package metadata_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/metadata"
)

// The fields Rancher's own client (go-rancher-metadata) reads that drover
// once left empty: environment, health checks, links in Rancher's
// "stack/service" form, create indexes, user metadata, hostnames, host
// ids, network ids and Rancher's spelling of drover's labels; each read
// the way scripts read them, as text one path at a time.
func TestIntegrationRancherFields(t *testing.T) {
	e := setup(t)
	const me = "127.0.0.2"
	nets, _, err := e.eng.Networks().List(context.Background(), client.ListOptions{})
	if err != nil || len(nets) != 1 {
		t.Fatalf("the managed network: %v %v", nets, err)
	}
	var host struct {
		HostID int64 `json:"host_id"`
	}
	_, body := get(t, e.url+"/latest/self/host", me, "application/json")
	if err := json.Unmarshal([]byte(body), &host); err != nil || host.HostID <= 0 || host.HostID >= 1<<31 {
		t.Fatalf("host_id %d: %v", host.HostID, err)
	}
	for _, tc := range []struct{ path, want string }{
		{"/latest/self/container/environment_uuid", metadata.EnvironmentUUID},
		{"/latest/self/container/environment_name", "Default"},
		{"/latest/self/service/environment_uuid", metadata.EnvironmentUUID},
		{"/latest/self/service/environment_name", "Default"},
		{"/latest/self/stack/environment_uuid", metadata.EnvironmentUUID},
		{"/latest/self/stack/environment_name", "Default"},
		{"/latest/self/host/environment_uuid", metadata.EnvironmentUUID},
		{"/latest/self/host/hostname", "node1.example"},
		{"/latest/self/host/host_id", strconv.FormatInt(host.HostID, 10)},
		{"/latest/hosts/node1/host_id", strconv.FormatInt(host.HostID, 10)},
		// The container's own health check: the service's, for a primary.
		{"/latest/self/container/health_check/port", "80"},
		{"/latest/self/container/health_check/request_line", "GET /healthz HTTP/1.0"},
		{"/latest/self/container/links", "other/cache\nshop/db\n"},
		{"/latest/self/container/links/shop%2Fdb", "database"},
		{"/latest/self/service/links", "other/cache\nshop/db\n"},
		{"/latest/self/service/links/other%2Fcache", "cache"},
		{"/latest/self/container/create_index", "1"},
		{"/latest/containers/shop-web-2/create_index", "2"},
		{"/latest/self/service/create_index", "2"},
		{"/latest/services/db/create_index", "1"},
		// Docker's default hostname: the container id's first 12 characters.
		{"/latest/self/container/hostname", "4f3c2b1a0e9d"},
		{"/latest/self/container/network_uuid", ""}, // 127.0.0.2 is in no network
		{"/latest/containers/shop-web-2/network_uuid", nets[0].ID},
		// Rancher's spelling of drover's labels, beside drover's.
		{"/latest/self/container/labels/io.rancher.service.launch.config", "io.rancher.service.primary.launch.config"},
		{"/latest/self/container/labels/io.drover.service.launch.config", "io.drover.service.primary.launch.config"},
		{"/latest/self/container/labels/io.rancher.stack.name", "shop"},
		{"/latest/self/container/labels/io.rancher.stack_service.name", "shop/web"},
		{"/latest/self/container/labels/io.rancher.container.name", "shop-web-1"},
		{"/latest/self/container/labels/io.rancher.container.uuid", e.c1.ID},
		// The service's metadata, walked like everything else.
		{"/latest/self/service/metadata", "example/\nexample2/\n"},
		{"/latest/self/service/metadata/example", "name\nvalue\n"},
		{"/latest/self/service/metadata/example/name", "hello"},
		{"/2015-12-19/services/web/metadata/example2/foo", "bar"},
		{"/latest/stacks/shop/services/web/metadata/example/value", "world"},
		{"/latest/services/db/metadata", ""},
	} {
		if code, body := get(t, e.url+tc.path, me, ""); code != 200 || body != tc.want {
			t.Errorf("GET %s: %d %q, want %q", tc.path, code, body, tc.want)
		}
	}
	for path, want := range map[string]string{
		"/latest/self/service/metadata":      `{"example":{"name":"hello","value":"world"},"example2":{"foo":"bar"}}`,
		"/latest/services/db/health_check":   `null`,
		"/latest/containers/shop-db-1/links": `{}`,
		"/latest/services/db/metadata":       `{}`,
	} {
		if code, body := get(t, e.url+path, me, "application/json"); code != 200 || body != want+"\n" {
			t.Errorf("GET %s as JSON: %d %q, want %s", path, code, body, want)
		}
	}

	ctx := context.Background()
	// A sidekick: its own launch config name, check and hostname.
	if _, err := e.eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "shop-web-log-1", Labels: map[string]string{"io.drover.service.launch.config": "log"}},
		Spec: api.ContainerSpec{ServiceID: e.web.ID, HostID: e.host.ID, ServiceIndex: 1, LaunchConfigName: "log", DeploymentUnit: "u1",
			LaunchConfig: &api.LaunchConfig{Image: "busybox", Hostname: "logger", HealthCheck: &api.HealthCheck{Port: 514, Interval: 1000}}},
		Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.9"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the sidekick", func() bool {
		code, _ := get(t, e.url+"/latest/containers/shop-web-log-1", me, "")
		return code == 200
	})
	for _, tc := range []struct{ path, want string }{
		{"/latest/containers/shop-web-log-1/labels/io.rancher.service.launch.config", "log"},
		{"/latest/containers/shop-web-log-1/labels/io.rancher.service.deployment.unit", "u1"},
		{"/latest/containers/shop-web-log-1/service_name", "log"},
		{"/latest/containers/shop-web-log-1/hostname", "logger"},
		{"/latest/containers/shop-web-log-1/health_check/port", "514"},
		{"/latest/containers/shop-web-log-1/create_index", "1"},
		{"/latest/containers/shop-web-log-1/links/shop%2Fdb", "database"},
	} {
		if code, body := get(t, e.url+tc.path, me, ""); code != 200 || body != tc.want {
			t.Errorf("GET %s: %d %q, want %q", tc.path, code, body, tc.want)
		}
	}

	// The service's create_index follows its containers: up with a new
	// highest, back down when it goes.
	third, err := e.eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "shop-web-3"}, Spec: api.ContainerSpec{ServiceID: e.web.ID, HostID: e.host.ID, ServiceIndex: 3, LaunchConfig: &api.LaunchConfig{Image: "app"}},
		Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.4"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "create_index 3", func() bool {
		_, body := get(t, e.url+"/latest/self/service/create_index", me, "")
		return body == "3"
	})
	if _, err := e.eng.Containers().Delete(ctx, third.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "create_index back to 2", func() bool {
		_, body := get(t, e.url+"/latest/services/web/create_index", me, "")
		return body == "2"
	})

	// A change of the service's links or check shows in its containers.
	if _, err := e.eng.Services().Patch(ctx, e.web.ID, map[string]any{"spec": map[string]any{"links": []string{"db:pg"}, "healthCheck": map[string]any{"port": 8080, "interval": 2000}}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the new links in the container", func() bool {
		_, links := get(t, e.url+"/latest/self/container/links/shop%2Fdb", me, "")
		_, port := get(t, e.url+"/latest/self/container/health_check/port", me, "")
		return links == "pg" && port == "8080"
	})
	if _, body := get(t, e.url+"/latest/containers/shop-web-log-1/health_check/port", me, ""); body != "514" {
		t.Errorf("the sidekick's own check was replaced by the service's: %q", body)
	}

	// On the host's network a container has its host's hostname, and
	// follows it.
	if _, err := e.eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "shop-db-tool-1"}, Spec: api.ContainerSpec{ServiceID: e.db.ID, HostID: e.host.ID, LaunchConfigName: "tool", ServiceIndex: 1,
		LaunchConfig: &api.LaunchConfig{Image: "tool", NetworkMode: "host"}}, Status: api.ContainerStatus{State: "running"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the host network container", func() bool {
		_, body := get(t, e.url+"/latest/containers/shop-db-tool-1/hostname", me, "")
		return body == "node1.example"
	})
	if _, err := e.eng.Hosts().PatchStatus(ctx, e.host.ID, map[string]any{"status": map[string]any{"hostname": "node1.renamed"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the host's new hostname in its container", func() bool {
		_, body := get(t, e.url+"/latest/services/db/containers/shop-db-tool-1/hostname", me, "")
		return body == "node1.renamed"
	})
}
