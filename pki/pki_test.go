package pki_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/pki"
)

func TestBundleShape(t *testing.T) {
	b, err := pki.Generate(pki.Options{ServiceIP: net.ParseIP("10.43.0.1"), Hosts: []pki.Host{{Name: "node1", IPs: []net.IP{net.ParseIP("192.168.1.5")}}}})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CA.Cert)
	parse := func(p []byte) *x509.Certificate {
		blk, _ := pem.Decode(p)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	api := parse(b.Certs["kube-apiserver"].Cert)
	if _, err := api.Verify(x509.VerifyOptions{Roots: pool, DNSName: "kubernetes.default.svc.cluster.local"}); err != nil {
		t.Fatalf("apiserver certificate for kubernetes.default.svc.cluster.local: %v", err)
	}
	if _, err := api.Verify(x509.VerifyOptions{Roots: pool, DNSName: "10.43.0.1"}); err != nil {
		t.Fatalf("apiserver certificate for the service IP: %v", err)
	}
	kc := parse(b.Certs["kubelet-client-node1"].Cert)
	if kc.Subject.CommonName != "system:node:node1" || len(kc.Subject.Organization) != 1 || kc.Subject.Organization[0] != "system:nodes" {
		t.Fatalf("kubelet client subject %v", kc.Subject)
	}
	if _, err := kc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("kubelet client certificate: %v", err)
	}
	ks := parse(b.Certs["kubelet-serving-node1"].Cert)
	if _, err := ks.Verify(x509.VerifyOptions{Roots: pool, DNSName: "192.168.1.5"}); err != nil {
		t.Fatalf("kubelet serving certificate for its address: %v", err)
	}
	if d := time.Until(ks.NotAfter); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Fatalf("a leaf valid for %s, want a year", d)
	}
	if _, err := tls.X509KeyPair(b.Certs["admin"].Cert, b.Certs["admin"].Key); err != nil {
		t.Fatalf("admin pair: %v", err)
	}
	if _, err := b.Kubeconfig("nobody", "https://x"); err == nil {
		t.Fatal("a kubeconfig for a certificate that does not exist")
	}
	// A host that joins later gets certificates from the same CA.
	cl, sv, err := pki.HostCerts(b.CA, pki.Host{Name: "late", IPs: []net.IP{net.ParseIP("192.168.1.9")}}, pki.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if lc := parse(cl.Cert); lc.Subject.CommonName != "system:node:late" {
		t.Fatalf("late kubelet client %v", lc.Subject)
	} else if _, err := lc.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("late kubelet client: %v", err)
	}
	if _, err := parse(sv.Cert).Verify(x509.VerifyOptions{Roots: pool, DNSName: "late"}); err != nil {
		t.Fatalf("late kubelet serving: %v", err)
	}
	if _, _, err := pki.HostCerts(pki.Pair{Cert: b.CA.Cert, Key: b.Certs["admin"].Key}, pki.Host{Name: "x"}, pki.Options{}); err == nil {
		t.Fatal("signing with a key that is not the CA's")
	}
}

