package ingresscontroller

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/drover/drover/api"
)

type svcMap map[string]*corev1.Service

func (m svcMap) Get(ns, name string) (*corev1.Service, error) {
	if s, ok := m[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("not found")
}

type secMap map[string]*corev1.Secret

func (m secMap) Get(ns, name string) (*corev1.Secret, error) {
	if s, ok := m[ns+"/"+name]; ok {
		return s, nil
	}
	return nil, fmt.Errorf("not found")
}

func svc(name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

func backendTo(name string, port any) networkingv1.IngressBackend {
	b := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: name}}
	switch p := port.(type) {
	case int:
		b.Service.Port.Number = int32(p)
	case string:
		b.Service.Port.Name = p
	}
	return b
}

func pathRule(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
	return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
}

func path(p string, pt networkingv1.PathType, be networkingv1.IngressBackend) networkingv1.HTTPIngressPath {
	return networkingv1.HTTPIngressPath{Path: p, PathType: &pt, Backend: be}
}

var (
	services = svcMap{
		"shop/web": svc("web", corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}),
		"shop/api": svc("api", corev1.ServicePort{Name: "grpc", Port: 9000, Protocol: corev1.ProtocolTCP},
			corev1.ServicePort{Name: "http", Port: 81, TargetPort: intstr.FromString("web")}),
		"shop/dns": svc("dns", corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}),
	}
	secrets = secMap{
		"shop/tls-a": {ObjectMeta: metav1.ObjectMeta{ResourceVersion: "7"}, Data: map[string][]byte{"tls.crt": []byte("-----BEGIN CERTIFICATE-----\nA"), "tls.key": []byte("-----BEGIN PRIVATE KEY-----\nA")}},
		"shop/bad":   {Data: map[string][]byte{"tls.crt": []byte("nope")}},
	}
)

func TestTranslate(t *testing.T) {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "front", UID: "u1",
		Annotations: map[string]string{"http.port": "8080", AnnotationScale: "2", "io.rancher.scheduler.global": "false"}},
		Spec: networkingv1.IngressSpec{
			DefaultBackend: &networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http"}}},
			TLS:            []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "tls-a"}},
			Rules: []networkingv1.IngressRule{
				pathRule("a.example.com", path("/api", networkingv1.PathTypePrefix, backendTo("api", "http")), path("/exact", networkingv1.PathTypeExact, backendTo("web", 80))),
				pathRule("b.example.com", path("", networkingv1.PathTypeImplementationSpecific, backendTo("api", 9000))),
			},
		}}
	d, err := Translate(ing, services, secrets, Ports{HTTP: 80, HTTPS: 443})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "shop-front" || d.Scale != 2 || d.Global || d.Labels[LabelUID] != "u1" || d.Front != "" {
		t.Fatalf("desired %+v (its own port: an LB of its own)", d)
	}
	var got []string
	for _, r := range d.LB.PortRules {
		got = append(got, fmt.Sprintf("%d/%s %s%s(%s) -> %s:%d%s", r.SourcePort, r.Protocol, r.Hostname, r.Path, r.PathType, r.ServiceID, r.TargetPort, r.TargetPortName))
	}
	want := []string{
		// a.example.com is in spec.tls: served on 443 too.
		"8080/http a.example.com/api(Prefix) -> shop/api:0http",
		"443/https a.example.com/api(Prefix) -> shop/api:0http",
		"8080/http a.example.com/exact(Exact) -> shop/web:8080",
		"443/https a.example.com/exact(Exact) -> shop/web:8080",
		// ImplementationSpecific is Prefix; an empty path is "/".
		"8080/http b.example.com/(Prefix) -> shop/api:9000",
		// The default backend: every host, both ports.
		"8080/http () -> shop/web:8080",
		"443/https () -> shop/web:8080",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("rules:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	c, ok := d.Certs[CertName("shop-front", "tls-a")]
	if !ok || c.Revision != "7" || d.DefaultCert != "shop-front-tls-a" {
		t.Fatalf("certs %+v default %q", d.Certs, d.DefaultCert)
	}
}

// Without ports of its own an Ingress is served by the shared front on the
// front's ports; the annotations that shape an LB of its own are said to
// be ignored.
func TestTranslateShared(t *testing.T) {
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "s", Annotations: map[string]string{AnnotationScale: "3"}},
		Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{pathRule("a", path("/", networkingv1.PathTypePrefix, backendTo("web", 80)))}}}
	d, err := Translate(ing, services, secrets, Ports{HTTP: 8000, HTTPS: 8443})
	if err != nil {
		t.Fatal(err)
	}
	if d.Front != FrontName || d.Scale != 0 || d.Labels["io.drover.lb.front"] != FrontName || len(d.LB.PortRules) != 1 || d.LB.PortRules[0].SourcePort != 8000 {
		t.Fatalf("desired %+v", d)
	}
	if len(d.Warnings) != 1 || !strings.Contains(d.Warnings[0], "metadata.annotations[drover.io/scale] is ignored") {
		t.Fatalf("warnings %q", d.Warnings)
	}
}

