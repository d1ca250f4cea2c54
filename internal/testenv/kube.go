package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// KubeBinary finds bin/kube (built by `make kube` from the pinned
// k8s.io/kubernetes) or fails the test saying how to get it.
func KubeBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("DROVER_TEST_KUBE"); p != "" {
		return p
	}
	dir, _ := os.Getwd()
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/drover/drover\n") {
			p := filepath.Join(dir, "bin", "kube")
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s is missing: run `make kube` (make test builds it) to build the Kubernetes components", p)
			}
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("cannot find the drover repository root to locate bin/kube; set DROVER_TEST_KUBE")
		}
		dir = parent
	}
}

// KubeOptions choose what StartKube runs besides kube-apiserver.
type KubeOptions struct {
	ControllerManager bool
	// APIServerArgs are added to kube-apiserver's flags.
	APIServerArgs []string
}

// Kube is a real kube-apiserver (and maybe kube-controller-manager) on
// loopback, with its own etcd, token auth, and a rest.Config for tests.
type Kube struct {
	t          testing.TB
	Etcd       *EtcdCluster
	Config     *rest.Config
	Client     kubernetes.Interface
	Kubeconfig string
	dir        string
	bin        string
	apiArgs    []string
	api        *exec.Cmd
	cm         *exec.Cmd
}

// StartKube starts etcd and kube-apiserver and waits for /readyz.
func StartKube(t testing.TB, opts KubeOptions) *Kube {
	t.Helper()
	bin := KubeBinary(t)
	k := &Kube{t: t, bin: bin, dir: t.TempDir()}
	k.Etcd = StartEtcdCluster(t, 1)
	tokenBytes := make([]byte, 16)
	rand.Read(tokenBytes)
	token := hex.EncodeToString(tokenBytes)
	tokens := filepath.Join(k.dir, "tokens.csv")
	must(t, os.WriteFile(tokens, []byte(token+`,admin,admin-uid,"system:masters"`+"\n"), 0o600))
	saKey := filepath.Join(k.dir, "sa.key")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	must(t, err)
	must(t, os.WriteFile(saKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600))
	port := FreePort(t)
	k.apiArgs = []string{"kube-apiserver",
		"--etcd-servers=" + strings.Join(k.Etcd.Endpoints(), ","),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--cert-dir=" + filepath.Join(k.dir, "certs"),
		"--token-auth-file=" + tokens, "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saKey, "--service-account-signing-key-file=" + saKey,
		"--service-cluster-ip-range=10.43.0.0/16",
		// Pods in tests have no service account token controller behind them.
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true", "--profiling=false",
		"--enable-priority-and-fairness=false",
	}
	k.apiArgs = append(k.apiArgs, opts.APIServerArgs...)
	k.Config = &rest.Config{
		Host: fmt.Sprintf("https://127.0.0.1:%d", port), BearerToken: token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 500, Burst: 1000,
	}
	k.Kubeconfig = filepath.Join(k.dir, "kubeconfig")
	must(t, os.WriteFile(k.Kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: %q, insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: %q}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
`, k.Config.Host, token)), 0o600))
	k.Client, err = kubernetes.NewForConfig(k.Config)
	must(t, err)
	t.Cleanup(k.stopAll)
	k.StartAPIServer()
	if opts.ControllerManager {
		k.cm = k.spawn("controller-manager", "kube-controller-manager",
			"--kubeconfig="+k.Kubeconfig, "--leader-elect=false",
			"--service-account-private-key-file="+saKey, "--use-service-account-credentials=false",
			"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", FreePort(t)),
			"--controllers=*,-nodeipam,-nodelifecycle,-cloud-node-lifecycle,-service-lb-controller,-route")
	}
	return k
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (k *Kube) spawn(name string, args ...string) *exec.Cmd {
	k.t.Helper()
	logPath := filepath.Join(k.dir, name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	must(k.t, err)
	cmd := exec.Command(k.bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		k.t.Fatalf("starting %s: %v", name, err)
	}
	return cmd
}

// StartAPIServer (re)starts kube-apiserver and waits until it is ready.
func (k *Kube) StartAPIServer() {
	k.t.Helper()
	k.api = k.spawn("apiserver", k.apiArgs...)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 2 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", k.Config.Host+"/readyz", nil)
		req.Header.Set("Authorization", "Bearer "+k.Config.BearerToken)
		if resp, err := hc.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(k.dir, "apiserver.log"))
			if len(log) > 4000 {
				log = log[len(log)-4000:]
			}
			k.t.Fatalf("kube-apiserver not ready within 120s; log tail:\n%s", log)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// StopAPIServer stops kube-apiserver (StartAPIServer brings it back on the
// same port, against the same etcd).
func (k *Kube) StopAPIServer() { stopCmd(k.api); k.api = nil }

func (k *Kube) stopAll() {
	stopCmd(k.cm)
	stopCmd(k.api)
}

func stopCmd(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}
