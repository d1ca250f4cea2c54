// Package e2e runs drover up on hosts made of privileged containers (as
// kind does) and checks the cluster from outside and from inside its pods.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/kind"
)

const version = "e2e"

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// buildImages makes drover's images at tag e2e (only what changed) and the
// test's workload image.
func buildImages(t *testing.T) {
	t.Helper()
	root := repoRoot()
	if _, err := os.Stat(filepath.Join(root, "bin", "kube")); err != nil {
		t.Fatal("bin/kube is missing: make kube (make test builds it)")
	}
	cmd := exec.Command("go", "run", "./images/build", "-version", version, "-kube", "bin/kube")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make images: %v\n%s", err, out)
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "httpd"), "./test/e2e/httpd")
	build.Dir, build.Env = root, append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building httpd: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM scratch\nCOPY httpd /httpd\nENTRYPOINT [\"/httpd\"]\n"), 0o644)
	if out, err := exec.Command("docker", "build", "-q", "-t", "drover/e2e-httpd:"+version, dir).CombinedOutput(); err != nil {
		t.Fatalf("docker build httpd: %v\n%s", err, out)
	}
}

// TestIntegrationUp: drover up on one host with every role, drover up
// --join on a worker, then the cluster works as a cluster should.
func TestIntegrationUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test (Docker Engine, privileged host containers); run without -short")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is missing; the end-to-end test needs a Docker Engine")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	buildImages(t)
	imgDir, err := os.MkdirTemp("/var/tmp", "drover-e2e-images-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(imgDir)
	if err := kind.SaveImages(ctx, imgDir, "drover/drover:"+version, "drover/node:"+version, "drover/etcd:"+version, "drover/pause:"+version, "drover/lb-haproxy:"+version); err != nil {
		t.Fatal(err)
	}
	cl := &kind.Cluster{Name: "drover-e2e", Image: "drover/node:" + version, Subnet: "172.31.250.0/24", Gateway: "172.31.250.1", Images: imgDir, Log: t.Logf}
	if err := cl.Create(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			dumpHosts(t, cl)
		}
		cl.Destroy()
	}()
	h1, err := cl.AddHost(ctx, "h1", "172.31.250.11", true)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := cl.AddHost(ctx, "h2", "172.31.250.12", false)
	if err != nil {
		t.Fatal(err)
	}

	// The first host: every role.
	start := time.Now()
	out, err := h1.Exec(ctx, "drover", "up", "--name", "h1", "--ip", h1.IP, "--timeout", "10m")
	t.Logf("drover up on h1 (%.1fs):\n%s", time.Since(start).Seconds(), out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"loading /var/lib/drover/images/drover-images.tar", "node h1 is Ready", "DNS answers kubernetes.default.svc.cluster.local", "drover up --join http://172.31.250.11:8080 --token "} {
		if !strings.Contains(out, want) {
			t.Fatalf("drover up's output lacks %q", want)
		}
	}
	eng := engineClient(t, ctx, h1)
	kc := kubeClient(t, ctx, h1)

	// A worker joins with the token drover up printed.
	tok := regexp.MustCompile(`--token (\S+)`).FindStringSubmatch(out)[1]
	start = time.Now()
	out, err = h2.Exec(ctx, "drover", "up", "--join", "http://172.31.250.11:8080", "--token", tok, "--name", "h2", "--ip", h2.IP, "--timeout", "10m")
	t.Logf("drover up --join on h2 (%.1fs):\n%s", time.Since(start).Seconds(), out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "loading drover/drover:"+version+" from the engine") {
		t.Errorf("the joining host did not load the agent's image from the engine")
	}
	eventually(t, ctx, 5*time.Minute, "both nodes Ready", func() error { return nodesReady(ctx, kc, "h1", "h2") })
	t.Logf("h2 Ready %.1fs after drover up --join started", time.Since(start).Seconds())

	// drover up again changes nothing.
	before := revisions(t, ctx, eng)
	out, err = h1.Exec(ctx, "drover", "up", "--name", "h1", "--ip", h1.IP, "--timeout", "5m")
	if err != nil {
		t.Fatalf("drover up again: %v\n%s", err, out)
	}
	for _, bad := range []string{"created", "updated", "starting drover", "put into the engine", "PKI made"} {
		if strings.Contains(out, bad) {
			t.Errorf("drover up run again did something (%q):\n%s", bad, out)
		}
	}
	if after := revisions(t, ctx, eng); after != before {
		t.Errorf("drover up run again changed the engine's stacks or services:\nbefore %s\nafter  %s", before, after)
	}

	// A Deployment of 4 replicas of a locally built server spreads over
	// both hosts; its image comes from the engine (no registry).
	archive, err := exec.CommandContext(ctx, "docker", "save", "drover/e2e-httpd:"+version).Output()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.PushImage(ctx, "drover/e2e-httpd:"+version, strings.NewReader(string(archive))); err != nil {
		t.Fatal(err)
	}
	deployHTTPD(t, ctx, kc)
	var pods []corev1.Pod
	eventually(t, ctx, 4*time.Minute, "4 httpd pods running on both nodes", func() error {
		list, err := kc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=httpd"})
		if err != nil {
			return err
		}
		nodes := map[string]int{}
		running := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" {
				running++
				nodes[p.Spec.NodeName]++
			}
		}
		if running != 4 || nodes["h1"] == 0 || nodes["h2"] == 0 {
			return fmt.Errorf("%d running, by node %v", running, nodes)
		}
		pods = list.Items
		return nil
	})
	on := func(node string) corev1.Pod {
		for _, p := range pods {
			if p.Spec.NodeName == node {
				return p
			}
		}
		t.Fatalf("no pod on %s", node)
		return corev1.Pod{}
	}
	p1, p2 := on("h1"), on("h2")
	// Ask a pod (through the apiserver's proxy) to fetch something.
	get := func(p corev1.Pod, target string) (string, error) {
		b, err := kc.CoreV1().Pods("default").ProxyGet("http", p.Name, "8080", "/get", map[string]string{"url": target}).DoRaw(ctx)
		return string(b), err
	}
	eventually(t, ctx, time.Minute, "a pod on h1 reaches a pod on h2 through the overlay", func() error {
		body, err := get(p1, "http://"+p2.Status.PodIP+":8080/")
		if err == nil && !strings.Contains(body, p2.Name) {
			err = fmt.Errorf("answer %q is not from %s", body, p2.Name)
		}
		return err
	})
	eventually(t, ctx, 2*time.Minute, "a pod reaches the Service by its DNS name", func() error {
		body, err := get(p2, "http://httpd.default.svc.cluster.local/")
		if err == nil && !strings.Contains(body, "httpd-") {
			err = fmt.Errorf("answer %q", body)
		}
		return err
	})
	eventually(t, ctx, 2*time.Minute, "the metadata service answers a pod with its own data", func() error {
		body, err := get(p1, "http://169.254.169.250/latest/self/container/name")
		if err == nil && !strings.Contains(body, p1.Name) {
			err = fmt.Errorf("answer %q, want the pod's name %s", body, p1.Name)
		}
		return err
	})
	eventually(t, ctx, time.Minute, "kubernetes-agent shows the pods as engine containers", func() error {
		ctrs, _, err := eng.Containers().List(ctx, client.ListOptions{})
		if err != nil {
			return err
		}
		found := 0
		for _, c := range ctrs {
			for _, p := range pods {
				if c.Name == p.Name && c.Status.PrimaryIP == p.Status.PodIP {
					found++
				}
			}
		}
		if found != 4 {
			return fmt.Errorf("%d of 4 pods are engine containers with their address", found)
		}
		return nil
	})

	// An Ingress: served by the shared LB (one HAProxy on every host, port
	// 80) that the kubernetes stack's ingress-controller keeps.
	pt := networkingv1.PathTypePrefix
	cls := "drover"
	ing := &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: networkingv1.IngressSpec{IngressClassName: &cls,
		Rules: []networkingv1.IngressRule{{Host: "web.example.com", IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{
			Paths: []networkingv1.HTTPIngressPath{{Path: "/", PathType: &pt, Backend: networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "httpd", Port: networkingv1.ServiceBackendPort{Number: 80}}}}}}}}}}}
	start = time.Now()
	eventually(t, ctx, time.Minute, "the ingress-controller made the IngressClass drover", func() error {
		ic, err := kc.NetworkingV1().IngressClasses().Get(ctx, "drover", metav1.GetOptions{})
		if err == nil && ic.Spec.Controller != "drover.io/ingress-controller" {
			err = fmt.Errorf("controller %q", ic.Spec.Controller)
		}
		return err
	})
	if _, err := kc.NetworkingV1().Ingresses("default").Create(ctx, ing, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, h := range []*kind.Host{h1, h2} {
		eventually(t, ctx, 4*time.Minute, "the Ingress answers on "+h.Name+":80", func() error {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.IP+"/", nil)
			req.Host = "web.example.com"
			resp, err := hc.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "httpd-") {
				return fmt.Errorf("%s: %q", resp.Status, b)
			}
			return nil
		})
	}
	t.Logf("the Ingress answered on both hosts %.1fs after it was created", time.Since(start).Seconds())
	eventually(t, ctx, time.Minute, "the Ingress's status lists both hosts", func() error {
		got, err := kc.NetworkingV1().Ingresses("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ips := map[string]bool{}
		for _, e := range got.Status.LoadBalancer.Ingress {
			ips[e.IP] = true
		}
		if !ips[h1.IP] || !ips[h2.IP] {
			return fmt.Errorf("status %+v", got.Status.LoadBalancer.Ingress)
		}
		return nil
	})

	// A LoadBalancer Service: drover cloudprovider makes it an HAProxy LB
	// (backends: the nodes' NodePorts) and writes its address back.
	lbSvc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "httpd-lb"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		Selector: map[string]string{"app": "httpd"}, Ports: []corev1.ServicePort{{Port: 8081, TargetPort: intstr.FromInt32(8080)}}}}
	if _, err := kc.CoreV1().Services("default").Create(ctx, lbSvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	var lbIP string
	eventually(t, ctx, 4*time.Minute, "the LoadBalancer Service has an address", func() error {
		got, err := kc.CoreV1().Services("default").Get(ctx, "httpd-lb", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(got.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("no status.loadBalancer.ingress yet")
		}
		lbIP = got.Status.LoadBalancer.Ingress[0].IP
		return nil
	})
	eventually(t, ctx, 2*time.Minute, "the LoadBalancer Service answers at its address", func() error {
		resp, err := hc.Get("http://" + lbIP + ":8081/")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "httpd-") {
			return fmt.Errorf("%s: %q", resp.Status, b)
		}
		return nil
	})
	t.Logf("the LoadBalancer Service answered at %s:8081 %.1fs after it was created", lbIP, time.Since(start).Seconds())
	// Nodes were initialized by the cloud provider from their hosts.
	for _, n := range []string{"h1", "h2"} {
		node, err := kc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil || !strings.HasPrefix(node.Spec.ProviderID, "drover://") {
			t.Errorf("node %s: providerID %q (%v)", n, node.Spec.ProviderID, err)
		}
	}

	kubectldChecks(t, ctx, h1, eng, kc)

	rotateCertificates(t, ctx, h1, h2, eng, kc)

	// The worker goes: its node goes, and its pods come back on h1.
	hosts, _, err := eng.Hosts().List(ctx, client.ListOptions{Name: "h2"})
	if err != nil || len(hosts) != 1 {
		t.Fatalf("host h2: %v %v", hosts, err)
	}
	h2.Remove()
	if _, err := eng.Hosts().Delete(ctx, hosts[0].ID); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, 2*time.Minute, "h2's node is gone", func() error {
		_, err := kc.CoreV1().Nodes().Get(ctx, "h2", metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("node h2 is still there")
		}
		return nil
	})
	eventually(t, ctx, 4*time.Minute, "4 httpd pods running on h1", func() error {
		list, err := kc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=httpd"})
		if err != nil {
			return err
		}
		n := 0
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == "h1" && p.DeletionTimestamp == nil {
				n++
			}
		}
		if n != 4 {
			return fmt.Errorf("%d running on h1", n)
		}
		return nil
	})
}

