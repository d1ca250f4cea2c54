package kubernetesagent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

// Stop the agent; change both sides; start it again: the two sides match
// exactly, with nothing duplicated and nothing left over.
func TestIntegrationConvergesAfterDowntime(t *testing.T) {
	e := setup(t, testenv.KubeOptions{ControllerManager: true})
	ctx := context.Background()
	k := e.kube.Client
	for _, ns := range []string{"keep", "doomed"} {
		if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if _, err := k.CoreV1().Pods(ns).Create(ctx, pod(ns, fmt.Sprintf("p%d", i), "", map[string]string{"i": fmt.Sprint(i)}), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := k.CoreV1().Services("keep").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	host, err := e.eng.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "n1", Labels: map[string]string{"zone": "a"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.inStep("before the outage")

	e.stopAgent()
	// Kubernetes side: a namespace goes (with its pods), a pod goes, a pod
	// comes, a service changes, the node is cordoned.
	if err := k.CoreV1().Namespaces().Delete(ctx, "doomed", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.CoreV1().Pods("keep").Delete(ctx, "p0", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.CoreV1().Pods("keep").Create(ctx, pod("keep", "p9", "n1", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc, _ := k.CoreV1().Services("keep").Get(ctx, "web", metav1.GetOptions{})
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443})
	svc.Spec.Ports[0].Name = "http"
	if _, err := k.CoreV1().Services("keep").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	n, _ := k.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	n.Spec.Unschedulable = true
	if _, err := k.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Engine side: a pod's container removed behind the agent's back, a
	// host label changed.
	c, err := e.podContainer("keep", "p1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Containers().Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.eng.Hosts().Patch(ctx, host.ID, map[string]any{"labels": map[string]any{"zone": "b", "rack": "r1"}}); err != nil {
		t.Fatal(err)
	}
	// The namespace must be gone on the Kubernetes side before we look.
	eventually(t, "namespace deleted by the namespace controller", func() error {
		if _, err := k.CoreV1().Namespaces().Get(ctx, "doomed", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("namespace doomed still terminating")
		}
		return nil
	})

	e.startAgent()
	e.inStep("after the outage")
	n, _ = k.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if n.Labels["zone"] != "b" || n.Labels["rack"] != "r1" {
		t.Fatalf("node labels %v after the host changed them during the outage", n.Labels)
	}
	if h, _ := e.eng.Hosts().Get(ctx, host.ID); !h.Spec.Unschedulable {
		t.Fatal("the cordon made during the outage did not reach the host")
	}
}

// Restart kube-apiserver, then the engine, under a running agent: it
// recovers by itself each time.
func TestIntegrationRecoversFromRestarts(t *testing.T) {
	e := setup(t, testenv.KubeOptions{})
	ctx := context.Background()
	k := e.kube.Client
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "app"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.inStep("start")

	e.kube.StopAPIServer()
	time.Sleep(time.Second)
	e.kube.StartAPIServer()
	if _, err := k.CoreV1().Pods("app").Create(ctx, pod("app", "after-kube-restart", "", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.inStep("after a kube-apiserver restart")

	addr := strings.TrimPrefix(e.srv.URL(), "http://")
	e.srv.Close()
	// While the engine is down, Kubernetes changes.
	if _, err := k.CoreV1().Pods("app").Create(ctx, pod("app", "during-engine-outage", "", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	e.srv, _ = testenv.StartServer(t, apiserver.Options{DataDir: e.dir, Listen: addr})
	if _, err := k.CoreV1().Pods("app").Create(ctx, pod("app", "after-engine-restart", "", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.inStep("after an engine restart")
}
