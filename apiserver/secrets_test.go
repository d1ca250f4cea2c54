package apiserver_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/store"
)

// Certificate private keys are stored sealed (AES-256-GCM, a key file
// beside the server), re-sealed after a rotation, and a server whose key
// file is not its peers' refuses to start (issue 9, defect 1).
func TestIntegrationCertificateKeysSealedAtRest(t *testing.T) {
	integration(t)
	ctx := context.Background()
	cluster := testenv.StartEtcdCluster(t, 1)
	etcd := cluster.Client(t)
	keys := filepath.Join(t.TempDir(), "encryption-keys")
	opts := apiserver.Options{EtcdEndpoints: cluster.Endpoints(), EncryptionKeyFile: keys}
	srv, admin := testenv.StartServer(t, opts)

	certFile, keyFile, _ := selfSigned(t, t.TempDir())
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	cert, err := admin.Certificates().Create(ctx, &api.Certificate{Meta: api.Meta{Name: "web"}, Spec: api.CertificateSpec{Cert: string(certPEM), Key: string(keyPEM)}})
	if err != nil {
		t.Fatal(err)
	}
	at := "/drover/s/certificates/" + cert.ID
	sealed := func() string {
		t.Helper()
		resp, err := etcd.Get(ctx, at)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reading %s from etcd: %v", at, err)
		}
		return string(resp.Kvs[0].Value)
	}
	ring, err := store.LoadKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	first := ring.CurrentKey()
	stored := sealed()
	if strings.Contains(stored, "PRIVATE KEY") || !strings.HasPrefix(stored, "drover-aesgcm:"+first+":") {
		t.Fatalf("the private key is stored as %.60q..., want sealed with key %s", stored, first)
	}
	// Admins and services read the key back through the API; agents do not.
	creds := readCreds(t, srv)
	if code, body := raw(t, srv.URL(), "GET", "/v1/certificates/"+cert.ID+"/key", "", creds); code != 200 || string(body) != string(keyPEM) {
		t.Fatalf("GET the key: %d (equal: %v)", code, string(body) == string(keyPEM))
	}
	if code, _ := raw(t, srv.URL(), "GET", "/v1/certificates/cert-nope/key", "", creds); code != 404 {
		t.Fatalf("GET the key of no certificate: %d, want 404", code)
	}
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := client.New(srv.URL(), "", "").Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := raw(t, srv.URL(), "GET", "/v1/certificates/"+cert.ID+"/key", "", &api.Credentials{AccessKey: reg.AccessKey, SecretKey: reg.SecretKey}); code != 403 {
		t.Fatalf("an agent reading a private key: %d, want 403", code)
	}
	st := store.New(etcd, "/drover/", nil)
	st.Keyring = ring
	if got, err := st.Secret(ctx, "certificates", cert.ID); err != nil || string(got) != string(keyPEM) {
		t.Fatalf("opening the stored key: %v (equal: %v)", err, string(got) == string(keyPEM))
	}

	// Rotation: a new key first in the file, a restart re-seals.
	srv.Close()
	newKey, err := store.RotateKeyring(keys)
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartServer(t, opts)
	if stored := sealed(); !strings.HasPrefix(stored, "drover-aesgcm:"+newKey+":") {
		t.Fatalf("after rotating to %s and restarting, the key is stored as %.40q...", newKey, stored)
	}
	ring, _ = store.LoadKeyring(keys)
	st.Keyring = ring
	if got, err := st.Secret(ctx, "certificates", cert.ID); err != nil || string(got) != string(keyPEM) {
		t.Fatalf("opening the re-sealed key: %v", err)
	}

	// A server with a key file of its own does not start on this store.
	_, err = apiserver.Start(ctx, apiserver.Options{EtcdEndpoints: cluster.Endpoints(), DataDir: t.TempDir(), Listen: "127.0.0.1:0", Logger: testenv.Logger()})
	if err == nil || !strings.Contains(err.Error(), "encryption keys") {
		t.Fatalf("a server with other encryption keys: want a refusal naming them, got %v", err)
	}
}

// An external etcd that requires client certificates is reached with
// --etcd-cafile/--etcd-certfile/--etcd-keyfile; without them, or with a
// certificate of another CA, the server says it cannot reach etcd.
func TestIntegrationExternalEtcdClientCertificates(t *testing.T) {
	integration(t)
	ctx := context.Background()
	e := testenv.StartEtcdTLS(t)
	_, admin := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: []string{e.Endpoint}, EtcdCAFile: e.CAFile, EtcdCertFile: e.CertFile, EtcdKeyFile: e.KeyFile})
	if _, err := admin.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "over-tls"}}); err != nil {
		t.Fatalf("creating a stack over TLS to etcd: %v", err)
	}
	// Anyone without a certificate gets nothing from etcd.
	anon, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, DialTimeout: 2 * time.Second})
	if err == nil {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err = anon.Get(cctx, "/drover/", clientv3.WithPrefix())
		cancel()
		anon.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate read the store")
	}
	for name, o := range map[string]apiserver.Options{
		"no client certificate":     {EtcdCAFile: e.CAFile},
		"a stranger's certificate":  {EtcdCAFile: e.CAFile, EtcdCertFile: e.StrangerCertFile, EtcdKeyFile: e.StrangerKeyFile},
		"a certificate without key": {EtcdCAFile: e.CAFile, EtcdCertFile: e.CertFile},
		"certificates for http://":  {EtcdCAFile: e.CAFile, EtcdCertFile: e.CertFile, EtcdKeyFile: e.KeyFile, EtcdEndpoints: []string{strings.Replace(e.Endpoint, "https", "http", 1)}},
		"a CA file that is not PEM": {EtcdCAFile: e.KeyFile + ".missing"},
	} {
		if o.EtcdEndpoints == nil {
			o.EtcdEndpoints = []string{e.Endpoint}
		}
		o.DataDir, o.Listen, o.Logger = t.TempDir(), "127.0.0.1:0", testenv.Logger()
		start := time.Now()
		s, err := apiserver.Start(ctx, o)
		if err == nil {
			s.Close()
			t.Errorf("%s: the server started", name)
			continue
		}
		if !strings.Contains(err.Error(), "etcd") {
			t.Errorf("%s: error %q does not say it is about etcd", name, err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("%s: took %s to fail", name, d)
		}
	}
}
