package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/pki"
)

// The Kubernetes stack's PKI lives in the engine as certificates named
// k8s-<name>, labelled io.drover.pki=kubernetes, private keys sealed at rest.
const pkiLabel = "io.drover.pki"

func pkiName(name string) string { return "k8s-" + name }

// pkiCerts is the PKI as the engine holds it, by short name (ca, admin,
// kubelet-client-<host>, ...).
type pkiCerts struct {
	c     *client.Client
	certs map[string]*api.Certificate
}

func loadPKI(ctx context.Context, c *client.Client) (*pkiCerts, error) {
	list, _, err := c.Certificates().List(ctx, client.ListOptions{LabelSelector: pkiLabel + "=kubernetes"})
	if err != nil {
		return nil, err
	}
	p := &pkiCerts{c: c, certs: map[string]*api.Certificate{}}
	for i := range list {
		p.certs[strings.TrimPrefix(list[i].Name, pkiName(""))] = &list[i]
	}
	return p, nil
}

// pair reads a certificate with its private key.
func (p *pkiCerts) pair(ctx context.Context, name string) (pki.Pair, error) {
	cert := p.certs[name]
	if cert == nil {
		return pki.Pair{}, fmt.Errorf("the engine has no certificate %s: make the Kubernetes PKI first (drover cert init)", pkiName(name))
	}
	key, err := p.c.CertificateKey(ctx, cert.ID)
	if err != nil {
		return pki.Pair{}, fmt.Errorf("reading the key of %s: %w", cert.Name, err)
	}
	return pki.Pair{Cert: []byte(cert.Spec.Cert), Key: key}, nil
}

// add stores a new certificate of the PKI.
func (p *pkiCerts) add(ctx context.Context, name string, pair pki.Pair) error {
	cert := &api.Certificate{Meta: api.Meta{Name: pkiName(name), Labels: map[string]string{pkiLabel: "kubernetes"}}, Spec: api.CertificateSpec{Cert: string(pair.Cert), Key: string(pair.Key)}}
	if _, err := p.c.Certificates().Create(ctx, cert); err != nil {
		return fmt.Errorf("storing %s: %w", pkiName(name), err)
	}
	return nil
}

// runCert: drover cert init | rotate.
func runCert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "rotate" {
		return runCertRotate(ctx, args[1:], stdout, stderr)
	}
	if len(args) == 0 || args[0] != "init" {
		return usageError{"usage: drover cert init [--service-ip IP] [--apiserver-name NAME,...] [--apiserver-ip IP,...] | drover cert rotate"}
	}
	fs, cf := newCLIFlags("drover cert init", stderr)
	serviceIP := fs.String("service-ip", "10.43.0.1", "the apiserver's address in the service network")
	names := fs.String("apiserver-name", "", "more names clients reach the apiserver by (comma-separated)")
	ips := fs.String("apiserver-ip", "", "more addresses clients reach the apiserver at (comma-separated)")
	c, err := cf.connect(fs, args[1:])
	if c == nil {
		return err // nil after -h
	}
	have, err := loadPKI(ctx, c)
	if err != nil {
		return err
	}
	if len(have.certs) > 0 {
		return addHostCerts(ctx, have, stdout)
	}
	o := pki.Options{ServiceIP: net.ParseIP(*serviceIP)}
	if o.ServiceIP == nil {
		return usageError{fmt.Sprintf("--service-ip %q is not an address", *serviceIP)}
	}
	o.APIServerNames = append(o.APIServerNames, split(*names)...)
	for _, s := range split(*ips) {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError{fmt.Sprintf("--apiserver-ip %q is not an address", s)}
		}
		o.APIServerIPs = append(o.APIServerIPs, ip)
	}
	return makePKI(ctx, have, o, stdout)
}

// makePKI makes the whole Kubernetes PKI for the hosts the engine has (their
// names and addresses go into the apiserver's certificate too) and stores it.
func makePKI(ctx context.Context, have *pkiCerts, o pki.Options, stdout io.Writer) error {
	c := have.c
	hosts, _, err := c.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	for _, h := range hosts {
		ph := pki.Host{Name: h.Name}
		if ip := net.ParseIP(h.Status.AgentIP); ip != nil {
			ph.IPs = append(ph.IPs, ip)
			o.APIServerIPs = append(o.APIServerIPs, ip)
		}
		o.Hosts = append(o.Hosts, ph)
		o.APIServerNames = append(o.APIServerNames, h.Name)
	}
	b, err := pki.Generate(o)
	if err != nil {
		return err
	}
	pairs := map[string]pki.Pair{"ca": b.CA, "front-proxy-ca": b.FrontProxyCA, "service-account": {Cert: b.ServiceAccountCert, Key: b.ServiceAccountKey}}
	for n, p := range b.Certs {
		pairs[n] = p
	}
	for n, p := range pairs {
		if err := have.add(ctx, n, p); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "the Kubernetes PKI is in the engine: %d certificates (k8s-*), for %d hosts; drover kubeconfig prints the admin's kubeconfig\n", len(pairs), len(hosts))
	return nil
}

