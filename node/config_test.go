package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func TestContainerdConfig(t *testing.T) {
	b := string(ContainerdConfig(Config{Host: "h1", PauseImage: "drover/pause:v1"}))
	for _, want := range []string{
		"restrict_oom_score_adj = true",
		`sandbox_image = "drover/pause:v1"`,
		"SystemdCgroup = false",
		`bin_dir = "/usr/lib/cni"`,
		`conf_dir = "/var/lib/drover/cni/net.d"`,
		`address = "/run/containerd/containerd.sock"`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("containerd config lacks %q:\n%s", want, b)
		}
	}
}

func TestKubeletConfig(t *testing.T) {
	var cfg map[string]any
	if err := yaml.Unmarshal(KubeletConfig(Config{Host: "h1"}), &cfg); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{
		"kind": "KubeletConfiguration", "cgroupDriver": "cgroupfs", "cgroupRoot": "/drover/h1", "failCgroupV1": false,
		"clusterDomain": "cluster.local", "tlsCertFile": "/run/drover/k8s-kubelet-serving-h1.crt",
	} {
		if cfg[k] != want {
			t.Errorf("%s = %v, want %v", k, cfg[k], want)
		}
	}
	if dns, _ := cfg["clusterDNS"].([]any); len(dns) != 1 || dns[0] != "169.254.169.250" {
		t.Errorf("clusterDNS = %v", cfg["clusterDNS"])
	}
}

func TestKubeconfigNamesMissingCertificate(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "k8s-ca.crt"), []byte("CA"), 0o600)
	if _, err := Kubeconfig(dir, "k8s-kube-proxy", "", "https://10.0.0.1:6443"); err == nil || !strings.Contains(err.Error(), "k8s-kube-proxy.crt") || !strings.Contains(err.Error(), "io.drover.container.certificates") {
		t.Fatalf("want an error naming the file and the label, got %v", err)
	}
	os.WriteFile(filepath.Join(dir, "k8s-kube-proxy.crt"), []byte("CRT"), 0o600)
	os.WriteFile(filepath.Join(dir, "k8s-kube-proxy.key"), []byte("KEY"), 0o600)
	kc, err := Kubeconfig(dir, "k8s-kube-proxy", "", "https://10.0.0.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(kc, &m); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, kc)
	}
	if !strings.Contains(string(kc), `server: "https://10.0.0.1:6443"`) || !strings.Contains(string(kc), `name: "kube-proxy"`) ||
		!strings.Contains(string(kc), `client-key: "`+filepath.Join(dir, "k8s-kube-proxy.key")+`"`) {
		t.Fatalf("kubeconfig:\n%s", kc)
	}
}

func TestRunRefusesLoopback(t *testing.T) {
	err := Run(t.Context(), Options{Config: Config{Host: "h1", HostIP: "127.0.0.1", APIServer: "https://x:6443"}})
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("want a loopback refusal, got %v", err)
	}
}
