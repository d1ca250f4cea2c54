package kubectld_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/kubectld"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
)

// env is a real kube-apiserver and kube-controller-manager, the engine with
// every controller, kubernetes-agent, and kubectld with a service key.
type env struct {
	kube     *testenv.Kube
	eng      *client.Client // admin
	url      string         // kubectld
	key      string         // an admin key, "ak:sk"
	dyn      dynamic.Interface
	regs     []*prometheus.Registry
	creds    *api.Credentials
	srv      *apiserver.Server
	serviceK *api.APIKey
}

func startEnv(t *testing.T) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real kube-apiserver, etcd and engine); run without -short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &env{kube: testenv.StartKube(t, testenv.KubeOptions{ControllerManager: true})}
	e.srv, e.eng = testenv.StartServer(t, apiserver.Options{})
	e.creds = testenv.Credentials(t, e.srv)
	e.key = e.creds.AccessKey + ":" + e.creds.SecretKey
	ctrlReg := testenv.StartControllers(t, e.srv, controllers.Options{})
	var err error
	e.serviceK, err = e.eng.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: "kubectld"}, Spec: api.APIKeySpec{Role: api.RoleService}})
	if err != nil {
		t.Fatal(err)
	}
	svc := client.New(e.srv.URL(), e.serviceK.Status.AccessKey, e.serviceK.Status.SecretKey)
	kaReg, kdReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	e.regs = []*prometheus.Registry{ctrlReg, kaReg, kdReg}
	e.dyn, err = dynamic.NewForConfig(e.kube.Config)
	if err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		kubernetesagent.Run(ctx, kubernetesagent.Options{Kube: e.kube.Config, Engine: e.eng, Logger: testenv.Logger(), Registry: kaReg})
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		err := kubectld.Run(ctx, kubectld.Options{Kube: e.kube.Config, Kubeconfig: e.kube.Kubeconfig, Engine: svc, Logger: testenv.Logger(),
			Listen: "127.0.0.1:0", Registry: kdReg, LeaseDuration: 3 * time.Second, Started: func(a string) { addr <- a }})
		if err != nil {
			t.Errorf("kubectld: %v", err)
			close(addr)
		}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	select {
	case a := <-addr:
		e.url = "http://" + a
	case <-time.After(30 * time.Second):
		t.Fatal("kubectld did not start listening in 30s")
	}
	testenv.Eventually(t, "kubectld ready", 60*time.Second, func() error {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return &httpErr{resp.StatusCode, string(b)}
		}
		return nil
	})
	return e
}

type httpErr struct {
	code int
	body string
}

func (e *httpErr) Error() string { return http.StatusText(e.code) + ": " + e.body }

// call sends a /v1-kubectl request with key ("" for none).
func (e *env) call(t *testing.T, method, path, body, key string) (int, kubectld.Output) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if key != "" {
		ak, sk, _ := strings.Cut(key, ":")
		req.SetBasicAuth(ak, sk)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out kubectld.Output
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %s", method, path, b)
	}
	return resp.StatusCode, out
}

func (e *env) mustCall(t *testing.T, method, path, body string, wantCode int) kubectld.Output {
	t.Helper()
	code, out := e.call(t, method, path, body, e.key)
	if code != wantCode {
		t.Fatalf("%s %s: %d %+v, want %d", method, path, code, out, wantCode)
	}
	return out
}

func cm(name, ns, value string) string {
	s := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: " + name + "\n"
	if ns != "" {
		s += "  namespace: " + ns + "\n"
	}
	return s + "data:\n  v: \"" + value + "\"\n"
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
var widgetGVR = schema.GroupVersionResource{Group: "example.drover.io", Version: "v1", Resource: "widgets"}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.drover.io}
spec:
  group: example.drover.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