// addHostCerts gives the hosts that joined since the PKI was made their
// kubelet certificates, signed by the CA kept in the engine.
func addHostCerts(ctx context.Context, have *pkiCerts, stdout io.Writer) error {
	hosts, _, err := have.c.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	var ca pki.Pair
	added := 0
	for _, h := range hosts {
		if have.certs["kubelet-client-"+h.Name] != nil {
			continue
		}
		if ca.Key == nil {
			if ca, err = have.pair(ctx, "ca"); err != nil {
				return err
			}
		}
		ph := pki.Host{Name: h.Name}
		if ip := net.ParseIP(h.Status.AgentIP); ip != nil {
			ph.IPs = []net.IP{ip}
		}
		cl, sv, err := pki.HostCerts(ca, ph, pki.Options{})
		if err != nil {
			return err
		}
		if err := have.add(ctx, "kubelet-client-"+h.Name, cl); err != nil {
			return err
		}
		if err := have.add(ctx, "kubelet-serving-"+h.Name, sv); err != nil {
			return err
		}
		added++
	}
	if added == 0 {
		fmt.Fprintf(stdout, "the Kubernetes PKI is in the engine already (%d certificates, every host has its kubelet's); nothing changed\n", len(have.certs))
		return nil
	}
	fmt.Fprintf(stdout, "kubelet certificates added for %d host(s) that joined since the PKI was made\n", added)
	return nil
}

// runCertRotate gives every leaf certificate of the Kubernetes PKI a new key
// and a new certificate from the same CA. The CAs and the service-account
// key stay: what holds an old certificate keeps working until it expires.
// Running components take the new ones without a restart: each agent
// rewrites the certificate files of its containers in place, and the
// apiserver, the kubelets and every client-go client reload them.
func runCertRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover cert rotate", stderr)
	c, err := cf.connect(fs, args)
	if c == nil {
		return err // nil after -h
	}
	have, err := loadPKI(ctx, c)
	if err != nil {
		return err
	}
	ca, err := have.pair(ctx, "ca")
	if err != nil {
		return err
	}
	frontProxyCA, err := have.pair(ctx, "front-proxy-ca")
	if err != nil {
		return err
	}
	rotated := 0
	for name, cert := range have.certs {
		signer := ca
		switch name {
		case "ca", "front-proxy-ca", "service-account":
			continue
		case "front-proxy-client":
			signer = frontProxyCA
		}
		p, err := pki.Reissue(signer, []byte(cert.Spec.Cert), pki.Options{})
		if err != nil {
			return fmt.Errorf("%s: %w", cert.Name, err)
		}
		if _, err := c.Certificates().Patch(ctx, cert.ID, map[string]any{"spec": map[string]any{"cert": string(p.Cert), "key": string(p.Key)}}); err != nil {
			return fmt.Errorf("storing the new %s: %w", cert.Name, err)
		}
		rotated++
	}
	fmt.Fprintf(stdout, "%d certificates rotated (new keys, same CAs); the agents hand them to the running components, which reload them; old ones stay valid until they expire\n", rotated)
	return nil
}

func split(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// runKubeconfig: drover kubeconfig --apiserver URL prints the admin kubeconfig.
func runKubeconfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover kubeconfig", stderr)
	server := fs.String("apiserver", "https://127.0.0.1:6443", "the Kubernetes apiserver URL to write (--server is the engine's)")
	c, err := cf.connect(fs, args)
	if c == nil {
		return err // nil after -h
	}
	have, err := loadPKI(ctx, c)
	if err != nil {
		return err
	}
	ca, ok := have.certs["ca"]
	if !ok {
		return fmt.Errorf("the engine has no certificate %s: make the Kubernetes PKI first (drover cert init)", pkiName("ca"))
	}
	admin, err := have.pair(ctx, "admin")
	if err != nil {
		return err
	}
	b := &pki.Bundle{CA: pki.Pair{Cert: []byte(ca.Spec.Cert)}, Certs: map[string]pki.Pair{"admin": admin}}
	kc, err := b.Kubeconfig("admin", *server)
	if err != nil {
		return err
	}
	_, err = stdout.Write(kc)
	return err
}
