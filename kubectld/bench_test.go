package kubectld_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/kubectld"
)

// manifest500 is 500 objects of the kinds a real application has.
func manifest500() string {
	var b strings.Builder
	for i := 0; i < 500; i++ {
		switch i % 5 {
		case 0, 1:
			fmt.Fprintf(&b, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm-%d, labels: {app: bench}}\ndata: {key: \"value-%d\", other: \"x\"}\n---\n", i, i)
		case 2:
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Secret\nmetadata: {name: secret-%d}\nstringData: {password: \"p-%d\"}\n---\n", i, i)
		case 3:
			fmt.Fprintf(&b, "apiVersion: v1\nkind: Service\nmetadata: {name: svc-%d}\nspec:\n  selector: {app: app-%d}\n  ports: [{name: http, port: 80, targetPort: 8080}]\n---\n", i, i)
		case 4:
			fmt.Fprintf(&b, `apiVersion: apps/v1
kind: Deployment
metadata: {name: app-%d}
spec:
  replicas: 1
  selector: {matchLabels: {app: app-%d}}
  template:
    metadata: {labels: {app: app-%d}}
    spec:
      containers:
      - name: app
        image: drover/e2e-httpd:bench
        ports: [{containerPort: 8080}]
        resources: {requests: {cpu: 10m, memory: 16Mi}}
---
`, i, i, i)
		}
	}
	return b.String()
}

// kubectlBinary is bin/kubectl, built by `make bin/kubectl` from the
// pinned Kubernetes version.
func kubectlBinary(b testing.TB) string {
	kube := testenv.KubeBinary(b)
	p := filepath.Join(filepath.Dir(kube), "kubectl")
	if _, err := os.Stat(p); err != nil {
		b.Fatalf("%s is missing: run `make bin/kubectl` (make bench-kubectld builds it) to build kubectl from the pinned Kubernetes version", p)
	}
	return p
}

// BenchmarkKubectldApply applies one 500-object manifest through
// /v1-kubectl/apply and, in the same run against the same kube-apiserver,
// with `kubectl apply --server-side` (each into a namespace of its own):
// first the creation, then the same file again (nothing to change).
func BenchmarkKubectldApply(b *testing.B) {
	kubectl := kubectlBinary(b)
	ctx := context.Background()
	k := testenv.StartKube(b, testenv.KubeOptions{})
	srv, eng := testenv.StartServer(b, apiserver.Options{})
	creds := testenv.Credentials(b, srv)
	addr := make(chan string, 1)
	kctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		kubectld.Run(kctx, kubectld.Options{Kube: k.Config, Kubeconfig: k.Kubeconfig, Engine: eng, Logger: testenv.Logger(),
			Listen: "127.0.0.1:0", Started: func(a string) { addr <- a }})
	}()
	b.Cleanup(func() { cancel(); <-done })
	url := "http://" + <-addr
	file := filepath.Join(b.TempDir(), "app.yaml")
	body := manifest500()
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, ns := range []string{"via-kubectld", "via-kubectl"} {
		if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	cacheDir := b.TempDir()
	viaKubectld := func() time.Duration {
		start := time.Now()
		req, _ := http.NewRequest("POST", url+"/v1-kubectl/apply?defaultNamespace=via-kubectld", strings.NewReader(body))
		req.SetBasicAuth(creds.AccessKey, creds.SecretKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 203 {
			b.Fatalf("kubectld: %s", resp.Status)
		}
		return time.Since(start)
	}
	viaKubectl := func() time.Duration {
		start := time.Now()
		out, err := exec.Command(kubectl, "--kubeconfig", k.Kubeconfig, "--cache-dir", cacheDir, "apply", "--server-side", "--field-manager", "bench", "-n", "via-kubectl", "-f", file).CombinedOutput()
		if err != nil {
			b.Fatalf("kubectl: %v: %s", err, out)
		}
		return time.Since(start)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		createD, createK := viaKubectld(), viaKubectl()
		againD, againK := viaKubectld(), viaKubectl()
		for _, ns := range []string{"via-kubectld", "via-kubectl"} {
			n, _ := k.Client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=bench"})
			if len(n.Items) != 200 {
				b.Fatalf("%s holds %d of the 200 ConfigMaps", ns, len(n.Items))
			}
		}
		b.ReportMetric(createD.Seconds(), "kubectld-create-s")
		b.ReportMetric(createK.Seconds(), "kubectl-create-s")
		fmt.Printf("bench-kubectld: 500 objects created through /v1-kubectl/apply in %.2fs (all or nothing: dry run first)\n", createD.Seconds())
		fmt.Printf("bench-kubectld: peer: kubectl apply --server-side of the same file: %.2fs; ratio %.2fx (goal: no slower, <= 1.00x)\n", createK.Seconds(), createD.Seconds()/createK.Seconds())
		fmt.Printf("bench-kubectld: the same file again (nothing to change): kubectld %.2fs, kubectl %.2fs; ratio %.2fx\n", againD.Seconds(), againK.Seconds(), againD.Seconds()/againK.Seconds())
	}
}
