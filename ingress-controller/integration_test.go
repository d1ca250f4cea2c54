package ingresscontroller_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/drover/drover/client"
	ingresscontroller "github.com/drover/drover/ingress-controller"
	"github.com/drover/drover/internal/lbtest"
	"github.com/drover/drover/internal/testenv"
)

func ptr[T any](v T) *T { return &v }

// tlsSecret is a self-signed certificate for host, as a kubernetes.io/tls Secret.
func tlsSecret(t testing.TB, name, host string) *corev1.Secret {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}),
	}}
}

// servedName is the certificate name the LB answers a TLS hello for sni with.
func servedName(port int, sni string) (string, error) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// The whole path, with real parts only: kube-apiserver and its etcd, the
// engine and every controller, kubernetes-agent (endpoints into the
// engine), the ingress-controller, and drover lb running real HAProxy.
func TestIntegrationIngress(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, kube-apiserver, haproxy)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := lbtest.StartEnv(t, ctx, nil)
	kube, k, eng, kaReg := env.Kube, env.Kube.Client, env.Engine, env.KubernetesAgent
	var regs []*prometheus.Registry
	frontHTTP, frontHTTPS := testenv.FreePort(t), testenv.FreePort(t)
	startIC := func() context.CancelFunc {
		r := prometheus.NewRegistry() // a new process, new counters
		regs = append(regs, r)
		ictx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := ingresscontroller.Run(ictx, ingresscontroller.Options{Kube: kube.Config, Engine: eng, Logger: testenv.Logger(), Registry: r, LeaseDuration: 3 * time.Second,
				HTTPPort: frontHTTP, HTTPSPort: frontHTTPS}); err != nil {
				t.Errorf("ingress-controller: %v", err)
			}
		}()
		return func() { stop(); <-done }
	}
	// Two replicas: one leads, the other waits (nothing done twice).
	stopIC := startIC()
	defer func() { stopIC() }()
	stopIC2 := startIC()
	defer func() { stopIC2() }()

	// Backends: real HTTP servers, the endpoints of real Services. An
	// EndpointSlice refuses 127/8: the servers listen on addresses the
	// test puts on lo (local delivery only).
	addrs := lbtest.Addrs(t, 2)
	web1, api1 := addrs[0], addrs[1]
	port := testenv.FreePort(t)
	lbtest.Backend(t, "web-1", web1, port)
	lbtest.Backend(t, "api-1", api1, port)
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for name, ip := range map[string]string{"web": web1, "api": api1} {
		sp := corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromInt(port)}
		if name == "api" {
			sp = corev1.ServicePort{Name: "http", Port: 81, TargetPort: intstr.FromString("web")}
		}
		if _, err := k.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{sp}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := k.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range []string{"a", "b", "c"} {
		if _, err := k.CoreV1().Secrets("shop").Create(ctx, tlsSecret(t, "tls-"+h, h+".example.com"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	httpPort, httpsPort := testenv.FreePort(t), testenv.FreePort(t)
	pt := func(p networkingv1.PathType) *networkingv1.PathType { return &p }
	be := func(svc string, port any) networkingv1.IngressBackend {
		b := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: svc}}
		if n, ok := port.(int); ok {
			b.Service.Port.Number = int32(n)
		} else {
			b.Service.Port.Name = port.(string)
		}
		return b
	}
	rule := func(host string, paths ...networkingv1.HTTPIngressPath) networkingv1.IngressRule {
		return networkingv1.IngressRule{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: paths}}}
	}
	front := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "front", Annotations: map[string]string{
		ingresscontroller.AnnotationHTTPPort: fmt.Sprint(httpPort), "https.port": fmt.Sprint(httpsPort)}},
		Spec: networkingv1.IngressSpec{
			IngressClassName: ptr("drover"),
			DefaultBackend:   ptr(be("web", 80)),
			TLS: []networkingv1.IngressTLS{{Hosts: []string{"a.example.com"}, SecretName: "tls-a"}, {Hosts: []string{"b.example.com"}, SecretName: "tls-b"},
				{Hosts: []string{"c.example.com"}, SecretName: "tls-c"}},
			Rules: []networkingv1.IngressRule{
				rule("a.example.com",
					networkingv1.HTTPIngressPath{Path: "/api", PathType: pt(networkingv1.PathTypePrefix), Backend: be("api", "http")},
					networkingv1.HTTPIngressPath{Path: "/exact", PathType: pt(networkingv1.PathTypeExact), Backend: be("api", 81)}),
				rule("b.example.com", networkingv1.HTTPIngressPath{Path: "/", PathType: pt(networkingv1.PathTypeImplementationSpecific), Backend: be("api", 81)}),
			},
		}}
	start := time.Now()
	if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, front, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	routes := func(what string, want map[string]string) {
		t.Helper()
		testenv.Eventually(t, what, time.Minute, func() error {
			for hp, backend := range want {
				host, path, _ := strings.Cut(hp, " ")
				got, err := lbtest.Get(httpPort, host, path)
				if err != nil {
					return err
				}
				if got != backend {
					return fmt.Errorf("%s %s answered by %s, want %s", host, path, got, backend)
				}
			}
			return nil
		})
	}
	routes("rules, path types and the default backend live in HAProxy", map[string]string{
		"a.example.com /api":         "api-1", // Prefix by path element
		"a.example.com /api/v1":      "api-1",
		"a.example.com /apiv1":       "web-1", // not the element /api: the default backend
		"a.example.com /exact":       "api-1", // Exact
		"a.example.com /exact/more":  "web-1",
		"b.example.com /anything":    "api-1", // ImplementationSpecific is Prefix
		"other.example.com /api":     "web-1", // no rule for the host
		"a.example.com:8080 /api/v1": "api-1", // a port in Host is not part of the name
	})
	t.Logf("Ingress live in HAProxy %.1fs after it was created", time.Since(start).Seconds())
	testenv.Eventually(t, "TLS with SNI for three hosts", 30*time.Second, func() error {
		for _, h := range []string{"a", "b", "c"} {
			cn, err := servedName(httpsPort, h+".example.com")
			if err != nil || cn != h+".example.com" {
				return fmt.Errorf("SNI %s.example.com: certificate %q (%v)", h, cn, err)
			}
		}
		return nil
	})
	testenv.Eventually(t, "status.loadBalancer.ingress from the LB's public endpoints", 30*time.Second, func() error {
		ing, err := k.NetworkingV1().Ingresses("shop").Get(ctx, "front", metav1.GetOptions{})
		if err != nil {
			return err
		}
		lbi := ing.Status.LoadBalancer.Ingress
		if len(lbi) != 1 || lbi[0].IP != "127.0.0.1" || len(lbi[0].Ports) != 2 {
			return fmt.Errorf("status %+v", lbi)
		}
		return nil
	})

	// Two Ingresses without ports of their own: both served by the one
	// shared LB (the front) on its ports, TLS by SNI there too.
	for _, sh := range []struct{ name, host, svc string }{{"shared-a", "s1.example.com", "api"}, {"shared-b", "s2.example.com", "web"}} {
		ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: sh.name}, Spec: networkingv1.IngressSpec{IngressClassName: ptr("drover"),
			Rules: []networkingv1.IngressRule{rule(sh.host, networkingv1.HTTPIngressPath{Path: "/", PathType: pt(networkingv1.PathTypePrefix), Backend: be(sh.svc, "http")})}}}
		if sh.name == "shared-a" {
			ing.Spec.TLS = []networkingv1.IngressTLS{{Hosts: []string{sh.host}, SecretName: "tls-a"}}
		}
		if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, "both shared Ingresses live on the front", time.Minute, func() error {
		for host, want := range map[string]string{"s1.example.com": "api-1", "s2.example.com": "web-1"} {
			got, err := lbtest.Get(frontHTTP, host, "/x")
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("%s answered by %s, want %s", host, got, want)
			}
		}
		if cn, err := servedName(frontHTTPS, "a.example.com"); err != nil || cn != "a.example.com" {
			return fmt.Errorf("the front's TLS: %q %v", cn, err)
		}
		return nil
	})
	testenv.Eventually(t, "shared Ingresses' status: the front's address and ports", 30*time.Second, func() error {
		for name, ports := range map[string]int{"shared-a": 2, "shared-b": 1} {
			ing, err := k.NetworkingV1().Ingresses("shop").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			lbi := ing.Status.LoadBalancer.Ingress
			if len(lbi) != 1 || lbi[0].IP != "127.0.0.1" || len(lbi[0].Ports) != ports || (lbi[0].Ports[0].Port != int32(frontHTTP) && lbi[0].Ports[len(lbi[0].Ports)-1].Port != int32(frontHTTP)) {
				return fmt.Errorf("%s: status %+v", name, lbi)
			}
		}
		return nil
	})

	// An edit: /api goes to web now; a TLS secret changes its certificate.
	ing, _ := k.NetworkingV1().Ingresses("shop").Get(ctx, "front", metav1.GetOptions{})
	ing.Spec.Rules[0].HTTP.Paths[0].Backend = be("web", "http")
	if _, err := k.NetworkingV1().Ingresses("shop").Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	routes("the edited rule", map[string]string{"a.example.com /api/v1": "web-1", "a.example.com /exact": "api-1"})
	// (A certificate for another name: what the LB serves shows it changed.)
	fresh := tlsSecret(t, "tls-c", "c2.example.com")
	sec, _ := k.CoreV1().Secrets("shop").Get(ctx, "tls-c", metav1.GetOptions{})
	sec.Data = fresh.Data
	if _, err := k.CoreV1().Secrets("shop").Update(ctx, sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a changed TLS secret reaches HAProxy", 30*time.Second, func() error {
		if cn, err := servedName(httpsPort, "c2.example.com"); err != nil || cn != "c2.example.com" {
			return fmt.Errorf("SNI c2.example.com: certificate %q (%v)", cn, err)
		}
		return nil
	})

	// A bad Ingress: an Event names the field; the good one keeps working.
	bad := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "broken"}, Spec: networkingv1.IngressSpec{IngressClassName: ptr("drover"),
		Rules: []networkingv1.IngressRule{rule("x.example.com", networkingv1.HTTPIngressPath{Path: "/", PathType: pt(networkingv1.PathTypePrefix), Backend: be("nope", 80)})}}}
	if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, bad, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "an Event on the bad Ingress naming the field", 30*time.Second, func() error {
		evs, err := k.CoreV1().Events("shop").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=broken"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "InvalidIngress" && strings.Contains(e.Message, "spec.rules[0].http.paths[0].backend.service.name") {
				return nil
			}
		}
		return fmt.Errorf("%d events, none InvalidIngress naming the field", len(evs.Items))
	})
	routes("the good Ingress keeps working", map[string]string{"a.example.com /exact": "api-1"})

	// IngressClass: another controller's class is not ours; switched to
	// ours it gets an LB; switched away the LB goes.
	other := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "other", Annotations: map[string]string{ingresscontroller.AnnotationHTTPPort: fmt.Sprint(testenv.FreePort(t))}},
		Spec: networkingv1.IngressSpec{IngressClassName: ptr("nginx"), DefaultBackend: ptr(be("web", 80))}}
	if _, err := k.NetworkingV1().IngressClasses().Create(ctx, &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "nginx"}, Spec: networkingv1.IngressClassSpec{Controller: "k8s.io/ingress-nginx"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lbServices := func() (map[string]int, error) {
		sts, _, err := eng.Stacks().List(ctx, client.ListOptions{Name: ingresscontroller.Stack})
		if err != nil || len(sts) != 1 {
			return nil, fmt.Errorf("stack %s: %v", ingresscontroller.Stack, err)
		}
		svcs, _, err := eng.Services().List(ctx, client.ListOptions{StackID: sts[0].ID})
		if err != nil {
			return nil, err
		}
		out := map[string]int{}
		for _, s := range svcs {
			if s.DeletionTimestamp == nil {
				out[s.Name]++
			}
		}
		return out, nil
	}
	wantLBs := func(what string, names ...string) {
		t.Helper()
		testenv.Eventually(t, what, 30*time.Second, func() error {
			got, err := lbServices()
			if err != nil {
				return err
			}
			if len(got) != len(names) {
				return fmt.Errorf("LB services %v, want %v", got, names)
			}
			for _, n := range names {
				if got[n] != 1 {
					return fmt.Errorf("LB services %v, want %v", got, names)
				}
			}
			return nil
		})
	}
	wantLBs("only front has an LB (broken is bad, other is nginx's)", "shop-front", "shop-shared-a", "shop-shared-b", ingresscontroller.FrontName)
	setClass := func(name, class string) {
		ing, err := k.NetworkingV1().Ingresses("shop").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ing.Spec.IngressClassName = ptr(class)
		if _, err := k.NetworkingV1().Ingresses("shop").Update(ctx, ing, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setClass("other", "drover")
	wantLBs("other switched to drover", "shop-front", "shop-other", "shop-shared-a", "shop-shared-b", ingresscontroller.FrontName)
	setClass("other", "nginx")
	wantLBs("other switched back to nginx", "shop-front", "shop-shared-a", "shop-shared-b", ingresscontroller.FrontName)

	// Restarted mid-change: what changed while it was away converges,
	// nothing duplicated, nothing left behind.
	stopIC()
	setClass("other", "drover")
	if err := k.NetworkingV1().Ingresses("shop").Delete(ctx, "front", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := k.NetworkingV1().Ingresses("shop").Delete(ctx, "shared-b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	stopIC = startIC()
	wantLBs("after a restart: other's LB, front's and shared-b's gone", "shop-other", "shop-shared-a", ingresscontroller.FrontName)
	testenv.Eventually(t, "shared-b's host no longer served by the front", 30*time.Second, func() error {
		if got, err := lbtest.Get(frontHTTP, "s2.example.com", "/x"); err == nil {
			return fmt.Errorf("s2.example.com still answered by %s", got)
		}
		return nil
	})
	testenv.Eventually(t, "front's certificates deleted with it", 30*time.Second, func() error {
		certs, _, err := eng.Certificates().List(ctx, client.ListOptions{})
		if err != nil {
			return err
		}
		for _, c := range certs {
			if c.Labels[ingresscontroller.LabelName] == "front" {
				return fmt.Errorf("certificate %s is still there", c.Name)
			}
		}
		return nil
	})

	// Every controller together goes still: no write undoes another's.
	writes := func() float64 { return lbtest.Writes(append(regs, kaReg, env.Controllers)...) }
	time.Sleep(3 * time.Second)
	before := writes()
	if before == 0 {
		t.Fatal("no write counters read: the check below would prove nothing")
	}
	time.Sleep(5 * time.Second)
	if after := writes(); after != before {
		t.Errorf("controllers kept writing after the last change (the engine's, kubernetes-agent, the ingress-controller): %v writes in 5 s", after-before)
	}
}
