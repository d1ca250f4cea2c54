package ingresscontroller_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	ingresscontroller "github.com/drover/drover/ingress-controller"
	"github.com/drover/drover/internal/lbtest"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/lb"
)

// BenchmarkIngress is make bench-ingress: BENCH_INGRESSES (2,000) Ingresses
// created at once, the time until every one has its status and answers
// through HAProxy; then single changes, the time until each is live (p50,
// p99). The peer, in the same run: Debian's HAProxy started cold with the
// same final config (every host answering), and reloaded with one host
// changed; the ratios are printed beside the figures. Real parts only
// (kube-apiserver, etcd, the engine and its controllers, kubernetes-agent,
// the ingress-controller, drover lb). Every loop is bounded.
func BenchmarkIngress(b *testing.B) {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		b.Fatal("haproxy is missing (make deps installs Debian's)")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("BENCH_INGRESSES")); err == nil && v > 0 {
		n = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	env := lbtest.StartEnv(b, ctx, nil)
	kube, k, eng := env.Kube, env.Kube.Client, env.Engine
	frontHTTP, frontHTTPS := testenv.FreePort(b), testenv.FreePort(b)
	go ingresscontroller.Run(ctx, ingresscontroller.Options{Kube: kube.Config, Engine: eng, Logger: testenv.Logger(), HTTPPort: frontHTTP, HTTPSPort: frontHTTPS, Workers: 8})

	web1 := lbtest.Addrs(b, 1)[0]
	port := testenv.FreePort(b)
	lbtest.Backend(b, "web-1", web1, port)
	if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := k.CoreV1().Services("shop").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(port)}}}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	if _, err := k.DiscoveryV1().EndpointSlices("shop").Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports:     []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(int32(port)), Protocol: ptr(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{web1}, Conditions: discoveryv1.EndpointConditions{Ready: ptr(true)}}},
	}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	ingress := func(i int, host string) *networkingv1.Ingress {
		pt := networkingv1.PathTypePrefix
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ing-%d", i)}, Spec: networkingv1.IngressSpec{IngressClassName: ptr("drover"),
			Rules: []networkingv1.IngressRule{{Host: host, IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
				Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Name: "http"}}}}}}}}}}}
	}
	// Wait for the front to serve (an Ingress of the warm-up).
	if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, ingress(-1, "warm.example.com"), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	testenv.Eventually(b, "the front serving", 2*time.Minute, func() error { _, err := lbtest.Get(frontHTTP, "warm.example.com", "/"); return err })

	b.ResetTimer()
	// 1. n Ingresses at once (16 writers).
	start := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if _, err := k.NetworkingV1().Ingresses("shop").Create(ctx, ingress(i, fmt.Sprintf("h%d.example.com", i)), metav1.CreateOptions{}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	created := time.Since(start)
	live := waitAllLive(b, ctx, k, frontHTTP, n, 5*time.Minute)
	allLive := time.Since(start)
	b.StopTimer()

	// The peer: the same final config, HAProxy started cold.
	cfg, err := frontConfig()
	if err != nil {
		b.Fatal(err)
	}
	peerStart, peerReload, err := bareHAProxy(ctx, haproxy, cfg, n)
	if err != nil {
		b.Fatal(err)
	}

	// 2. One change at a time: a host renamed, until the new name answers.
	var lat []time.Duration
	for i := 0; i < 50 && ctx.Err() == nil; i++ {
		name := fmt.Sprintf("ing-%d", i)
		cur, err := k.NetworkingV1().Ingresses("shop").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		host := fmt.Sprintf("changed-%d.example.com", i)
		cur.Spec.Rules[0].Host = host
		t0 := time.Now()
		if _, err := k.NetworkingV1().Ingresses("shop").Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		for deadline := t0.Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
			if _, err := lbtest.Get(frontHTTP, host, "/"); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: the changed host not live after 30s", name)
			}
		}
		lat = append(lat, time.Since(t0))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) time.Duration { return lat[min(len(lat)-1, int(q*float64(len(lat))))] }
	fmt.Printf("bench-ingress: %d Ingresses created in %.1fs; all with status and live in HAProxy %.1fs after the first (goal < 60s); %d live\n", n, created.Seconds(), allLive.Seconds(), live)
	fmt.Printf("bench-ingress: peer: HAProxy started cold with the same %d hosts, all answering: %.2fs; ratio %.1fx\n", n, peerStart.Seconds(), allLive.Seconds()/peerStart.Seconds())
	fmt.Printf("bench-ingress: one Ingress change to live: p50 %.0f ms, p99 %.0f ms over %d changes (goal p99 < 1000 ms)\n", ms(p(0.5)), ms(p(0.99)), len(lat))
	fmt.Printf("bench-ingress: peer: HAProxy reloaded with one host changed, until it answers: %.0f ms; ratio p50 %.1fx\n", ms(peerReload), ms(p(0.5))/ms(peerReload))
	b.ReportMetric(allLive.Seconds(), "s/all-live")
	b.ReportMetric(ms(p(0.99)), "ms/change-p99")
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func freePortNoTB() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitAllLive polls until every Ingress has a status and its host answers
// through the front; it returns how many are live.
func waitAllLive(b *testing.B, ctx context.Context, k kubernetes.Interface, port, n int, limit time.Duration) int {
	pending := map[int]bool{}
	for i := 0; i < n; i++ {
		pending[i] = true
	}
	deadline := time.Now().Add(limit)
	for len(pending) > 0 && time.Now().Before(deadline) {
		list, err := k.NetworkingV1().Ingresses("shop").List(ctx, metav1.ListOptions{})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		withStatus := map[string]bool{}
		for _, ing := range list.Items {
			if len(ing.Status.LoadBalancer.Ingress) > 0 {
				withStatus[ing.Name] = true
			}
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		ids := make(chan int)
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range ids {
					if !withStatus[fmt.Sprintf("ing-%d", i)] {
						continue
					}
					if _, err := lbtest.Get(port, fmt.Sprintf("h%d.example.com", i), "/"); err == nil {
						mu.Lock()
						delete(pending, i)
						mu.Unlock()
					}
				}
			}()
		}
		mu.Lock()
		keys := make([]int, 0, len(pending))
		for i := range pending {
			keys = append(keys, i)
		}
		mu.Unlock()
		for _, i := range keys {
			ids <- i
		}
		close(ids)
		wg.Wait()
		if len(pending) > 0 {
			time.Sleep(200 * time.Millisecond)
		}
	}
	if len(pending) > 0 {
		b.Fatalf("%d of %d Ingresses not live after %s", len(pending), n, limit)
	}
	return n
}

