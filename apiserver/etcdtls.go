package apiserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// lockedTLS makes the TLS settings of the embedded etcd's listeners: a
// certificate for 127.0.0.1 signed by a fresh CA, and client certificate
// authentication against that CA. The CA's private key is never stored, so
// the one certificate that will ever verify is the listeners' own, whose
// key only the server's user can read. The server itself talks to etcd
// in-process. Files are written anew on every start, mode 0600 in a 0700
// directory.
func lockedTLS(dir string) (transport.TLSInfo, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return transport.TLSInfo{}, fmt.Errorf("server: creating %s: %w", dir, err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "drover embedded etcd (no clients)"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "drover embedded etcd"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return transport.TLSInfo{}, err
	}
	files := map[string][]byte{
		"ca.pem":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"cert.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"key.pem":  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return transport.TLSInfo{}, fmt.Errorf("server: writing %s: %w", name, err)
		}
	}
	return transport.TLSInfo{
		CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"),
		TrustedCAFile: filepath.Join(dir, "ca.pem"), ClientCertAuth: true,
		ClientCertFile: filepath.Join(dir, "cert.pem"), ClientKeyFile: filepath.Join(dir, "key.pem"),
	}, nil
}

// etcdTLS is the client TLS configuration for an external etcd: nil for
// http:// endpoints, else the CA and client certificate given (an https://
// endpoint without a CA file is checked against the system's roots).
func (s *Server) etcdTLS() (*tls.Config, error) {
	o := s.opts
	https := 0
	for _, e := range o.EtcdEndpoints {
		if strings.HasPrefix(e, "https://") {
			https++
		} else if !strings.HasPrefix(e, "http://") {
			return nil, fmt.Errorf("server: etcd endpoint %q: want http:// or https://", e)
		}
	}
	files := o.EtcdCAFile != "" || o.EtcdCertFile != "" || o.EtcdKeyFile != ""
	switch {
	case https == 0 && files:
		return nil, fmt.Errorf("server: --etcd-cafile/--etcd-certfile/--etcd-keyfile are given but the etcd endpoints %v are http://; use https://", o.EtcdEndpoints)
	case https == 0:
		return nil, nil
	case https != len(o.EtcdEndpoints):
		return nil, fmt.Errorf("server: etcd endpoints %v mix http:// and https://", o.EtcdEndpoints)
	case (o.EtcdCertFile == "") != (o.EtcdKeyFile == ""):
		return nil, errors.New("server: --etcd-certfile and --etcd-keyfile go together")
	}
	info := transport.TLSInfo{CertFile: o.EtcdCertFile, KeyFile: o.EtcdKeyFile, TrustedCAFile: o.EtcdCAFile}
	if o.EtcdCertFile == "" {
		// Server authentication only.
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.EtcdCAFile != "" {
			pem, err := os.ReadFile(o.EtcdCAFile)
			if err != nil {
				return nil, fmt.Errorf("server: --etcd-cafile: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("server: --etcd-cafile %s holds no PEM certificate", o.EtcdCAFile)
			}
		}
		return cfg, nil
	}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("server: etcd client certificate (--etcd-cafile %q, --etcd-certfile %q, --etcd-keyfile %q): %w", o.EtcdCAFile, o.EtcdCertFile, o.EtcdKeyFile, err)
	}
	return cfg, nil
}
