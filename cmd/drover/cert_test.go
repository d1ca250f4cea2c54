package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// drover cert init puts the Kubernetes PKI into the engine once; drover
// kubeconfig turns it into an admin kubeconfig whose certificate chains to
// the CA it names.
func TestIntegrationCertInitAndKubeconfig(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (engine)")
	}
	ctx := context.Background()
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	for _, h := range []api.RegisterRequest{{Name: "cp1", AgentIP: "192.168.5.1"}, {Name: "w1", AgentIP: "192.168.5.2"}} {
		if _, err := eng.Register(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	creds := []string{"--credentials", srv.CredentialsPath()}
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, creds...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if _, err := cli("kubeconfig"); err == nil || !strings.Contains(err.Error(), "drover cert init") {
		t.Fatalf("kubeconfig before the PKI exists: %v, want a pointer to drover cert init", err)
	}
	if out, err := cli("cert", "init", "--apiserver-name", "k8s.example"); err != nil || !strings.Contains(out, "14 certificates") {
		t.Fatalf("cert init: %s %v", out, err)
	}
	certs, _, err := eng.Certificates().List(ctx, client.ListOptions{LabelSelector: "io.drover.pki=kubernetes"})
	if err != nil || len(certs) != 14 {
		t.Fatalf("%d PKI certificates in the engine (%v), want 14 (CAs, service account, control plane, admin, 2 per host)", len(certs), err)
	}
	if out, err := cli("cert", "init"); err != nil || !strings.Contains(out, "nothing changed") {
		t.Fatalf("cert init again: %s %v", out, err)
	}
	if after, _, _ := eng.Certificates().List(ctx, client.ListOptions{LabelSelector: "io.drover.pki=kubernetes"}); len(after) != 14 {
		t.Fatalf("cert init again left %d certificates", len(after))
	}
	// A host that joins later gets its kubelet's certificates from the same CA.
	if _, err := eng.Register(ctx, api.RegisterRequest{Name: "w2", AgentIP: "192.168.5.3"}); err != nil {
		t.Fatal(err)
	}
	if out, err := cli("cert", "init"); err != nil || !strings.Contains(out, "added for 1 host") {
		t.Fatalf("cert init after a host joined: %s %v", out, err)
	}
	if after, _, _ := eng.Certificates().List(ctx, client.ListOptions{LabelSelector: "io.drover.pki=kubernetes"}); len(after) != 16 {
		t.Fatalf("after w2 joined: %d certificates, want 16", len(after))
	}
	kc, err := cli("kubeconfig", "--apiserver", "https://192.168.5.1:6443")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(kc))
	if err != nil {
		t.Fatalf("the kubeconfig does not load: %v\n%s", err, kc)
	}
	if cfg.Host != "https://192.168.5.1:6443" {
		t.Fatalf("server %q", cfg.Host)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(cfg.TLSClientConfig.CAData) {
		t.Fatal("no CA in the kubeconfig")
	}
	blk, _ := pem.Decode(cfg.TLSClientConfig.CertData)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "drover-admin" || len(cfg.TLSClientConfig.KeyData) == 0 {
		t.Fatalf("admin certificate %v, key %d bytes", leaf.Subject, len(cfg.TLSClientConfig.KeyData))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the admin certificate does not chain to the kubeconfig's CA: %v", err)
	}
}

// drover cert rotate: every leaf gets a new key and certificate from the
// same CA; the CAs stay.
func TestIntegrationCertRotate(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (engine)")
	}
	ctx := context.Background()
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	if _, err := eng.Register(ctx, api.RegisterRequest{Name: "n1", AgentIP: "192.168.6.1"}); err != nil {
		t.Fatal(err)
	}
	creds := []string{"--credentials", srv.CredentialsPath()}
	cli := func(args ...string) (string, error) {
		var out, errOut bytes.Buffer
		err := run(ctx, append(args, creds...), &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if _, err := cli("cert", "rotate"); err == nil {
		t.Fatal("rotating a PKI that does not exist")
	}
	if _, err := cli("cert", "init"); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	certs, _, _ := eng.Certificates().List(ctx, client.ListOptions{LabelSelector: "io.drover.pki=kubernetes"})
	for _, c := range certs {
		before[c.Name] = c.Status.Fingerprint
	}
	out, err := cli("cert", "rotate")
	if err != nil || !strings.Contains(out, "9 certificates rotated") {
		t.Fatalf("cert rotate: %s %v", out, err)
	}
	after, _, _ := eng.Certificates().List(ctx, client.ListOptions{LabelSelector: "io.drover.pki=kubernetes"})
	if len(after) != len(certs) {
		t.Fatalf("%d certificates after rotation, %d before", len(after), len(certs))
	}
	var caPEM string
	for _, c := range after {
		if c.Name == "k8s-ca" {
			caPEM = c.Spec.Cert
		}
		kept := c.Name == "k8s-ca" || c.Name == "k8s-front-proxy-ca" || c.Name == "k8s-service-account"
		if (before[c.Name] == c.Status.Fingerprint) != kept {
			t.Errorf("%s: fingerprint %s -> %s (kept: %v)", c.Name, before[c.Name], c.Status.Fingerprint, kept)
		}
	}
	// The new admin certificate still chains to the CA, with its new key.
	kc, err := cli("kubeconfig")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.RESTConfigFromKubeConfig([]byte(kc))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	blk, _ := pem.Decode(cfg.TLSClientConfig.CertData)
	leaf, _ := x509.ParseCertificate(blk.Bytes)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the rotated admin certificate: %v", err)
	}
	if _, err := tls.X509KeyPair(cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData); err != nil {
		t.Fatalf("the rotated admin's certificate and key do not match: %v", err)
	}
}
