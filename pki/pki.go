// Package pki makes the Kubernetes stack's PKI with crypto/x509: the
// cluster CA, the apiserver's serving certificate, the client certificates
// of the control plane, kube-proxy, the kubelets and the admin, the
// kubelets' serving certificates, the service-account signing key and the
// front-proxy CA and client, as kubeadm and RKE lay them out; and the
// kubeconfigs that use them. Keys are ECDSA P-256.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sort"
	"time"
)

// Pair is a certificate and its private key, PEM-encoded.
type Pair struct {
	Cert, Key []byte
}

// Host is a node of the cluster: its kubelet gets a client certificate as
// system:node:<Name> and a serving certificate for its name and addresses.
type Host struct {
	Name string
	IPs  []net.IP
}

// Options say what the certificates are for.
type Options struct {
	// ServiceIP is the apiserver's address in the service network (the
	// first address of the service CIDR, e.g. 10.43.0.1).
	ServiceIP net.IP
	// APIServerNames and APIServerIPs are the other names and addresses
	// clients reach the apiserver by (the control-plane hosts').
	APIServerNames []string
	APIServerIPs   []net.IP
	ClusterDomain  string // default cluster.local
	Hosts          []Host
	// CAValidFor and ValidFor default to 10 years and 1 year.
	CAValidFor, ValidFor time.Duration
	Now                  func() time.Time
}

// Bundle is the whole PKI.
type Bundle struct {
	CA           Pair
	FrontProxyCA Pair
	// Certs by name: kube-apiserver, kube-apiserver-kubelet-client,
	// kube-controller-manager, kube-scheduler, kube-proxy, admin,
	// front-proxy-client, kubelet-client-<host>, kubelet-serving-<host>.
	Certs map[string]Pair
	// ServiceAccountKey signs service-account tokens (PEM private key);
	// ServiceAccountPub verifies them. ServiceAccountCert is a self-signed
	// certificate of that key, so it can be kept like the others.
	ServiceAccountKey, ServiceAccountPub, ServiceAccountCert []byte
}

// Names lists the bundle's certificates in order.
func (b *Bundle) Names() []string {
	out := make([]string, 0, len(b.Certs))
	for n := range b.Certs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

type signer struct {
	cert *x509.Certificate
	key  crypto.Signer
}

// Generate makes a new bundle.
func Generate(o Options) (*Bundle, error) {
	if o.ServiceIP == nil {
		return nil, errors.New("pki: the apiserver's service IP is needed")
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	if o.CAValidFor == 0 {
		o.CAValidFor = 10 * 365 * 24 * time.Hour
	}
	if o.ValidFor == 0 {
		o.ValidFor = 365 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	b := &Bundle{Certs: map[string]Pair{}}
	ca, caPair, err := newCA("drover-kubernetes-ca", o)
	if err != nil {
		return nil, err
	}
	b.CA = caPair
	fp, fpPair, err := newCA("drover-front-proxy-ca", o)
	if err != nil {
		return nil, err
	}
	b.FrontProxyCA = fpPair
	names := append([]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc." + o.ClusterDomain, "localhost"}, o.APIServerNames...)
	ips := append([]net.IP{o.ServiceIP, net.ParseIP("127.0.0.1")}, o.APIServerIPs...)
	type spec struct {
		name   string
		by     *signer
		cn     string
		orgs   []string
		server bool
		client bool
		dns    []string
		ips    []net.IP
	}
	specs := []spec{
		{name: "kube-apiserver", by: ca, cn: "kube-apiserver", server: true, dns: names, ips: ips},
		{name: "kube-apiserver-kubelet-client", by: ca, cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}, client: true},
		{name: "kube-controller-manager", by: ca, cn: "system:kube-controller-manager", client: true},
		{name: "kube-scheduler", by: ca, cn: "system:kube-scheduler", client: true},
		{name: "kube-proxy", by: ca, cn: "system:kube-proxy", client: true},
		{name: "admin", by: ca, cn: "drover-admin", orgs: []string{"system:masters"}, client: true},
		{name: "front-proxy-client", by: fp, cn: "front-proxy-client", client: true},
	}
	for _, h := range o.Hosts {
		specs = append(specs,
			spec{name: "kubelet-client-" + h.Name, by: ca, cn: "system:node:" + h.Name, orgs: []string{"system:nodes"}, client: true},
			spec{name: "kubelet-serving-" + h.Name, by: ca, cn: h.Name, orgs: []string{"system:nodes"}, server: true, dns: []string{h.Name}, ips: h.IPs})
	}
	for _, s := range specs {
		p, err := issue(s.by, o, s.cn, s.orgs, s.server, s.client, s.dns, s.ips)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: %w", s.name, err)
		}
		b.Certs[s.name] = p
	}
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if b.ServiceAccountKey, err = keyPEM(sa); err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	if err != nil {
		return nil, err
	}
	b.ServiceAccountPub = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	now := o.Now()
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: "drover-service-account-signer"},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(o.CAValidFor), KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &sa.PublicKey, sa)
	if err != nil {
		return nil, err
	}
	b.ServiceAccountCert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return b, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	return n
}

