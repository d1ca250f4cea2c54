package kubernetesagent

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover/drover/api"
)

func TestEngineName(t *testing.T) {
	long := strings.Repeat("a", 80)
	cases := map[string]func(string) bool{
		"web":             func(n string) bool { return n == "web" },
		"api.v2":          func(n string) bool { return strings.HasPrefix(n, "api-v2-") && len(n) <= 63 },
		long:              func(n string) bool { return len(n) <= 63 && dnsLabel.MatchString(n) },
		long + "b":        func(n string) bool { return n != engineName(long) },
		"Upper":           func(n string) bool { return dnsLabel.MatchString(n) },
		"x." + long + "-": func(n string) bool { return dnsLabel.MatchString(n) },
	}
	for in, ok := range cases {
		if got := engineName(in); !ok(got) || !dnsLabel.MatchString(got) {
			t.Errorf("engineName(%q) = %q", in, got)
		}
	}
	if workloadEngineName("Deployment", "web") != "web-deploy" {
		t.Errorf("workload name: %q", workloadEngineName("Deployment", "web"))
	}
}

func TestSelectorStringIsSortedAndParses(t *testing.T) {
	s := selectorString(map[string]string{"tier": "front", "app": "web"})
	if s != "app=web,tier=front" {
		t.Fatalf("got %q", s)
	}
	if _, err := api.ParseSelector(s); err != nil {
		t.Fatal(err)
	}
}

func TestDesiredContainerStates(t *testing.T) {
	cases := []struct {
		phase       corev1.PodPhase
		node        string
		ready       bool
		state, heal string
	}{
		{corev1.PodPending, "", false, api.ContainerPending, "initializing"},
		{corev1.PodPending, "n1", false, api.ContainerStarting, "initializing"},
		{corev1.PodRunning, "n1", true, api.ContainerRunning, "healthy"},
		{corev1.PodRunning, "n1", false, api.ContainerRunning, "unhealthy"},
		{corev1.PodSucceeded, "n1", false, api.ContainerStopped, ""},
		{corev1.PodFailed, "n1", false, api.ContainerError, ""},
	}
	for _, tc := range cases {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "u1", Labels: map[string]string{"app": "x"}}, Spec: corev1.PodSpec{NodeName: tc.node}}
		p.Status.Phase = tc.phase
		if tc.ready {
			p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		}
		c := desiredContainer(p, "st-1", "")
		if c.Status.State != tc.state || c.Status.Health != tc.heal {
			t.Errorf("%s node=%q ready=%v: state %s health %s, want %s %s", tc.phase, tc.node, tc.ready, c.Status.State, c.Status.Health, tc.state, tc.heal)
		}
		if c.Labels[LabelUID] != "u1" || c.Labels["app"] != "x" || c.Labels[LabelName] != "p" || c.Spec.Kind != api.ContainerKindPod {
			t.Errorf("labels/kind: %v %s", c.Labels, c.Spec.Kind)
		}
	}
}

func TestDesiredServiceEndpoints(t *testing.T) {
	tr, fa := true, false
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", UID: "u"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone}}
	slices := []*discoveryv1.EndpointSlice{{Endpoints: []discoveryv1.Endpoint{
		{Addresses: []string{"10.0.0.2"}, Conditions: discoveryv1.EndpointConditions{Ready: &tr}},
		{Addresses: []string{"10.0.0.1"}},
		{Addresses: []string{"10.0.0.3"}, Conditions: discoveryv1.EndpointConditions{Ready: &fa}},
	}}}
	s := desiredService(svc, slices, "st")
	if s.Spec.VIP != "" || len(s.Status.Endpoints) != 2 || s.Status.Endpoints[0].IP != "10.0.0.1" {
		t.Fatalf("headless service: vip %q endpoints %+v", s.Spec.VIP, s.Status.Endpoints)
	}
}
