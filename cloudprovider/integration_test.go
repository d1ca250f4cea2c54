package cloudprovider_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/cloudprovider"
	"github.com/drover/drover/internal/lbtest"
	"github.com/drover/drover/internal/testenv"
)

func ptr[T any](v T) *T { return &v }

// Real kube-apiserver, the engine with its controllers, kubernetes-agent,
// drover cloudprovider and drover lb with real HAProxy: nodes get their
// metadata from hosts and go with them; LoadBalancer Services become LBs
// that carry traffic, follow a port change, and go on a switch to
// ClusterIP, on deletion, and across a restart mid-change.
func TestIntegrationCloudProvider(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, kube-apiserver, haproxy)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := lbtest.StartEnv(t, ctx, map[string]string{corev1.LabelTopologyZone: "z1", corev1.LabelTopologyRegion: "r1"})
	kube, k, eng, edge := env.Kube, env.Kube.Client, env.Engine, env.Edge
	register := func(name, ip string, labels map[string]string) *api.RegisterResponse {
		return env.Register(t, ctx, name, ip, labels)
	}
	var cpReg *prometheus.Registry
	start := func() func() {
		r := prometheus.NewRegistry() // a new process, new counters
		cpReg = r
		cctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := cloudprovider.Run(cctx, cloudprovider.Options{Kube: kube.Config, Engine: eng, Logger: testenv.Logger(), LeaseDuration: 3 * time.Second, NodeMonitorPeriod: time.Second, Registry: r}); err != nil {
				t.Errorf("cloudprovider: %v", err)
			}
		}()
		return func() { stop(); <-done }
	}
	stop := start()
	defer func() { stop() }()

	// A node as a kubelet with --cloud-provider=external registers it.
	mkNode := func(name string, ready corev1.ConditionStatus) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule}}}}
		if _, err := k.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// The node controller may get there first: retry on a conflict.
		testenv.Eventually(t, "node "+name+"'s Ready condition set", 10*time.Second, func() error {
			n, err := k.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
			_, err = k.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	mkNode("edge", corev1.ConditionTrue)
	testenv.Eventually(t, "the node initialized from its host", 30*time.Second, func() error {
		n, err := k.CoreV1().Nodes().Get(ctx, "edge", metav1.GetOptions{})
		if err != nil {
			return err
		}
		uninitialized := false
		for _, tn := range n.Spec.Taints {
			uninitialized = uninitialized || tn.Key == "node.cloudprovider.kubernetes.io/uninitialized"
		}
		if n.Spec.ProviderID != "drover://"+edge.Host.ID || n.Labels[corev1.LabelTopologyZone] != "z1" || n.Labels[corev1.LabelTopologyRegion] != "r1" || uninitialized {
			return fmt.Errorf("providerID %q labels %v taints %v", n.Spec.ProviderID, n.Labels, n.Spec.Taints)
		}
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeInternalIP && a.Address == "127.0.0.1" {
				return nil
			}
		}
		return fmt.Errorf("addresses %v", n.Status.Addresses)
	})

	// A host that goes takes its (NotReady) node with it.
	gone := register("gone", "10.9.9.9", nil)
	mkNode("gone", corev1.ConditionUnknown)
	testenv.Eventually(t, "the second node initialized", 30*time.Second, func() error {
		n, err := k.CoreV1().Nodes().Get(ctx, "gone", metav1.GetOptions{})
		if err == nil && n.Spec.ProviderID != "drover://"+gone.Host.ID {
			err = fmt.Errorf("providerID %q", n.Spec.ProviderID)
		}
		return err
	})
	if _, err := eng.Hosts().Delete(ctx, gone.Host.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the deleted host's node deleted", time.Minute, func() error {
		if _, err := k.CoreV1().Nodes().Get(ctx, "gone", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("node gone is still there")
		}
		return nil
	})

	// Backends: a real HTTP server, the endpoint of a real Service.
	web1 := lbtest.Addrs(t, 1)[0]
	port := testenv.FreePort(t)
	lbtest.Backend(t, "web-1", web1, port)
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p1, p2 := testenv.FreePort(t), testenv.FreePort(t)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Ports:                 []corev1.ServicePort{{Name: "http", Port: int32(p1), TargetPort: intstr.FromInt(port)}}}}
	if _, err := k.CoreV1().Services("shop").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{web1}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lbs := func() (map[string]*api.Service, error) {
		sts, _, err := eng.Stacks().List(ctx, client.ListOptions{Name: cloudprovider.Stack})
		if err != nil || len(sts) != 1 {
			return nil, fmt.Errorf("stack %s: %v", cloudprovider.Stack, err)
		}
		list, _, err := eng.Services().List(ctx, client.ListOptions{StackID: sts[0].ID})
		if err != nil {
			return nil, err
		}
		out := map[string]*api.Service{}
		for i := range list {
			if list[i].DeletionTimestamp == nil {
				if out[list[i].Name] != nil {
					return nil, fmt.Errorf("two LB services named %s", list[i].Name)
				}
				out[list[i].Name] = &list[i]
			}
		}
		return out, nil
	}
	serves := func(what string, p int) {
		t.Helper()
		testenv.Eventually(t, what, time.Minute, func() error {
			got, err := lbtest.Get(p, "any", "/")
			if err == nil && got != "web-1" {
				err = fmt.Errorf("answered by %s", got)
			}
			return err
		})
	}
	serves("the LoadBalancer Service carries traffic to its endpoint", p1)
	status := func(what string, want func([]corev1.LoadBalancerIngress) error) {
		t.Helper()
		testenv.Eventually(t, what, 30*time.Second, func() error {
			s, err := k.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			return want(s.Status.LoadBalancer.Ingress)
		})
	}
	status("status.loadBalancer.ingress from the LB's public endpoints", func(in []corev1.LoadBalancerIngress) error {
		if len(in) != 1 || in[0].IP != "127.0.0.1" || len(in[0].Ports) != 1 || in[0].Ports[0].Port != int32(p1) {
			return fmt.Errorf("status %+v", in)
		}
		return nil
	})
	first, err := lbs()
	if err != nil {
		t.Fatal(err)
	}
	lbID := first["shop-web"].ID

	// A UDP port: balanced by drover lb itself (HAProxy has no UDP).
	echo, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(web1)})
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFromUDP(buf)
			if err != nil {
				return
			}
			echo.WriteToUDP(append([]byte("dns-1 "), buf[:n]...), from)
		}
	}()
	echoPort := echo.LocalAddr().(*net.UDPAddr).Port
	udpPort := testenv.FreePort(t)
	dns := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dns"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Ports:                 []corev1.ServicePort{{Name: "dns", Port: int32(udpPort), Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt(echoPort)}}}}
	if _, err := k.CoreV1().Services("shop").Create(ctx, dns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "dns-1", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: ptr(int32(echoPort)), Protocol: ptr(corev1.ProtocolUDP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{web1}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a UDP LoadBalancer Service answers a datagram", time.Minute, func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: udpPort})
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Second))
		c.Write([]byte("hi"))
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err == nil && string(buf[:n]) != "dns-1 hi" {
			err = fmt.Errorf("answer %q", buf[:n])
		}
		return err
	})
	if err := k.CoreV1().Services("shop").Delete(ctx, "dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	// The port changes: the same LB, updated in place.
	s, _ := k.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
	s.Spec.Ports[0].Port = int32(p2)
	if _, err := k.CoreV1().Services("shop").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	serves("the new port", p2)
	if now, _ := lbs(); now["shop-web"] == nil || now["shop-web"].ID != lbID {
		t.Fatalf("the port change replaced the LB service (was %s): %v", lbID, now)
	}

	// Cluster policy: the nodes' NodePorts are the backends.
	np := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "np"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "np"},
		Ports: []corev1.ServicePort{{Port: int32(testenv.FreePort(t)), TargetPort: intstr.FromInt(8080)}}}}
	np, err = k.CoreV1().Services("shop").Create(ctx, np, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the Cluster-policy LB sends to the nodes' NodePort", 30*time.Second, func() error {
		all, err := lbs()
		if err != nil {
			return err
		}
		l := all["shop-np"]
		if l == nil || l.Spec.LBConfig == nil || len(l.Spec.LBConfig.PortRules) != 1 {
			return fmt.Errorf("LB services %v", all)
		}
		r := l.Spec.LBConfig.PortRules[0]
		if strings.Join(r.Addresses, ",") != "127.0.0.1" || r.TargetPort != int(np.Spec.Ports[0].NodePort) {
			return fmt.Errorf("rule %+v, want 127.0.0.1:%d", r, np.Spec.Ports[0].NodePort)
		}
		return nil
	})
	// A Service of another LB class is not ours.
	other := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "other"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr("example.com/other"),
		Ports: []corev1.ServicePort{{Port: 81}}}}
	if _, err := k.CoreV1().Services("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Switched to ClusterIP: the LB goes, the status is cleared.
	s, _ = k.CoreV1().Services("shop").Get(ctx, "web", metav1.GetOptions{})
	s.Spec.Type, s.Spec.ExternalTrafficPolicy = corev1.ServiceTypeClusterIP, ""
	s.Spec.Ports[0].NodePort = 0
	if _, err := k.CoreV1().Services("shop").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wantLBs := func(what string, names ...string) {
		t.Helper()
		testenv.Eventually(t, what, time.Minute, func() error {
			all, err := lbs()
			if err != nil {
				return err
			}
			if len(all) != len(names) {
				return fmt.Errorf("LB services %v, want %v", keys(all), names)
			}
			for _, n := range names {
				if all[n] == nil {
					return fmt.Errorf("LB services %v, want %v", keys(all), names)
				}
			}
			return nil
		})
	}
	wantLBs("web switched to ClusterIP: its LB gone", "shop-np")
	status("the status cleared", func(in []corev1.LoadBalancerIngress) error {
		if len(in) != 0 {
			return fmt.Errorf("status %+v", in)
		}
		return nil
	})

	// Restarted mid-change: np deleted and late created while it is away.
	stop()
	if err := k.CoreV1().Services("shop").Delete(ctx, "np", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	late := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "late"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal, Ports: []corev1.ServicePort{{Port: int32(testenv.FreePort(t)), TargetPort: intstr.FromInt(port)}}}}
	if _, err := k.CoreV1().Services("shop").Create(ctx, late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	stop = start()
	wantLBs("after a restart: late's LB, np's gone", "shop-late")
	testenv.Eventually(t, "np deleted once its LB was (finalizer)", 30*time.Second, func() error {
		if _, err := k.CoreV1().Services("shop").Get(ctx, "np", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("np is still there")
		}
		return nil
	})

	// Every controller together goes still (the engine's, kubernetes-agent,
	// the provider's status syncer).
	time.Sleep(3 * time.Second)
	before := lbtest.Writes(env.Controllers, env.KubernetesAgent, cpReg)
	if before == 0 {
		t.Fatal("no write counters read: the check below would prove nothing")
	}
	time.Sleep(5 * time.Second)
	if after := lbtest.Writes(env.Controllers, env.KubernetesAgent, cpReg); after != before {
		t.Errorf("controllers kept writing after the last change: %v writes in 5 s", after-before)
	}
}

func keys(m map[string]*api.Service) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