// rotateCertificates runs drover cert rotate and checks that the running
// components take the new certificates without a restart and without
// downtime: the apiserver and a kubelet serve the new ones, the clients'
// files are rewritten in place, no container or pod restarted, and the
// API answered all along.
func rotateCertificates(t *testing.T, ctx context.Context, h1, h2 *kind.Host, eng *client.Client, kc *kubernetes.Clientset) {
	t.Helper()
	served := func(addr string) (*big.Int, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	stored := func(name string) (*x509.Certificate, error) {
		certs, _, err := eng.Certificates().List(ctx, client.ListOptions{Name: name})
		if err != nil || len(certs) != 1 {
			return nil, fmt.Errorf("certificate %s: %v (%d found)", name, err, len(certs))
		}
		b, _ := pem.Decode([]byte(certs[0].Spec.Cert))
		if b == nil {
			return nil, fmt.Errorf("certificate %s: no PEM", name)
		}
		return x509.ParseCertificate(b.Bytes)
	}
	starts := func() map[string]string {
		ctrs, _, err := eng.Containers().List(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, c := range ctrs {
			if strings.HasPrefix(c.Name, "kubernetes-") && c.Status.StartedAt != nil {
				out[c.Name] = fmt.Sprintf("%s/%d/%s", c.Status.DockerID, c.Status.StartCount, c.Status.StartedAt.Format(time.RFC3339Nano))
			}
		}
		return out
	}
	podRestarts := func() map[string]int32 {
		list, err := kc.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=httpd"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int32{}
		for _, p := range list.Items {
			for _, cs := range p.Status.ContainerStatuses {
				out[string(p.UID)] += cs.RestartCount
			}
		}
		return out
	}
	apiBefore, err := served(h1.IP + ":6443")
	if err != nil {
		t.Fatal(err)
	}
	kubeletBefore, err := served(h2.IP + ":10250")
	if err != nil {
		t.Fatal(err)
	}
	startsBefore, podsBefore := starts(), podRestarts()

	// The API is asked every 200 ms from before the rotation until the
	// new certificates are served (bounded: at most 3 minutes).
	var failures, asked atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for end := time.Now().Add(3 * time.Minute); time.Now().Before(end); {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			asked.Add(1)
			if err := nodesReady(ctx, kc, "h1", "h2"); err != nil {
				failures.Add(1)
				t.Logf("during the rotation: %v", err)
			}
		}
	}()
	out, err := h1.Exec(ctx, "drover", "cert", "rotate", "--credentials", "/var/lib/drover/server/credentials.json")
	t.Logf("drover cert rotate: %s", out)
	if err != nil {
		close(stop)
		t.Fatal(err)
	}
	apiCert, err := stored("k8s-kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	kubeletCert, err := stored("k8s-kubelet-serving-h2")
	if err != nil {
		t.Fatal(err)
	}
	if apiCert.SerialNumber.Cmp(apiBefore) == 0 || kubeletCert.SerialNumber.Cmp(kubeletBefore) == 0 {
		t.Fatal("drover cert rotate left the apiserver's or h2's kubelet serving certificate as it was")
	}
	start := time.Now()
	eventually(t, ctx, 2*time.Minute, "the apiserver serves its new certificate", func() error {
		if got, err := served(h1.IP + ":6443"); err != nil || got.Cmp(apiCert.SerialNumber) != 0 {
			return fmt.Errorf("serial %v (%v), want %v", got, err, apiCert.SerialNumber)
		}
		return nil
	})
	t.Logf("apiserver serving the new certificate %.1fs after the rotation", time.Since(start).Seconds())
	eventually(t, ctx, 2*time.Minute, "h2's kubelet serves its new certificate", func() error {
		if got, err := served(h2.IP + ":10250"); err != nil || got.Cmp(kubeletCert.SerialNumber) != 0 {
			return fmt.Errorf("serial %v (%v), want %v", got, err, kubeletCert.SerialNumber)
		}
		return nil
	})
	t.Logf("h2's kubelet serving the new certificate %.1fs after the rotation", time.Since(start).Seconds())
	// The clients' certificates (the kubelet's, kube-proxy's, the
	// controllers') are files client-go reloads: the agent rewrote them
	// in place, in the running kubelet container.
	clientCert, err := stored("k8s-kubelet-client-h2")
	if err != nil {
		t.Fatal(err)
	}
	hosts, _, err := eng.Hosts().List(ctx, client.ListOptions{Name: "h2"})
	if err != nil || len(hosts) != 1 {
		t.Fatalf("host h2: %v %v", hosts, err)
	}
	ctrs, _, err := eng.Containers().List(ctx, client.ListOptions{HostID: hosts[0].ID})
	if err != nil {
		t.Fatal(err)
	}
	kubelet := ""
	for _, c := range ctrs {
		if strings.HasPrefix(c.Name, "kubernetes-kubelet-") {
			kubelet = c.Status.DockerID
		}
	}
	if kubelet == "" {
		t.Fatalf("no kubelet container on h2 among %d", len(ctrs))
	}
	eventually(t, ctx, time.Minute, "h2's kubelet container holds its new client certificate", func() error {
		out, err := h2.Exec(ctx, "docker", "exec", kubelet, "cat", "/run/drover/k8s-kubelet-client-h2.crt")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		b, _ := pem.Decode([]byte(out))
		if b == nil {
			return fmt.Errorf("no PEM in %q", out)
		}
		got, err := x509.ParseCertificate(b.Bytes)
		if err != nil || got.SerialNumber.Cmp(clientCert.SerialNumber) != 0 {
			return fmt.Errorf("serial %v (%v), want %v", got.SerialNumber, err, clientCert.SerialNumber)
		}
		return nil
	})
	close(stop)
	<-done
	if failures.Load() != 0 {
		t.Errorf("the API failed %d of %d times during the rotation", failures.Load(), asked.Load())
	}
	t.Logf("the API answered %d of %d times during the rotation", asked.Load()-failures.Load(), asked.Load())
	if after := starts(); !reflect.DeepEqual(after, startsBefore) {
		t.Errorf("containers of the kubernetes stack restarted during the rotation:\nbefore %v\nafter  %v", startsBefore, after)
	}
	if after := podRestarts(); !reflect.DeepEqual(after, podsBefore) {
		t.Errorf("pods restarted during the rotation:\nbefore %v\nafter  %v", podsBefore, after)
	}
}

func engineClient(t *testing.T, ctx context.Context, h *kind.Host) *client.Client {
	b, err := h.ReadFile(ctx, "/var/lib/drover/server/credentials.json")
	if err != nil {
		t.Fatal(err)
	}
	var cr api.Credentials
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	return client.New("http://"+h.IP+":8080", cr.AccessKey, cr.SecretKey)
}

func kubeClient(t *testing.T, ctx context.Context, h *kind.Host) *kubernetes.Clientset {
	b, err := h.ReadFile(ctx, "/var/lib/drover/kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Timeout = 10 * time.Second
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

func nodesReady(ctx context.Context, kc *kubernetes.Clientset, names ...string) error {
	for _, n := range names {
		node, err := kc.CoreV1().Nodes().Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ready := false
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		if !ready {
			return fmt.Errorf("node %s not Ready", n)
		}
	}
	return nil
}

// revisions fingerprints the built-in stacks and their services.
func revisions(t *testing.T, ctx context.Context, eng *client.Client) string {
	sts, _, err := eng.Stacks().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svcs, _, err := eng.Services().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, s := range sts {
		if s.Name == "infra" || s.Name == "kubernetes" {
			fmt.Fprintf(&b, "%s@%d ", s.Name, s.Generation)
		}
	}
	for _, s := range svcs {
		if s.Spec.Kind == api.ServiceContainer {
			fmt.Fprintf(&b, "%s@%d ", s.Name, s.Generation)
		}
	}
	return b.String()
}

func deployHTTPD(t *testing.T, ctx context.Context, kc *kubernetes.Clientset) {
	replicas := int32(4)
	labels := map[string]string{"app": "httpd"}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "httpd", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{{
						Name: "httpd", Image: "drover/e2e-httpd:" + version, ImagePullPolicy: corev1.PullNever,
						Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
						Env:   []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
					}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway,
						LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
					}},
				},
			},
		},
	}
	if _, err := kc.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "httpd"},
		Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if _, err := kc.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func eventually(t *testing.T, ctx context.Context, limit time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	var err error
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if err = f(); err == nil {
			t.Logf("ok: %s", what)
			return
		}
		time.Sleep(time.Second)
	}
	t.Fatalf("%s: not after %s: %v", what, limit, err)
}

