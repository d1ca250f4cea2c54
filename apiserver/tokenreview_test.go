package apiserver_test

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// A real kube-apiserver started with drover server as its authentication
// webhook accepts engine keys as bearer tokens: an admin key is in
// system:masters, a service key in drover:service (RBAC grants it what is
// bound to that group), an agent key is its host's node; a revoked key
// stops working and a made-up one never does.
func TestIntegrationTokenReviewWebhook(t *testing.T) {
	integration(t)
	ctx := context.Background()
	// kube-apiserver sends a webhook its kubeconfig's credentials over
	// TLS only (client-go's clientcmd): the engine serves HTTPS here.
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	s, _ := testenv.StartServer(t, apiserver.Options{TLSCert: certFile, TLSKey: keyFile})
	creds := readCreds(t, s)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	admin := client.New(s.URL(), creds.AccessKey, creds.SecretKey).WithHTTPClient(hc)
	caPEM, _ := os.ReadFile(certFile)
	key := func(name, role string) *api.APIKey {
		k, err := admin.APIKeys().Create(ctx, &api.APIKey{Meta: api.Meta{Name: name}, Spec: api.APIKeySpec{Role: role}})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	// kube-apiserver calls the webhook with a service key of its own.
	webhookKey := key("kube-apiserver", api.RoleService)
	cfg := filepath.Join(dir, "webhook.kubeconfig")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: drover
  cluster: {server: %q, certificate-authority-data: %q}
users:
- name: kube-apiserver
  user: {token: %q}
contexts:
- name: webhook
  context: {cluster: drover, user: kube-apiserver}
current-context: webhook
`, s.URL()+"/v1/tokenreviews", base64.StdEncoding.EncodeToString(caPEM), webhookKey.Status.AccessKey+":"+webhookKey.Status.SecretKey)), 0o600)
	kube := testenv.StartKube(t, testenv.KubeOptions{APIServerArgs: []string{
		"--authentication-token-webhook-config-file=" + cfg,
		"--authentication-token-webhook-version=v1",
		"--authentication-token-webhook-cache-ttl=1s",
	}})
	as := func(token string) kubernetes.Interface {
		c, err := kubernetes.NewForConfig(&rest.Config{Host: kube.Config.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{Insecure: true}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	list := func(k kubernetes.Interface) error {
		_, err := k.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		return err
	}
	adminKey := key("ops", api.RoleAdmin)
	if err := list(as(adminKey.Status.AccessKey + ":" + adminKey.Status.SecretKey)); err != nil {
		t.Fatalf("an admin key (system:masters): %v", err)
	}
	svc := key("app", api.RoleService)
	svcClient := as(svc.Status.AccessKey + ":" + svc.Status.SecretKey)
	if err := list(svcClient); err == nil || !strings.Contains(err.Error(), `User "drover:`+svc.Status.AccessKey+`"`) {
		t.Fatalf("a service key before any binding: want forbidden naming its user, got %v", err)
	}
	if _, err := kube.Client.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "list-namespaces"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"list"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "drover-service-list-namespaces"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "list-namespaces"},
		Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: "drover:service"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "RBAC grants drover:service what is bound to it", 30*time.Second, func() error { return list(svcClient) })

	// An agent key is its host's node.
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := client.New(s.URL(), "", "").WithHTTPClient(hc).Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "node1", AgentIP: "10.9.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := list(as(reg.AccessKey + ":" + reg.SecretKey)); err == nil || !strings.Contains(err.Error(), `User "system:node:node1"`) {
		t.Fatalf("an agent key: want its node's user, got %v", err)
	}

	// Made up, then revoked: unauthorized.
	if err := list(as("nope:nope")); err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
		t.Fatalf("a made-up key: %v", err)
	}
	if _, err := admin.APIKeys().Delete(ctx, svc.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "a revoked key stops working (after kube-apiserver's 1s cache)", 30*time.Second, func() error {
		if err := list(svcClient); err == nil || !strings.Contains(strings.ToLower(err.Error()), "unauthorized") {
			return fmt.Errorf("still: %v", err)
		}
		return nil
	})

	// The webhook itself refuses callers that are not admin or service.
	req, _ := http.NewRequest(http.MethodPost, s.URL()+"/v1/tokenreviews", strings.NewReader(`{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"a:b"}}`))
	req.SetBasicAuth(reg.AccessKey, reg.SecretKey)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an agent calling the webhook: want 403, got %s", resp.Status)
	}
}