func TestIntegrationKubectld(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	core := e.kube.Client.CoreV1()
	getCM := func(ns, name string) (string, error) {
		c, err := core.ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return c.Data["v"], nil
	}

	t.Run("keys", func(t *testing.T) {
		if code, out := e.call(t, "GET", "/v1-kubectl/namespaces", "", ""); code != http.StatusUnauthorized || !strings.Contains(out.StdErr, "engine API key is required") {
			t.Errorf("no key: %d %+v", code, out)
		}
		if code, out := e.call(t, "GET", "/v1-kubectl/namespaces", "", "made:up"); code != http.StatusUnauthorized {
			t.Errorf("made-up key: %d %+v", code, out)
		}
		k, err := e.eng.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: "ci"}, Spec: api.APIKeySpec{Role: api.RoleService}})
		if err != nil {
			t.Fatal(err)
		}
		key := k.Status.AccessKey + ":" + k.Status.SecretKey
		if code, out := e.call(t, "GET", "/v1-kubectl/namespaces/default", "", key); code != http.StatusOK || !strings.Contains(out.StdOut, "name: default") {
			t.Errorf("service key: %d %+v", code, out)
		}
		if _, err := e.eng.APIKeys().Delete(ctx, k.ID); err != nil {
			t.Fatal(err)
		}
		if code, out := e.call(t, "GET", "/v1-kubectl/namespaces/default", "", key); code != http.StatusUnauthorized {
			t.Errorf("revoked key: %d %+v, want 401 at once", code, out)
		}
	})

	t.Run("verbs", func(t *testing.T) {
		body := cm("a", "", "1") + "---\n" + cm("b", "kube-public", "2")
		out := e.mustCall(t, "POST", "/v1-kubectl/create?defaultNamespace=default", body, 203)
		if out.StdOut != "configmap/a created\nconfigmap/b created\n" || out.ExitCode != 0 {
			t.Errorf("create: %+v", out)
		}
		if v, err := getCM("kube-public", "b"); v != "2" {
			t.Errorf("configmap b: %q %v", v, err)
		}
		// Creating again fails as kubectl create does, naming the document.
		code, out := e.call(t, "POST", "/v1-kubectl/create", cm("a", "", "1"), e.key)
		if code != 500 || out.ExitCode != 1 || !strings.Contains(out.StdErr, "body: document 1 (line 1, ConfigMap a): ") || !strings.Contains(out.StdErr, "already exists") {
			t.Errorf("create twice: %d %+v", code, out)
		}
		out = e.mustCall(t, "POST", "/v1-kubectl/apply", cm("a", "", "1")+"---\n"+cm("c", "", "3"), 203)
		if out.StdOut != "configmap/a unchanged\nconfigmap/c created\n" {
			t.Errorf("apply: %q", out.StdOut)
		}
		out = e.mustCall(t, "POST", "/v1-kubectl/apply", cm("a", "", "10"), 203)
		if out.StdOut != "configmap/a configured\n" {
			t.Errorf("apply a change: %q", out.StdOut)
		}
		out = e.mustCall(t, "POST", "/v1-kubectl/replace", cm("c", "", "30"), 203)
		if v, _ := getCM("default", "c"); out.StdOut != "configmap/c replaced\n" || v != "30" {
			t.Errorf("replace: %q, c = %q", out.StdOut, v)
		}
		out = e.mustCall(t, "GET", "/v1-kubectl/configmaps/a?namespace=default", "", 200)
		if !strings.Contains(out.StdOut, "kind: ConfigMap") || !strings.Contains(out.StdOut, `v: "10"`) {
			t.Errorf("get one: %q", out.StdOut)
		}
		out = e.mustCall(t, "GET", "/v1-kubectl/cm?namespace=default", "", 200)
		if !strings.Contains(out.StdOut, "kind: List") || !strings.Contains(out.StdOut, "name: a") || !strings.Contains(out.StdOut, "name: c") {
			t.Errorf("get list by short name: %q", out.StdOut)
		}
		if code, out := e.call(t, "GET", "/v1-kubectl/nosuchthings", "", e.key); code != 500 || !strings.Contains(out.StdErr, `doesn't have a resource type "nosuchthings"`) {
			t.Errorf("get unknown resource: %d %+v", code, out)
		}
		out = e.mustCall(t, "POST", "/v1-kubectl/delete", cm("a", "", "")+"---\n"+cm("c", "", ""), 203)
		if out.StdOut != "configmap/a deleted\nconfigmap/c deleted\n" {
			t.Errorf("delete: %q", out.StdOut)
		}
		code, out = e.call(t, "POST", "/v1-kubectl/delete", cm("a", "", "")+"---\n"+cm("b", "kube-public", ""), e.key)
		if code != 500 || out.StdOut != "configmap/b deleted\n" || !strings.Contains(out.StdErr, "document 1 (line 1, ConfigMap a): configmaps \"a\" not found") {
			t.Errorf("delete past a missing one: %d %+v", code, out)
		}
	})

	t.Run("crd and its resources in one body", func(t *testing.T) {
		body := widgetCRD + "---\napiVersion: example.drover.io/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
		out := e.mustCall(t, "POST", "/v1-kubectl/apply?defaultNamespace=default", body, 203)
		if out.StdOut != "customresourcedefinition.apiextensions.k8s.io/widgets.example.drover.io created\nwidget.example.drover.io/w1 created\n" {
			t.Errorf("apply: %q", out.StdOut)
		}
		w, err := e.dyn.Resource(widgetGVR).Namespace("default").Get(ctx, "w1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if size, _, _ := unstructuredInt(w.Object, "spec", "size"); size != 3 {
			t.Errorf("w1 size = %d", size)
		}
		out = e.mustCall(t, "GET", "/v1-kubectl/wd/w1", "", 200)
		if !strings.Contains(out.StdOut, "size: 3") {
			t.Errorf("get by the CRD's short name: %q", out.StdOut)
		}
		e.mustCall(t, "POST", "/v1-kubectl/delete", body, 203)
	})

	t.Run("bad input writes nothing", func(t *testing.T) {
		code, out := e.call(t, "POST", "/v1-kubectl/apply", cm("x1", "", "1")+"---\napiVersion: v1\nkind: [\n", e.key)
		if code != 400 || !strings.Contains(out.StdErr, "body: document 2 (line 8): yaml: line 9") {
			t.Errorf("bad YAML: %d %+v", code, out)
		}
		bad := cm("x1", "", "1") + "---\n" + cm("x2", "", "2") + "---\n" + `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replcas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
`
		code, out = e.call(t, "POST", "/v1-kubectl/apply", bad, e.key)
		if code != 500 || !strings.Contains(out.StdErr, "document 3 (line 15, Deployment web)") || !strings.Contains(out.StdErr, "replcas") {
			t.Errorf("bad field: %d %+v", code, out)
		}
		for _, n := range []string{"x1", "x2"} {
			if _, err := getCM("default", n); !apierrors.IsNotFound(err) {
				t.Errorf("configmap %s after a refused request: %v (want not found: nothing half-applied)", n, err)
			}
		}
		// Asked for: what comes before the failing document stays.
		code, _ = e.call(t, "POST", "/v1-kubectl/apply?partial=true", bad, e.key)
		if code != 500 {
			t.Errorf("partial: %d", code)
		}
		for _, n := range []string{"x1", "x2"} {
			if _, err := getCM("default", n); err != nil {
				t.Errorf("configmap %s with partial=true: %v", n, err)
			}
		}
		// A custom resource that fails once its CRD is written: the CRD
		// written by the same request is taken back.
		badCR := widgetCRD + "---\napiVersion: example.drover.io/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: big}\n"
		code, out = e.call(t, "POST", "/v1-kubectl/apply?defaultNamespace=default", badCR, e.key)
		if code != 500 || !strings.Contains(out.StdErr, "Widget w2") {
			t.Errorf("bad custom resource: %d %+v", code, out)
		}
		testenv.Eventually(t, "the CRD undone", 30*time.Second, func() error {
			_, err := e.dyn.Resource(crdGVR).Get(ctx, "widgets.example.drover.io", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return nil
			}
			return &httpErr{409, "still there"}
		})
		if code, out := e.call(t, "POST", "/v1-kubectl/patch", "", e.key); code != 404 {
			t.Errorf("unknown verb: %d %+v", code, out)
		}
		if code, out := e.call(t, "POST", "/v1-kubectl/apply", "", e.key); code != 400 || !strings.Contains(out.StdErr, "no objects") {
			t.Errorf("empty body: %d %+v", code, out)
		}
	})

	t.Run("catalog", func(t *testing.T) {
		body := `{"files": {"docker-compose.yml": "services: {}", "app.yaml": ` + jsonString(cm("cat", "", "${GREETING}")) + `}, "environment": {"GREETING": "hello"}}`
		out := e.mustCall(t, "POST", "/v1-kubectl/catalog?defaultNamespace=default", body, 203)
		if v, err := getCM("default", "cat"); v != "hello" || !strings.Contains(out.StdOut, "configmap/cat created") {
			t.Errorf("catalog: %+v, cat = %q %v", out, v, err)
		}
		code, out := e.call(t, "POST", "/v1-kubectl/catalog", `{"files": {"app.yaml": `+jsonString(cm("cat2", "", "${NOPE}"))+`}}`, e.key)
		if code != 400 || !strings.Contains(out.StdErr, "${NOPE}") {
			t.Errorf("catalog missing answer: %d %+v", code, out)
		}
	})

	t.Run("template stack", func(t *testing.T) { templateStack(t, e) })
	t.Run("helm chart stack", func(t *testing.T) { helmStack(t, e) })
	t.Run("cli", func(t *testing.T) { cliStack(t, e) })
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func unstructuredInt(m map[string]any, path ...string) (int64, bool, error) {
	for _, p := range path[:len(path)-1] {
		m, _ = m[p].(map[string]any)
	}
	switch v := m[path[len(path)-1]].(type) {
	case int64:
		return v, true, nil
	case float64:
		return int64(v), true, nil
	}
	return 0, false, nil
}