// frontConfig is the haproxy.cfg the front's drover lb runs.
func frontConfig() (string, error) {
	matches, _ := filepath.Glob("/tmp/drover-test-lb-*/haproxy.cfg")
	best := ""
	for _, m := range matches {
		b, err := os.ReadFile(m)
		if err == nil && len(b) > len(best) {
			best = string(b)
		}
	}
	if best == "" {
		return "", fmt.Errorf("no haproxy.cfg of the front found")
	}
	return best, nil
}

// bareHAProxy starts HAProxy with cfg (its ports moved to new ones) and
// times until all n hosts answer; then a reload with one host renamed,
// until the new name answers.
func bareHAProxy(ctx context.Context, haproxy, cfg string, n int) (time.Duration, time.Duration, error) {
	dir, err := os.MkdirTemp("/tmp", "drover-bench-peer-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(dir)
	// New ports, sockets and no health frontend clash with the front's.
	var port int
	lines := strings.Split(cfg, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(t, "stats socket"):
			lines[i] = "    stats socket " + filepath.Join(dir, "haproxy.sock") + " mode 600 level admin expose-fd listeners"
		case strings.HasPrefix(t, "bind :"):
			p := freePortNoTB()
			if port == 0 && !strings.Contains(t, "ssl") {
				port = p
			}
			lines[i] = fmt.Sprintf("    bind 127.0.0.1:%d", p)
			if strings.Contains(t, " ssl ") {
				lines[i] += t[strings.Index(t, " ssl "):]
			}
		}
	}
	conf := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return 0, 0, err
	}
	master := filepath.Join(dir, "master.sock")
	start := time.Now()
	cmd := exec.CommandContext(ctx, haproxy, "-W", "-S", master, "-f", conf)
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// HAProxy loads a config whole: once one host answers, all do (checked
	// after the clock stops).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(2 * time.Millisecond) {
		if _, err := lbtest.Get(port, "h0.example.com", "/"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("peer: h0.example.com never answered")
		}
	}
	cold := time.Since(start)
	for i := 0; i < n; i++ {
		if _, err := lbtest.Get(port, fmt.Sprintf("h%d.example.com", i), "/"); err != nil {
			return 0, 0, fmt.Errorf("peer: h%d.example.com: %v", i, err)
		}
	}
	changed := strings.Replace(strings.Join(lines, "\n"), "-i h0.example.com ", "-i peer-changed.example.com ", 1)
	if err := os.WriteFile(conf, []byte(changed), 0o600); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if _, err := lb.SocketCommand(master, "reload", 5*time.Second); err != nil {
		return 0, 0, err
	}
	for deadline := t0.Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := lbtest.Get(port, "peer-changed.example.com", "/"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("peer: the reloaded host never answered")
		}
	}
	return cold, time.Since(t0), nil
}
