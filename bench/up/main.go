// Command up measures drover up (make bench-up): from the command to a
// Ready node whose DNS answers kubernetes.default.svc.cluster.local, on one
// fresh host (a privileged container with its own Docker Engine, as kind
// makes), and a second host joining until its node is Ready. The images
// must be built (make images); the first host loads them from an archive,
// the second gets what it lacks from the engine.
//
// The reference is k3s's documented start-up of about 30 s on one host; k3s
// cannot be fetched here (no registry, no release downloads), so it is not
// run beside drover: the figure is printed against that 30 s goal.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover/drover/internal/kind"
)

func main() {
	version := flag.String("version", "", "the images' tag (make passes VERSION)")
	flag.Parse()
	if err := run(*version); err != nil {
		fmt.Fprintln(os.Stderr, "bench-up:", err)
		os.Exit(1)
	}
}

func run(version string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	images := []string{"drover/drover:" + version, "drover/node:" + version, "drover/etcd:" + version, "drover/pause:" + version, "drover/lb-haproxy:" + version}
	for _, im := range images {
		if _, err := kind.Docker(ctx, "image", "inspect", im); err != nil {
			return fmt.Errorf("image %s is missing: make images VERSION=%s", im, version)
		}
	}
	dir, err := os.MkdirTemp("/var/tmp", "drover-bench-up-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := kind.SaveImages(ctx, dir, images...); err != nil {
		return err
	}
	cl := &kind.Cluster{Name: "drover-bench-up", Image: "drover/node:" + version, Subnet: "172.31.249.0/24", Gateway: "172.31.249.1", Images: dir}
	if err := cl.Create(ctx); err != nil {
		return err
	}
	defer cl.Destroy()
	h1, err := cl.AddHost(ctx, "b1", "172.31.249.11", true)
	if err != nil {
		return err
	}
	h2, err := cl.AddHost(ctx, "b2", "172.31.249.12", false)
	if err != nil {
		return err
	}
	start := time.Now()
	out, err := h1.Exec(ctx, "drover", "up", "--name", "b1", "--ip", h1.IP)
	up := time.Since(start)
	if err != nil {
		return fmt.Errorf("drover up: %v\n%s", err, out)
	}
	loaded := phase(out, "images present")
	fmt.Printf("drover up, one host, to node Ready and DNS answering: %.1f s (of which loading the image archive %.1f s); goal < 30 s (k3s: about 30 s, not run here) → %.2f of k3s's\n",
		up.Seconds(), loaded, up.Seconds()/30)
	m := regexp.MustCompile(`--token (\S+)`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("drover up printed no join token:\n%s", out)
	}
	kc, err := h1.ReadFile(ctx, "/var/lib/drover/kubeconfig")
	if err != nil {
		return err
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
	if err != nil {
		return err
	}
	k, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	start = time.Now()
	if out, err := h2.Exec(ctx, "drover", "up", "--join", "http://172.31.249.11:8080", "--token", m[1], "--name", "b2", "--ip", h2.IP); err != nil {
		return fmt.Errorf("drover up --join: %v\n%s", err, out)
	}
	joined := time.Since(start)
	for {
		n, err := k.CoreV1().Nodes().Get(ctx, "b2", metav1.GetOptions{})
		if err == nil && ready(n) {
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("node b2 not Ready: %v", ctx.Err())
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Printf("second host joining (drover up --join, its images from the engine) until its node is Ready: %.1f s (the command itself %.1f s)\n", time.Since(start).Seconds(), joined.Seconds())
	return nil
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// phase reads the time drover up printed beside a step.
func phase(out, step string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, step) {
			var s float64
			fmt.Sscanf(strings.TrimLeft(line, "[ "), "%fs]", &s)
			return s
		}
	}
	return 0
}
