// Package integration_test runs drover's components together against the
// real parts: etcd, a kube-apiserver with its controller manager, and the
// Docker Engine.
package integration_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/dns"
	"github.com/drover/drover/internal/testenv"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
	"github.com/drover/drover/metadata"
)

const stackFile = `services:
  web:
    image: drover-test-app:v1
    environment:
      VERSION: "1"
    x-drover:
      scale: 2
      health_check: {port: 8080, request_line: GET /healthz, interval: 500, healthy_threshold: 1, unhealthy_threshold: 2}
  worker:
    image: drover-test-app:v1
    labels:
      io.rancher.scheduler.global: "true"
`

// writes reads every drover_*_writes_total counter the engine exposes (the
// store's, by collection, and each controller's), leaving out lease
// renewals, which are liveness and leadership by design.
func writes(t *testing.T, url string, creds *api.Credentials, regs ...prometheus.Gatherer) map[string]float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "drover_") || !strings.Contains(line, "writes_total") || strings.Contains(line, `collection="leases"`) || strings.Contains(line, `controller="election"`) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		out[line[:i]] = v
	}
	for _, g := range regs {
		mfs, err := g.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if !strings.HasSuffix(mf.GetName(), "writes_total") {
				continue
			}
			for _, m := range mf.GetMetric() {
				var lv []string
				skip := false
				for _, l := range m.GetLabel() {
					lv = append(lv, l.GetName()+"="+l.GetValue())
					skip = skip || l.GetValue() == "election"
				}
				if !skip {
					out[mf.GetName()+"{"+strings.Join(lv, ",")+"}"] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

func diff(a, b map[string]float64) []string {
	var out []string
	for k, v := range b {
		if v != a[k] {
			out = append(out, fmt.Sprintf("%s +%g", k, v-a[k]))
		}
	}
	sort.Strings(out)
	return out
}

// Every controller, the kubernetes-agent, a Docker agent, dns and metadata
// run together on real parts. After a burst of changes on both sides, the
// system settles and then no component writes anything: no two of them
// undo each other's work.
func TestIntegrationAllControllersSettle(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, kube-apiserver, Docker); run without -short")
	}
	testenv.BuildTestImage(t)
	kube := testenv.StartKube(t, testenv.KubeOptions{ControllerManager: true})
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	ctrlReg := testenv.StartControllers(t, srv, controllers.Options{HostLifecycle: hostlifecycle.Options{DisconnectAfter: 10 * time.Second}})
	kaReg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := map[string]chan error{}
	run := func(name string, f func(context.Context) error) {
		ch := make(chan error, 1)
		done[name] = ch
		go func() { ch <- f(ctx) }()
	}
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	run("agent", func(ctx context.Context) error {
		return agent.Run(ctx, agent.Options{Server: srv.URL(), Token: tok.Status.Token, Name: "settle-host", StateDir: t.TempDir(), Labels: map[string]string{"zone": "a"},
			Logger: testenv.Logger(), Heartbeat: 500 * time.Millisecond, Resync: time.Second})
	})
	t.Cleanup(func() { testenv.RemoveDockerContainers(agent.LabelHostID) })
	run("kubernetes-agent", func(ctx context.Context) error {
		return kubernetesagent.Run(ctx, kubernetesagent.Options{Kube: kube.Config, Engine: eng, Logger: testenv.Logger(), Registry: kaReg})
	})
	d, err := dns.New(dns.Options{Listen: "127.0.0.1:0", Engine: eng, Logger: testenv.Logger(), Upstreams: []string{"127.0.0.1:1"}, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	run("dns", d.Run)
	run("metadata", func(ctx context.Context) error {
		return metadata.Run(ctx, metadata.Options{Listen: "127.0.0.1:0", Engine: eng, Logger: testenv.Logger()})
	})
	t.Cleanup(func() {
		cancel()
		for name, ch := range done {
			select {
			case err := <-ch:
				if err != nil && err != context.Canceled {
					t.Errorf("%s: %v", name, err)
				}
			case <-time.After(20 * time.Second):
				t.Errorf("%s did not stop within 20s", name)
			}
		}
	})

	// The burst: a compose stack with a health-checked and a global
	// service, a Kubernetes namespace with a Service and a Deployment, a
	// host label change, a stack upgrade.
	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "settle"}, Spec: api.StackSpec{Compose: stackFile}})
	if err != nil {
		t.Fatal(err)
	}
	kc := kube.Client
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kc.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "cart"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	two := int32(2)
	labels := map[string]string{"app": "cart"}
	if _, err := kc.AppsV1().Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "cart"}, Spec: appsv1.DeploymentSpec{
		Replicas: &two, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "drover-test-app:v1"}}}},
	}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var host *api.Host
	testenv.Eventually(t, "host active", 30*time.Second, func() error {
		hs, _, err := eng.Hosts().List(ctx, client.ListOptions{})
		if err != nil || len(hs) != 1 || hs[0].Status.State != api.HostActive {
			return fmt.Errorf("hosts %+v %v", hs, err)
		}
		host = &hs[0]
		return nil
	})
	if _, err := eng.Hosts().Patch(ctx, host.ID, map[string]any{"labels": map[string]any{"disk": "ssd"}}); err != nil {
		t.Fatal(err)
	}
	upgraded := strings.Replace(stackFile, `VERSION: "1"`, `VERSION: "2"`, 1)
	if _, err := eng.Stacks().Patch(ctx, st.ID, map[string]any{"spec": map[string]any{"compose": upgraded}}); err != nil {
		t.Fatal(err)
	}

	// Converged: every compose container runs the new spec, the stack and
	// its services are active and healthy, the Kubernetes objects are in
	// the engine.
	testenv.Eventually(t, "everything converged", 120*time.Second, func() error {
		s, err := eng.Stacks().Get(ctx, st.ID)
		if err != nil || s.Status.State != "active" || s.Status.Health != "healthy" || s.Status.ObservedGeneration != s.Generation {
			return fmt.Errorf("stack status %+v %v", s.Status, err)
		}
		ctrs, _, err := eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(ctrs) != 3 {
			return fmt.Errorf("%d compose containers (%v), want 3", len(ctrs), err)
		}
		for _, c := range ctrs {
			if c.Status.State != api.ContainerRunning {
				return fmt.Errorf("container %s is %s", c.Name, c.Status.State)
			}
			if c.Spec.LaunchConfig.Environment["VERSION"] == "1" {
				return fmt.Errorf("container %s still runs version 1", c.Name)
			}
		}
		svcs, _, err := eng.Services().List(ctx, client.ListOptions{LabelSelector: kubernetesagent.LabelNamespace + "=shop"})
		if err != nil || len(svcs) < 2 {
			return fmt.Errorf("%d engine services of namespace shop (%v), want the Service and the Deployment", len(svcs), err)
		}
		pods, _, err := eng.Containers().List(ctx, client.ListOptions{LabelSelector: kubernetesagent.LabelNamespace + "=shop"})
		if err != nil || len(pods) != 2 {
			return fmt.Errorf("%d pods of namespace shop in the engine (%v), want 2", len(pods), err)
		}
		return nil
	})
	creds := testenv.Credentials(t, srv)
	// Settled: within 5 s the write counters stop, and stay still for 5 s.
	var before map[string]float64
	var moved []string
	deadline := time.Now().Add(15 * time.Second)
	for {
		before = writes(t, srv.URL(), creds, ctrlReg, kaReg)
		time.Sleep(5 * time.Second)
		moved = diff(before, writes(t, srv.URL(), creds, ctrlReg, kaReg))
		if len(moved) == 0 || time.Now().After(deadline) {
			break
		}
		t.Logf("still writing: %v", moved)
	}
	if len(moved) > 0 {
		t.Fatalf("components keep writing after the system converged (a fight between controllers):\n%s", strings.Join(moved, "\n"))
	}
	if len(before) == 0 {
		t.Fatal("no writes_total counters found on /metrics: the test would pass vacuously")
	}
}
