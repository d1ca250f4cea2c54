package apiserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/pki"
)

// A container's labels ask for an engine key and certificates; the agent of
// its host (and only it) is handed them; a host's kubelet certificates are
// issued on first use; the key goes with the container.
func TestIntegrationContainerSecrets(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	anon := client.New(s.URL(), "", "")
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg1, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node1", AgentIP: "10.9.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	reg2, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node2", AgentIP: "10.9.0.2"})
	if err != nil {
		t.Fatal(err)
	}
	agent1 := client.New(s.URL(), reg1.AccessKey, reg1.SecretKey)
	agent2 := client.New(s.URL(), reg2.AccessKey, reg2.SecretKey)

	// A CA in the engine, as drover cert init leaves it.
	b, err := pki.Generate(pki.Options{ServiceIP: []byte{10, 43, 0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]pki.Pair{"k8s-ca": b.CA, "k8s-kube-proxy": b.Certs["kube-proxy"]} {
		if _, err := admin.Certificates().Create(ctx, &api.Certificate{Meta: api.Meta{Name: name}, Spec: api.CertificateSpec{Cert: string(p.Cert), Key: string(p.Key)}}); err != nil {
			t.Fatal(err)
		}
	}
	ct, err := admin.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "kubelet-1"}, Spec: api.ContainerSpec{HostID: reg1.Host.ID, LaunchConfig: &api.LaunchConfig{Image: "drover/node:x", Labels: map[string]string{
		api.LabelAgentRole:    "service",
		api.LabelCertificates: "k8s-ca, k8s-kube-proxy,k8s-kubelet-client-{host}",
	}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent2.ContainerSecrets(ctx, ct.ID); !api.IsStatus(err, 403) {
		t.Fatalf("another host's agent: want 403, got %v", err)
	}
	sec, err := agent1.ContainerSecrets(ctx, ct.ID)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, c := range sec.Certificates {
		names = append(names, c.Name)
		if c.Key == "" || !strings.Contains(c.Cert, "BEGIN CERTIFICATE") {
			t.Errorf("%s: no key or certificate", c.Name)
		}
	}
	if strings.Join(names, ",") != "k8s-ca,k8s-kube-proxy,k8s-kubelet-client-node1" {
		t.Fatalf("certificates %v", names)
	}
	// The issued certificate is the node's and chains to the CA.
	if _, err := pki.Reissue(b.CA, []byte(sec.Certificates[2].Cert), pki.Options{}); err != nil {
		t.Fatalf("the issued kubelet certificate does not chain to the CA: %v", err)
	}
	kept, _, err := admin.Certificates().List(ctx, client.ListOptions{Name: "k8s-kubelet-serving-node1"})
	if err != nil || len(kept) != 1 || !strings.Contains(strings.Join(kept[0].Status.SANs, ","), "10.9.0.1") {
		t.Fatalf("the serving certificate was not kept with the host's address: %v %v", kept, err)
	}
	// The key works, with the service role, and asking again replaces it.
	svc := client.New(s.URL(), sec.Credentials.AccessKey, sec.Credentials.SecretKey)
	if _, _, err := svc.Hosts().List(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("the container's key: %v", err)
	}
	again, err := agent1.ContainerSecrets(ctx, ct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Certificates[2].Cert != sec.Certificates[2].Cert {
		t.Errorf("the kubelet certificate was issued twice")
	}
	if _, _, err := svc.Hosts().List(ctx, client.ListOptions{}); !api.IsStatus(err, 401) {
		t.Fatalf("the replaced key still works: %v", err)
	}
	// Only the certificates (an agent's refresh after drover cert rotate):
	// the container's key stays as it is.
	svc = client.New(s.URL(), again.Credentials.AccessKey, again.Credentials.SecretKey)
	certs, err := agent1.ContainerCertificates(ctx, ct.ID)
	if err != nil || len(certs) != 3 || certs[1].Key == "" {
		t.Fatalf("certificates only: %d certificates, %v", len(certs), err)
	}
	if _, _, err := svc.Hosts().List(ctx, client.ListOptions{}); err != nil {
		t.Fatalf("reading the certificates alone replaced the container's key: %v", err)
	}
	if _, err := agent2.ContainerCertificates(ctx, ct.ID); !api.IsStatus(err, 403) {
		t.Fatalf("another host's agent, certificates only: want 403, got %v", err)
	}
	// The key goes with the container.
	if _, err := admin.Containers().Delete(ctx, ct.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the container's key is revoked with it", 30*time.Second, func() error {
		if _, _, err := svc.Hosts().List(ctx, client.ListOptions{}); !api.IsStatus(err, 401) {
			return err
		}
		return nil
	})
	// A certificate nobody made is a clear 404.
	ct2, err := admin.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "x-1"}, Spec: api.ContainerSpec{HostID: reg1.Host.ID, LaunchConfig: &api.LaunchConfig{Image: "x", Labels: map[string]string{api.LabelCertificates: "k8s-nope"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent1.ContainerSecrets(ctx, ct2.ID); !api.IsNotFound(err) || !strings.Contains(err.Error(), "k8s-nope") {
		t.Fatalf("a missing certificate: %v", err)
	}
}