// dumpHosts logs what a failed run needs to be understood.
func dumpHosts(t *testing.T, cl *kind.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range []string{"h1", "h2"} {
		out, _ := kind.Docker(ctx, "exec", cl.Name+"-"+n, "sh", "-c", "docker ps -a; for c in $(docker ps -aq); do echo \"== $c\"; docker logs --tail 30 $c 2>&1; done")
		t.Logf("host %s:\n%s", n, out)
	}
}

// kubectldChecks: the kubernetes stack's kubectld answers /v1-kubectl on
// the control-plane host's port 8091 with the engine's admin key, and
// applies a stack of kind kubernetes.
func kubectldChecks(t *testing.T, ctx context.Context, h1 *kind.Host, eng *client.Client, kc *kubernetes.Clientset) {
	b, err := h1.ReadFile(ctx, "/var/lib/drover/server/credentials.json")
	if err != nil {
		t.Fatal(err)
	}
	var cr api.Credentials
	if err := json.Unmarshal(b, &cr); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	body := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: via-kubectld}\ndata: {v: \"1\"}\n"
	eventually(t, ctx, 3*time.Minute, "kubectld applies a ConfigMap on "+h1.IP+":8091", func() error {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+h1.IP+":8091/v1-kubectl/apply?defaultNamespace=default", strings.NewReader(body))
		req.SetBasicAuth(cr.AccessKey, cr.SecretKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusNonAuthoritativeInfo {
			return fmt.Errorf("%s: %s", resp.Status, out)
		}
		return nil
	})
	if _, err := kc.CoreV1().ConfigMaps("default").Get(ctx, "via-kubectld", metav1.GetOptions{}); err != nil {
		t.Errorf("the ConfigMap kubectld applied: %v", err)
	}
	st, err := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "tpl"}, Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: "tpl",
		Templates: map[string]string{"app.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {greeting: \"${GREETING}\"}\n"},
		Answers:   map[string]string{"GREETING": "hello"}}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, 2*time.Minute, "the template stack is applied", func() error {
		cur, err := eng.Stacks().Get(ctx, st.ID)
		if err != nil {
			return err
		}
		if cur.Status.ObservedGeneration != cur.Generation || cur.Status.State != "active" {
			return fmt.Errorf("state %q: %s", cur.Status.State, cur.Status.Message)
		}
		return nil
	})
	cm, err := kc.CoreV1().ConfigMaps("tpl").Get(ctx, "app", metav1.GetOptions{})
	if err != nil || cm.Data["greeting"] != "hello" {
		t.Errorf("the template stack's ConfigMap: %v %v", cm, err)
	}
	t.Logf("kubectld: /v1-kubectl and a template stack answered %.1fs after the first try", time.Since(start).Seconds())
}
