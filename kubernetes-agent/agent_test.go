package kubernetesagent_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
)

type env struct {
	t      testing.TB
	kube   *testenv.Kube
	dir    string
	srv    *apiserver.Server
	eng    *client.Client
	cancel context.CancelFunc
	done   chan error
}

func setup(t testing.TB, opts testenv.KubeOptions) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test (real kube-apiserver, real engine); run without -short")
	}
	e := &env{t: t, kube: testenv.StartKube(t, opts), dir: t.TempDir()}
	e.srv, e.eng = testenv.StartServer(t, apiserver.Options{DataDir: e.dir})
	e.startAgent()
	t.Cleanup(e.stopAgent)
	return e
}

func (e *env) startAgent() {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	e.cancel, e.done = cancel, make(chan error, 1)
	go func() {
		e.done <- kubernetesagent.Run(ctx, kubernetesagent.Options{Kube: e.kube.Config, Engine: e.eng, Logger: testenv.Logger(), Ready: ready})
	}()
	select {
	case <-ready:
	case err := <-e.done:
		e.t.Fatalf("agent stopped before it was ready: %v", err)
	case <-time.After(60 * time.Second):
		e.t.Fatal("agent not ready within 60s")
	}
}

func (e *env) stopAgent() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	select {
	case err := <-e.done:
		if err != nil {
			e.t.Errorf("agent exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		e.t.Error("agent did not stop within 20s")
	}
	e.cancel = nil
}

// eventually polls f until it returns nil.
func eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after 30s: %v", what, err)
}

// inStep waits until Compare finds nothing out of step.
func (e *env) inStep(what string) {
	e.t.Helper()
	eventually(e.t, what, func() error {
		d, err := kubernetesagent.Compare(context.Background(), e.kube.Client, e.eng)
		if err != nil {
			return err
		}
		if len(d) > 0 {
			return fmt.Errorf("%d differences:\n  %s", len(d), strings.Join(d, "\n  "))
		}
		return nil
	})
}

func (e *env) engineService(ns, kind, name string) (*api.Service, error) {
	l, _, err := e.eng.Services().List(context.Background(), client.ListOptions{LabelSelector: kubernetesagent.LabelKind + "=" + kind + "," + kubernetesagent.LabelNamespace + "=" + ns + "," + kubernetesagent.LabelName + "=" + name})
	if err != nil {
		return nil, err
	}
	if len(l) != 1 {
		return nil, fmt.Errorf("%d engine services for %s %s/%s", len(l), kind, ns, name)
	}
	return &l[0], nil
}

func (e *env) podContainer(ns, name string) (*api.Container, error) {
	l, _, err := e.eng.Containers().List(context.Background(), client.ListOptions{LabelSelector: kubernetesagent.LabelKind + "=Pod," + kubernetesagent.LabelNamespace + "=" + ns + "," + kubernetesagent.LabelName + "=" + name})
	if err != nil {
		return nil, err
	}
	if len(l) != 1 {
		return nil, fmt.Errorf("%d containers for pod %s/%s", len(l), ns, name)
	}
	return &l[0], nil
}

func ptr[T any](v T) *T { return &v }