// A bad Ingress is refused with the path of the field at fault.
func TestTranslateNamesTheBadField(t *testing.T) {
	base := func(mod func(*networkingv1.Ingress)) *networkingv1.Ingress {
		ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "x"},
			Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{pathRule("a", path("/", networkingv1.PathTypePrefix, backendTo("web", 80)))}}}
		mod(ing)
		return ing
	}
	for _, tc := range []struct {
		name  string
		mod   func(*networkingv1.Ingress)
		field string
	}{
		{"no such service", func(i *networkingv1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Backend = backendTo("nope", 80) }, "spec.rules[0].http.paths[0].backend.service.name"},
		{"no such port name", func(i *networkingv1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Backend = backendTo("web", "grpc") }, "spec.rules[0].http.paths[0].backend.service.port.name"},
		{"no such port number", func(i *networkingv1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Backend = backendTo("web", 81) }, "spec.rules[0].http.paths[0].backend.service.port.number"},
		{"udp port", func(i *networkingv1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Backend = backendTo("dns", 53) }, "spec.rules[0].http.paths[0].backend.service.port"},
		{"missing secret", func(i *networkingv1.Ingress) { i.Spec.TLS = []networkingv1.IngressTLS{{SecretName: "gone"}} }, "spec.tls[0].secretName"},
		{"secret without PEM", func(i *networkingv1.Ingress) { i.Spec.TLS = []networkingv1.IngressTLS{{SecretName: "bad"}} }, "spec.tls[0].secretName"},
		{"bad port annotation", func(i *networkingv1.Ingress) { i.Annotations = map[string]string{"https.port": "99999"} }, "metadata.annotations[https.port]"},
		{"bad scale", func(i *networkingv1.Ingress) { i.Annotations = map[string]string{AnnotationScale: "many"} }, "metadata.annotations[drover.io/scale]"},
		{"path with a space", func(i *networkingv1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Path = "/a b" }, "spec.rules[0].http.paths[0].path"},
		{"nothing to serve", func(i *networkingv1.Ingress) { i.Spec.Rules = nil }, "spec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Translate(base(tc.mod), services, secrets, Ports{HTTP: 80, HTTPS: 443})
			fe, ok := err.(*FieldError)
			if !ok || fe.Field != tc.field {
				t.Fatalf("want a FieldError at %s, got %v", tc.field, err)
			}
		})
	}
}

func TestOurs(t *testing.T) {
	cls := func(name, ctrl string, def bool) *networkingv1.IngressClass {
		ic := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: networkingv1.IngressClassSpec{Controller: ctrl}}
		if def {
			ic.Annotations = map[string]string{networkingv1.AnnotationIsDefaultIngressClass: "true"}
		}
		return ic
	}
	ing := func(class string, ann string) *networkingv1.Ingress {
		i := &networkingv1.Ingress{}
		if class != "" {
			i.Spec.IngressClassName = &class
		}
		if ann != "" {
			i.Annotations = map[string]string{"kubernetes.io/ingress.class": ann}
		}
		return i
	}
	mine, other := cls("drover", ControllerName, false), cls("nginx", "k8s.io/ingress-nginx", false)
	for _, tc := range []struct {
		name    string
		ing     *networkingv1.Ingress
		classes []*networkingv1.IngressClass
		want    bool
	}{
		{"our class", ing("drover", ""), []*networkingv1.IngressClass{mine, other}, true},
		{"another class", ing("nginx", ""), []*networkingv1.IngressClass{mine, other}, false},
		{"a class that does not exist", ing("gone", ""), []*networkingv1.IngressClass{mine}, false},
		{"legacy annotation drover", ing("", "drover"), nil, true},
		{"legacy annotation rancher", ing("", "rancher"), nil, true},
		{"legacy annotation nginx", ing("", "nginx"), []*networkingv1.IngressClass{cls("drover", ControllerName, true)}, false},
		{"no class, ours is default", ing("", ""), []*networkingv1.IngressClass{cls("drover", ControllerName, true), other}, true},
		{"no class, another is default", ing("", ""), []*networkingv1.IngressClass{mine, cls("nginx", "k8s.io/ingress-nginx", true)}, false},
		{"no class, no default", ing("", ""), []*networkingv1.IngressClass{mine}, false},
	} {
		if got := Ours(tc.ing, tc.classes); got != tc.want {
			t.Errorf("%s: Ours = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLoadBalancerStatus(t *testing.T) {
	got := LoadBalancerStatus([]api.PublicEndpoint{{IP: "10.0.0.2", Port: 443}, {IP: "10.0.0.1", Port: 80}, {IP: "10.0.0.2", Port: 80}, {Port: 80}})
	if len(got) != 2 || got[0].IP != "10.0.0.1" || len(got[1].Ports) != 2 || got[1].Ports[0].Port != 80 {
		t.Fatalf("%+v", got)
	}
}

func TestLBNameIsALabel(t *testing.T) {
	long := strings.Repeat("n", 40)
	a, b := LBName(long, long+"a"), LBName(long, long+"b")
	if len(a) > 63 || a == b {
		t.Fatalf("%q %q", a, b)
	}
	if LBName("shop", "front") != "shop-front" || LBName("shop", "front.v2") == LBName("shop", "front-v2") {
		t.Fatal(LBName("shop", "front.v2"))
	}
}
