package cloudprovider

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/drover/drover/api"
)

func node(name, ip string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

func TestTranslate(t *testing.T) {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u1"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 30080, TargetPort: intstr.FromInt(8080)}, {Name: "https", Port: 443, NodePort: 30443, TargetPort: intstr.FromString("tls")}}}}
	d, err := Translate(svc, []*corev1.Node{node("n2", "10.0.0.2"), node("n1", "10.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "shop-web" || d.Scale != 1 || d.Labels[LabelUID] != "u1" || len(d.Rules) != 2 {
		t.Fatalf("%+v", d)
	}
	// Cluster: the nodes' NodePorts.
	if r := d.Rules[0]; r.SourcePort != 80 || r.Protocol != "tcp" || strings.Join(r.Addresses, ",") != "10.0.0.1,10.0.0.2" || r.TargetPort != 30080 || r.ServiceID != "" {
		t.Fatalf("rule 0: %+v", r)
	}
	// Local: the ready endpoints, by the Service port's name when the
	// target port is named.
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	d, err = Translate(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := d.Rules[0]; r.ServiceID != "shop/web" || r.TargetPort != 8080 || len(r.Addresses) != 0 {
		t.Fatalf("local rule 0: %+v", r)
	}
	if r := d.Rules[1]; r.TargetPortName != "https" {
		t.Fatalf("local rule 1: %+v", r)
	}
	// UDP is a udp rule (drover lb balances it); SCTP is refused, naming the port.
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt(5353)})
	d, err = Translate(svc, nil)
	if err != nil || d.Rules[2].Protocol != "udp" || d.Rules[2].TargetPort != 5353 {
		t.Fatalf("UDP: %+v %v", d, err)
	}
	svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Port: 9, Protocol: corev1.ProtocolSCTP})
	if _, err := Translate(svc, nil); err == nil || !strings.Contains(err.Error(), "spec.ports[3].protocol") {
		t.Fatalf("SCTP: %v", err)
	}
	// Cluster with no node address: said, not an empty LB.
	svc.Spec.Ports = svc.Spec.Ports[:1]
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	if _, err := Translate(svc, nil); err == nil || !strings.Contains(err.Error(), "no node") {
		t.Fatalf("no nodes: %v", err)
	}
}

func TestStatusAndMetadata(t *testing.T) {
	st := Status([]api.PublicEndpoint{{IP: "10.0.0.2", Port: 443}, {IP: "10.0.0.1", Port: 80}, {IP: "10.0.0.2", Port: 80}})
	if len(st.Ingress) != 2 || st.Ingress[0].IP != "10.0.0.1" || len(st.Ingress[1].Ports) != 2 || *st.Ingress[0].IPMode != corev1.LoadBalancerIPModeProxy {
		t.Fatalf("%+v", st)
	}
	h := &api.Host{Meta: api.Meta{ID: "h-1", Name: "edge", Labels: map[string]string{corev1.LabelTopologyZone: "z1", corev1.LabelTopologyRegion: "r1"}}, Status: api.HostStatus{AgentIP: "10.0.0.9"}}
	md := Metadata(h)
	if md.ProviderID != "drover://h-1" || md.Zone != "z1" || md.Region != "r1" || md.NodeAddresses[0].Address != "10.0.0.9" || md.NodeAddresses[0].Type != corev1.NodeInternalIP {
		t.Fatalf("%+v", md)
	}
}
