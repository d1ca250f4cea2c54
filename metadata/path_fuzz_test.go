package metadata

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/api"
)

// fuzzServer is a metadata server over a small in-memory state: a stack,
// a service and a container at 10.42.0.5.
func fuzzServer() *Server {
	st := newTestState()
	st.putStack(&api.Stack{Meta: api.Meta{ID: "st", Name: "shop"}})
	st.putService(&api.Service{Meta: api.Meta{ID: "sv", Name: "web", Labels: map[string]string{"a/b": "c"}}, Spec: api.ServiceSpec{StackID: "st", Links: []string{"db:database", "other/cache"},
		Metadata: map[string]any{"example": map[string]any{"name": "hello", "list": []any{1.0, "two", nil, map[string]any{"k": true}}}}}})
	st.putContainer(&api.Container{Meta: api.Meta{ID: "c", Name: "shop-web-1", Labels: map[string]string{"x": "y"}},
		Spec: api.ContainerSpec{ServiceID: "sv", StackID: "st"}, Status: api.ContainerStatus{State: "running", PrimaryIP: "10.42.0.5"}})
	return &Server{st: st.state, log: nil, synced: func() bool { return true },
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "r"}, []string{"code"})}
}

// FuzzMetadataPath serves any path, in every format, from a container's
// address and from a stranger's: never a panic, a JSON answer always JSON,
// and only 200 or 404 (issue 9: fuzz the metadata paths).
func FuzzMetadataPath(f *testing.F) {
	for _, p := range []string{"/latest", "/2015-12-19/self/container/labels/x", "/latest/self/service/labels/a%2Fb",
		"/latest/stacks/shop/services/web/containers/0/name", "/latest/containers/shop-web-1", "/latest/self/../../etc",
		"/latest/services/web/labels", "/latest/self/container/ips/0", "/latest/hosts", "/latest//self///stack",
		"/latest/self/service/links/shop%2Fdb", "/latest/self/container/links/other%2Fcache", "/latest/self/service/metadata/example/list/3/k",
		"/latest/services/web/metadata/example/name", "/latest/self/container/labels/io.rancher.stack.name", "/latest/self/container/%zz"} {
		f.Add(p, true)
		f.Add(p, false)
	}
	s := fuzzServer()
	f.Fuzz(func(t *testing.T, path string, fromContainer bool) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		for _, accept := range []string{"application/json", "text/plain", "application/yaml"} {
			r := httptest.NewRequest("GET", "http://metadata/", nil)
			r.URL.Path = path
			r.Header.Set("Accept", accept)
			r.RemoteAddr = "192.0.2.1:1234"
			if fromContainer {
				r.RemoteAddr = "10.42.0.5:1234"
			}
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code != http.StatusOK && w.Code != http.StatusNotFound {
				t.Fatalf("GET %q (%s): status %d", path, accept, w.Code)
			}
			if accept == "application/json" && !json.Valid(w.Body.Bytes()) {
				t.Fatalf("GET %q as JSON answered %q", path, w.Body.String())
			}
		}
	})
}