func keyPEM(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func newCA(cn string, o Options) (*signer, Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, Pair{}, err
	}
	now := o.Now()
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(o.CAValidFor),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, Pair{}, err
	}
	cert, _ := x509.ParseCertificate(der)
	kp, err := keyPEM(key)
	if err != nil {
		return nil, Pair{}, err
	}
	return &signer{cert, key}, Pair{Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: kp}, nil
}

func issue(by *signer, o Options, cn string, orgs []string, server, client bool, dns []string, ips []net.IP) (Pair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return Pair{}, err
	}
	now := o.Now()
	tmpl := &x509.Certificate{SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: now.Add(-5 * time.Minute), NotAfter: now.Add(o.ValidFor),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: dns, IPAddresses: ips}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, by.cert, &key.PublicKey, by.key)
	if err != nil {
		return Pair{}, err
	}
	kp, err := keyPEM(key)
	if err != nil {
		return Pair{}, err
	}
	return Pair{Cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Key: kp}, nil
}

// parseCA reads a CA pair (PEM) to sign with.
func parseCA(p Pair) (*signer, error) {
	blk, _ := pem.Decode(p.Cert)
	if blk == nil {
		return nil, errors.New("pki: the CA certificate is not PEM")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: the CA certificate: %w", err)
	}
	kb, _ := pem.Decode(p.Key)
	if kb == nil {
		return nil, errors.New("pki: the CA key is not PEM")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki: the CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("pki: the CA key is not the CA certificate's")
	}
	return &signer{cert, key}, nil
}

// HostCerts issues a host's kubelet client and serving certificates with
// the cluster CA, for a host that joined after the bundle was made.
func HostCerts(ca Pair, h Host, o Options) (client, serving Pair, err error) {
	s, err := parseCA(ca)
	if err != nil {
		return Pair{}, Pair{}, err
	}
	if o.ValidFor == 0 {
		o.ValidFor = 365 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if client, err = issue(s, o, "system:node:"+h.Name, []string{"system:nodes"}, false, true, nil, nil); err != nil {
		return Pair{}, Pair{}, err
	}
	serving, err = issue(s, o, h.Name, []string{"system:nodes"}, true, false, []string{h.Name}, h.IPs)
	return client, serving, err
}

// Reissue makes a new key and certificate in place of old (PEM), with the
// same subject, names, addresses and usages, signed by ca (which must be
// the one that signed old), valid from now: a rotation. Clients holding the
// old one keep working until it expires, as both chain to the same CA.
func Reissue(ca Pair, old []byte, o Options) (Pair, error) {
	s, err := parseCA(ca)
	if err != nil {
		return Pair{}, err
	}
	blk, _ := pem.Decode(old)
	if blk == nil {
		return Pair{}, errors.New("pki: the certificate to rotate is not PEM")
	}
	prev, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return Pair{}, err
	}
	if err := prev.CheckSignatureFrom(s.cert); err != nil {
		return Pair{}, fmt.Errorf("pki: %s was not signed by %s: %w", prev.Subject.CommonName, s.cert.Subject.CommonName, err)
	}
	if o.ValidFor == 0 {
		o.ValidFor = 365 * 24 * time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	var server, client bool
	for _, u := range prev.ExtKeyUsage {
		server = server || u == x509.ExtKeyUsageServerAuth
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	return issue(s, o, prev.Subject.CommonName, prev.Subject.Organization, server, client, prev.DNSNames, prev.IPAddresses)
}

// Kubeconfig is a kubeconfig for the bundle's certificate name (admin,
// kube-controller-manager, kube-scheduler, kube-proxy, kubelet-client-<host>)
// to reach the apiserver at server, trusting the cluster CA, with the
// certificates inline.
func (b *Bundle) Kubeconfig(name, server string) ([]byte, error) {
	p, ok := b.Certs[name]
	if !ok {
		return nil, fmt.Errorf("pki: no certificate %q (have %v)", name, b.Names())
	}
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: drover
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: drover
  context: {cluster: drover, user: %s}
current-context: drover
`, server, b64(b.CA.Cert), name, b64(p.Cert), b64(p.Key), name)), nil
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
