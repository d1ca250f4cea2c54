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
	if err := parseCLI(fs, args[1:]); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	have, _, err := c.Certificates().List(ctx, client.ListOptions{LabelSelector: pkiLabel + "=kubernetes"})
	if err != nil {
		return err
	}
	if len(have) > 0 {
		return addHostCerts(ctx, c, have, stdout)
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
		cert := &api.Certificate{Meta: api.Meta{Name: pkiName(n), Labels: map[string]string{pkiLabel: "kubernetes"}}, Spec: api.CertificateSpec{Cert: string(p.Cert), Key: string(p.Key)}}
		if _, err := c.Certificates().Create(ctx, cert); err != nil {
			return fmt.Errorf("storing %s: %w", pkiName(n), err)
		}
	}
	fmt.Fprintf(stdout, "the Kubernetes PKI is in the engine: %d certificates (k8s-*), for %d hosts; drover kubeconfig prints the admin's kubeconfig\n", len(pairs), len(hosts))
	return nil
}

// addHostCerts gives the hosts that joined since the PKI was made their
// kubelet certificates, signed by the CA kept in the engine.
func addHostCerts(ctx context.Context, c *client.Client, have []api.Certificate, stdout io.Writer) error {
	byName := map[string]*api.Certificate{}
	for i := range have {
		byName[have[i].Name] = &have[i]
	}
	ca := byName[pkiName("ca")]
	if ca == nil {
		return fmt.Errorf("the engine holds Kubernetes certificates but no %s: remove them (label %s=kubernetes) and run drover cert init again", pkiName("ca"), pkiLabel)
	}
	hosts, _, err := c.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		return err
	}
	added := 0
	for _, h := range hosts {
		if byName[pkiName("kubelet-client-"+h.Name)] != nil {
			continue
		}
		key, err := c.CertificateKey(ctx, ca.ID)
		if err != nil {
			return fmt.Errorf("reading the CA key: %w", err)
		}
		ph := pki.Host{Name: h.Name}
		if ip := net.ParseIP(h.Status.AgentIP); ip != nil {
			ph.IPs = []net.IP{ip}
		}
		cl, sv, err := pki.HostCerts(pki.Pair{Cert: []byte(ca.Spec.Cert), Key: key}, ph, pki.Options{})
		if err != nil {
			return err
		}
		for n, p := range map[string]pki.Pair{"kubelet-client-" + h.Name: cl, "kubelet-serving-" + h.Name: sv} {
			cert := &api.Certificate{Meta: api.Meta{Name: pkiName(n), Labels: map[string]string{pkiLabel: "kubernetes"}}, Spec: api.CertificateSpec{Cert: string(p.Cert), Key: string(p.Key)}}
			if _, err := c.Certificates().Create(ctx, cert); err != nil {
				return fmt.Errorf("storing %s: %w", pkiName(n), err)
			}
		}
		added++
	}
	if added == 0 {
		fmt.Fprintf(stdout, "the Kubernetes PKI is in the engine already (%d certificates, every host has its kubelet's); nothing changed\n", len(have))
		return nil
	}
	fmt.Fprintf(stdout, "kubelet certificates added for %d host(s) that joined since the PKI was made\n", added)
	return nil
}

// runCertRotate gives every leaf certificate of the Kubernetes PKI a new key
// and a new certificate from the same CA. The CAs and the service-account
// key stay: what holds an old certificate keeps working until it expires,
// and picks the new one up when it restarts.
func runCertRotate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover cert rotate", stderr)
	if err := parseCLI(fs, args); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	have, _, err := c.Certificates().List(ctx, client.ListOptions{LabelSelector: pkiLabel + "=kubernetes"})
	if err != nil {
		return err
	}
	cas := map[string]pki.Pair{}
	for _, n := range []string{"ca", "front-proxy-ca"} {
		for _, h := range have {
			if h.Name == pkiName(n) {
				key, err := c.CertificateKey(ctx, h.ID)
				if err != nil {
					return fmt.Errorf("reading the key of %s: %w", h.Name, err)
				}
				cas[n] = pki.Pair{Cert: []byte(h.Spec.Cert), Key: key}
			}
		}
	}
	if len(cas) != 2 {
		return fmt.Errorf("the engine holds no Kubernetes CAs: make the PKI first (drover cert init)")
	}
	rotated := 0
	for _, h := range have {
		switch h.Name {
		case pkiName("ca"), pkiName("front-proxy-ca"), pkiName("service-account"):
			continue
		}
		ca := cas["ca"]
		if h.Name == pkiName("front-proxy-client") {
			ca = cas["front-proxy-ca"]
		}
		p, err := pki.Reissue(ca, []byte(h.Spec.Cert), pki.Options{})
		if err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
		if _, err := c.Certificates().Patch(ctx, h.ID, map[string]any{"spec": map[string]any{"cert": string(p.Cert), "key": string(p.Key)}}); err != nil {
			return fmt.Errorf("storing the new %s: %w", h.Name, err)
		}
		rotated++
	}
	fmt.Fprintf(stdout, "%d certificates rotated (new keys, same CAs); old ones stay valid until they expire\n", rotated)
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

// runKubeconfig: drover kubeconfig --server URL prints the admin kubeconfig.
func runKubeconfig(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover kubeconfig", stderr)
	server := fs.String("apiserver", "https://127.0.0.1:6443", "the Kubernetes apiserver URL to write (--server is the engine's)")
	if err := parseCLI(fs, args); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	get := func(name string) (*api.Certificate, error) {
		list, _, err := c.Certificates().List(ctx, client.ListOptions{Name: pkiName(name)})
		if err != nil {
			return nil, err
		}
		if len(list) != 1 {
			return nil, fmt.Errorf("the engine has no certificate %s: make the Kubernetes PKI first (drover cert init)", pkiName(name))
		}
		return &list[0], nil
	}
	ca, err := get("ca")
	if err != nil {
		return err
	}
	admin, err := get("admin")
	if err != nil {
		return err
	}
	key, err := c.CertificateKey(ctx, admin.ID)
	if err != nil {
		return fmt.Errorf("reading the admin's key: %w", err)
	}
	b := &pki.Bundle{CA: pki.Pair{Cert: []byte(ca.Spec.Cert)}, Certs: map[string]pki.Pair{"admin": {Cert: []byte(admin.Spec.Cert), Key: key}}}
	kc, err := b.Kubeconfig("admin", *server)
	if err != nil {
		return err
	}
	_, err = stdout.Write(kc)
	return err
}
