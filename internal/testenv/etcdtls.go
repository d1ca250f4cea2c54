package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// EtcdTLS is a one-member etcd that takes only clients with a certificate
// signed by its CA (etcd --client-cert-auth), and the files a client needs.
type EtcdTLS struct {
	Endpoint string // https://127.0.0.1:port
	CAFile   string
	// CertFile and KeyFile are a client certificate etcd accepts.
	CertFile, KeyFile string
	// StrangerCertFile and StrangerKeyFile are a client certificate signed
	// by another CA, which etcd refuses.
	StrangerCertFile, StrangerKeyFile string
}

// StartEtcdTLS starts it; it stops when the test ends.
func StartEtcdTLS(t testing.TB) *EtcdTLS {
	t.Helper()
	dir := t.TempDir()
	ca, caKey := newCA(t, "drover test etcd CA")
	other, otherKey := newCA(t, "a stranger's CA")
	e := &EtcdTLS{CAFile: filepath.Join(dir, "ca.pem")}
	writePEM(t, e.CAFile, "CERTIFICATE", ca.Raw)
	serverCert, serverKey := writeLeaf(t, dir, "server", ca, caKey, []net.IP{net.ParseIP("127.0.0.1")})
	e.CertFile, e.KeyFile = writeLeaf(t, dir, "client", ca, caKey, nil)
	e.StrangerCertFile, e.StrangerKeyFile = writeLeaf(t, dir, "stranger", other, otherKey, nil)

	port, peer := FreePort(t), FreePort(t)
	e.Endpoint = fmt.Sprintf("https://127.0.0.1:%d", port)
	m := &EtcdMember{Name: "tls0", ClientURL: e.Endpoint, PeerURL: fmt.Sprintf("http://127.0.0.1:%d", peer),
		dataDir: filepath.Join(dir, "data"), bin: EtcdBinary(t), logFile: filepath.Join(dir, "etcd.log")}
	m.args = []string{
		"--name", m.Name, "--data-dir", m.dataDir,
		"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.Name + "=" + m.PeerURL, "--initial-cluster-state", "new",
		"--client-cert-auth", "--trusted-ca-file", e.CAFile, "--cert-file", serverCert, "--key-file", serverKey,
		"--log-level", "warn", "--logger", "zap",
	}
	if err := m.start(); err != nil {
		t.Fatalf("starting etcd with TLS: %v", err)
	}
	t.Cleanup(m.stop)
	// Ready when it accepts a TLS handshake with the client certificate.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return e
		}
		if ctx.Err() != nil {
			t.Fatalf("etcd with TLS did not listen in 60s; log in %s", m.logFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

func writeLeaf(t testing.TB, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, ips []net.IP) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