func pod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func TestIntegrationEveryRow(t *testing.T) {
	e := setup(t, testenv.KubeOptions{})
	ctx := context.Background()
	k := e.kube.Client

	// Namespace -> stack.
	ns, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var stack *api.Stack
	eventually(t, "namespace becomes a stack", func() error {
		l, _, err := e.eng.Stacks().List(ctx, client.ListOptions{Name: "shop"})
		if err != nil || len(l) != 1 {
			return fmt.Errorf("%d stacks, %v", len(l), err)
		}
		stack = &l[0]
		if stack.Spec.Kind != api.StackKubernetes || stack.Spec.Namespace != "shop" || stack.Labels[kubernetesagent.LabelUID] != string(ns.UID) {
			return fmt.Errorf("stack %+v", stack)
		}
		return nil
	})

	// Node <-> host: a host registered with labels, one not valid in Kubernetes.
	host, err := e.eng.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "node1", Labels: map[string]string{"zone": "a", "io.rancher.host.docker_version": "20.10", "note": "has spaces"}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: map[string]string{"kubernetes.io/hostname": "node1"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "host labels reach the node, node labels reach the host", func() error {
		n, err := k.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		h, err := e.eng.Hosts().Get(ctx, host.ID)
		if err != nil {
			return err
		}
		if n.Labels["zone"] != "a" || n.Labels["io.rancher.host.docker_version"] != "20.10" || n.Labels["note"] != "" {
			return fmt.Errorf("node labels %v", n.Labels)
		}
		if h.Status.NodeLabels["kubernetes.io/hostname"] != "node1" || h.Status.NodeLabels["zone"] != "" {
			return fmt.Errorf("host nodeLabels %v", h.Status.NodeLabels)
		}
		if !strings.Contains(h.Status.Message, "note") {
			return fmt.Errorf("the bad label is not reported on the host: %q", h.Status.Message)
		}
		return nil
	})
	eventually(t, "the bad label is reported as a Kubernetes event", func() error {
		evs, err := k.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=node1"})
		if err != nil {
			return err
		}
		for _, ev := range evs.Items {
			if ev.Reason == "HostLabelNotSynced" && strings.Contains(ev.Message, "note") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none about the label", len(evs.Items))
	})
	// The host drops a label it owned: the node loses it; a label the node
	// has of its own stays.
	if _, err := e.eng.Hosts().Patch(ctx, host.ID, map[string]any{"labels": map[string]any{"zone": nil, "note": nil}}); err != nil {
		t.Fatal(err)
	}
	// The host's subnet, allocated by the engine, is the node's podCIDR.
	subnet := host.Status.Subnet
	if subnet == "" {
		t.Fatal("the host got no subnet of the managed network")
	}
	eventually(t, "dropped host label leaves the node; subnet becomes podCIDR", func() error {
		n, err := k.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if _, ok := n.Labels["zone"]; ok || n.Labels["kubernetes.io/hostname"] != "node1" || n.Spec.PodCIDR != subnet {
			return fmt.Errorf("node labels %v podCIDR %q", n.Labels, n.Spec.PodCIDR)
		}
		h, _ := e.eng.Hosts().Get(ctx, host.ID)
		if h.Status.Message != "" {
			return fmt.Errorf("host message not cleared: %q", h.Status.Message)
		}
		return nil
	})
	// Cordon both ways.
	n, _ := k.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	n.Spec.Unschedulable = true
	if _, err := k.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cordoned node makes the host unschedulable", func() error {
		h, err := e.eng.Hosts().Get(ctx, host.ID)
		if err != nil || !h.Spec.Unschedulable {
			return fmt.Errorf("host unschedulable=%v %v", h != nil && h.Spec.Unschedulable, err)
		}
		return nil
	})
	if _, err := e.eng.Hosts().Patch(ctx, host.ID, map[string]any{"spec": map[string]any{"unschedulable": false}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "uncordoned host uncordons the node", func() error {
		n, err := k.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil || n.Spec.Unschedulable {
			return fmt.Errorf("node unschedulable, %v", err)
		}
		return nil
	})

	// Services of every type.
	svcs := []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"app": "web"}}, Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"}, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.org"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "np"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 443}}}},
	}
	for _, s := range svcs {
		if _, err := k.CoreV1().Services("shop").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// Ready endpoints come from EndpointSlices (written here as the
	// endpointslice controller would).
	if _, err := k.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: "web-abc", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(8080)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.42.7.2"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}, NodeName: ptr("node1"), Hostname: ptr("web-0")},
			{Addresses: []string{"10.42.7.3"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}},
			{Addresses: []string{"10.42.7.4"}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(false)}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "services become engine services", func() error {
		web, err := e.engineService("shop", "Service", "web")
		if err != nil {
			return err
		}
		ks, _ := k.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
		if web.Spec.VIP != ks.Spec.ClusterIP || web.Spec.VIP == "" || web.Spec.Selector != "app=web" || len(web.Spec.Ports) != 1 || web.Spec.Ports[0].TargetPort != 8080 || web.Spec.StackID != stack.ID {
			return fmt.Errorf("web: %+v", web.Spec)
		}
		if len(web.Status.Endpoints) != 2 || web.Status.Endpoints[0].IP != "10.42.7.2" || web.Status.Endpoints[0].Hostname != "web-0" || web.Status.Endpoints[0].Ports[0].Port != 8080 {
			return fmt.Errorf("web endpoints: %+v", web.Status.Endpoints)
		}
		db, err := e.engineService("shop", "Service", "db")
		if err != nil || db.Spec.VIP != "" || db.Labels["io.drover.kubernetes.service-type"] != "Headless" {
			return fmt.Errorf("db: %+v %v", db, err)
		}
		ext, err := e.engineService("shop", "Service", "ext")
		if err != nil || ext.Spec.Hostname != "example.org" {
			return fmt.Errorf("ext: %+v %v", ext, err)
		}
		np, err := e.engineService("shop", "Service", "np")
		if err != nil || np.Spec.Ports[0].NodePort == 0 {
			return fmt.Errorf("np: %+v %v", np, err)
		}
		lb, err := e.engineService("shop", "Service", "lb")
		if err != nil || lb.Labels["io.drover.kubernetes.service-type"] != "LoadBalancer" {
			return fmt.Errorf("lb: %+v %v", lb, err)
		}
		return nil
	})

	// Pods -> containers, with the pod IP written through the status
	// subresource as a kubelet would. One name is not a DNS label.
	long := "api." + strings.Repeat("x", 70)
	for _, p := range []*corev1.Pod{pod("shop", "web-1", "node1", map[string]string{"app": "web"}), pod("shop", long, "", nil)} {
		if _, err := k.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	p, _ := k.CoreV1().Pods("shop").Get(ctx, "web-1", metav1.GetOptions{})
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.42.7.2", PodIPs: []corev1.PodIP{{IP: "10.42.7.2"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if _, err := k.CoreV1().Pods("shop").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "pods become containers", func() error {
		c, err := e.podContainer("shop", "web-1")
		if err != nil {
			return err
		}
		if c.Spec.HostID != host.ID || c.Status.PrimaryIP != "10.42.7.2" || c.Status.State != api.ContainerRunning || c.Status.Health != "healthy" || c.Labels["app"] != "web" || c.Spec.StackID != stack.ID {
			return fmt.Errorf("web-1: %+v %+v", c.Spec, c.Status)
		}
		lc, err := e.podContainer("shop", long)
		if err != nil {
			return err
		}
		if len(lc.Name) > 63 || lc.Status.State != api.ContainerPending {
			return fmt.Errorf("long pod: name %q state %s", lc.Name, lc.Status.State)
		}
		return nil
	})

	// Workloads of every kind, with ready counts written through status.
	labels := map[string]string{"app": "w"}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}, RestartPolicy: corev1.RestartPolicyAlways}}
	sel := &metav1.LabelSelector{MatchLabels: labels}
	apps := k.AppsV1()
	dep, err := apps.Deployments("shop").Create(ctx, &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(3)), Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mustCreate(t, func() error {
		_, err := apps.StatefulSets("shop").Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr(int32(2)), Selector: sel, Template: tmpl, ServiceName: "db"}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := apps.DaemonSets("shop").Create(ctx, &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := apps.ReplicaSets("shop").Create(ctx, &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "old"}, Spec: appsv1.ReplicaSetSpec{Replicas: ptr(int32(1)), Selector: sel, Template: tmpl}}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := k.CoreV1().ReplicationControllers("shop").Create(ctx, &corev1.ReplicationController{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Spec: corev1.ReplicationControllerSpec{Replicas: ptr(int32(4)), Selector: labels, Template: &tmpl}}, metav1.CreateOptions{})
		return err
	})
	jobTmpl := tmpl
	jobTmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	mustCreate(t, func() error {
		_, err := k.BatchV1().Jobs("shop").Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate"}, Spec: batchv1.JobSpec{Completions: ptr(int32(2)), Template: jobTmpl}}, metav1.CreateOptions{})
		return err
	})
	dep.Status.Replicas, dep.Status.ReadyReplicas = 3, 2
	if _, err := apps.Deployments("shop").UpdateStatus(ctx, dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "workloads become engine services", func() error {
		for kind, want := range map[string][2]int{"Deployment": {3, 2}, "StatefulSet": {2, 0}, "ReplicaSet": {1, 0}, "ReplicationController": {4, 0}, "Job": {2, 0}, "DaemonSet": {0, 0}} {
			name := map[string]string{"Deployment": "web", "StatefulSet": "db", "ReplicaSet": "old", "ReplicationController": "legacy", "Job": "migrate", "DaemonSet": "agent"}[kind]
			s, err := e.engineService("shop", kind, name)
			if err != nil {
				return err
			}
			if s.Spec.Kind != api.ServiceKubernetesWorkload || s.Status.DesiredReplicas != want[0] || s.Status.ReadyReplicas != want[1] {
				return fmt.Errorf("%s %s: desired %d ready %d, want %v", kind, name, s.Status.DesiredReplicas, s.Status.ReadyReplicas, want)
			}
		}
		return nil
	})
	e.inStep("everything created")

	// Deletions flow through.
	if err := k.CoreV1().Pods("shop").Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	if err := k.CoreV1().Services("shop").Delete(ctx, "np", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := apps.Deployments("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	e.inStep("after deletions")
	// A deleted host deletes its node.
	if _, err := e.eng.Hosts().Delete(ctx, host.ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted host deletes its node", func() error {
		if _, err := k.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("node1 still exists")
		}
		return nil
	})
}

func mustCreate(t *testing.T, f func() error) {
	t.Helper()
	if err := f(); err != nil {
		t.Fatal(err)
	}
}