// The bundle runs a real kube-apiserver: every client certificate is the
// identity it names, clients verify the apiserver by the cluster CA, the
// service-account key signs tokens the apiserver accepts, and a certificate
// of another CA is refused.
func TestIntegrationAPIServerWithBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (kube-apiserver, etcd); run without -short")
	}
	bin := testenv.KubeBinary(t)
	etcd := testenv.StartEtcdCluster(t, 1)
	b, err := pki.Generate(pki.Options{ServiceIP: net.ParseIP("10.43.0.1"), Hosts: []pki.Host{{Name: "node1", IPs: []net.IP{net.ParseIP("127.0.0.1")}}}})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	port := testenv.FreePort(t)
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	cmd := exec.Command(bin, "kube-apiserver",
		"--etcd-servers="+strings.Join(etcd.Endpoints(), ","),
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", port),
		"--client-ca-file="+write("ca.crt", b.CA.Cert),
		"--tls-cert-file="+write("apiserver.crt", b.Certs["kube-apiserver"].Cert), "--tls-private-key-file="+write("apiserver.key", b.Certs["kube-apiserver"].Key),
		"--kubelet-client-certificate="+write("kc.crt", b.Certs["kube-apiserver-kubelet-client"].Cert), "--kubelet-client-key="+write("kc.key", b.Certs["kube-apiserver-kubelet-client"].Key),
		"--requestheader-client-ca-file="+write("fp-ca.crt", b.FrontProxyCA.Cert), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group", "--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+write("fp.crt", b.Certs["front-proxy-client"].Cert), "--proxy-client-key-file="+write("fp.key", b.Certs["front-proxy-client"].Key),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+write("sa.pub", b.ServiceAccountPub), "--service-account-signing-key-file="+write("sa.key", b.ServiceAccountKey),
		"--service-cluster-ip-range=10.43.0.0/16", "--authorization-mode=Node,RBAC", "--profiling=false")
	logf, _ := os.Create(filepath.Join(dir, "apiserver.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	clientFor := func(name string) kubernetes.Interface {
		t.Helper()
		kc, err := b.Kubeconfig(name, server)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := clientcmd.RESTConfigFromKubeConfig(kc)
		if err != nil {
			t.Fatalf("kubeconfig of %s: %v", name, err)
		}
		return kubernetes.NewForConfigOrDie(cfg)
	}
	admin := clientFor("admin")
	ctx := context.Background()
	testenv.Eventually(t, "kube-apiserver serving with the bundle, the admin verified by the CA", 120*time.Second, func() error {
		_, err := admin.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err
	})
	whoami := func(c kubernetes.Interface) (string, []string) {
		t.Helper()
		var r *authnv1.SelfSubjectReview
		// Right after a start the bootstrap RBAC policy (which lets every
		// authenticated user ask who it is) may not be in place yet.
		testenv.Eventually(t, "a SelfSubjectReview", 60*time.Second, func() (err error) {
			r, err = c.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
			return err
		})
		return r.Status.UserInfo.Username, r.Status.UserInfo.Groups
	}
	for name, want := range map[string]string{
		"admin": "drover-admin", "kube-controller-manager": "system:kube-controller-manager", "kube-scheduler": "system:kube-scheduler",
		"kube-proxy": "system:kube-proxy", "kubelet-client-node1": "system:node:node1",
	} {
		user, groups := whoami(clientFor(name))
		if user != want {
			t.Errorf("%s's certificate is %q to the apiserver, want %q", name, user, want)
		}
		if name == "kubelet-client-node1" && !strings.Contains(strings.Join(groups, ","), "system:nodes") {
			t.Errorf("the kubelet is in %v, want system:nodes", groups)
		}
	}
	// The service-account key: a token the apiserver issues with it is
	// accepted by the apiserver.
	if _, err := admin.CoreV1().ServiceAccounts("default").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "t"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tok, err := admin.CoreV1().ServiceAccounts("default").CreateToken(ctx, "t", &authnv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest: %v", err)
	}
	saCfg := &rest.Config{Host: server, BearerToken: tok.Status.Token, TLSClientConfig: rest.TLSClientConfig{CAData: b.CA.Cert}}
	if user, _ := whoami(kubernetes.NewForConfigOrDie(saCfg)); user != "system:serviceaccount:default:t" {
		t.Fatalf("the service-account token is %q", user)
	}
	// A client certificate of another CA is nobody.
	other, err := pki.Generate(pki.Options{ServiceIP: net.ParseIP("10.43.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := tls.X509KeyPair(other.Certs["admin"].Cert, other.Certs["admin"].Key)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(b.CA.Cert)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}}}
	resp, err := hc.Get(server + "/api/v1/namespaces")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden {
		t.Fatalf("a certificate of another CA: HTTP %d, want 401 or 403", resp.StatusCode)
	}
}
