package lb

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/internal/testenv"
)

func selfSigned(t *testing.T, name string) (certPEM, keyPEM string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}))
}

// TLS terminates with SNI over three certificates and a default one (kept
// in the engine, keys sealed), a TCP rule passes bytes through, and the
// stickiness policy keeps a client on one backend.
func TestIntegrationLoadBalancerTLSAndTCP(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (etcd, haproxy)")
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		t.Fatal("haproxy is missing (make deps installs Debian's)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, eng := testenv.StartServer(t, apiserver.Options{})
	port := testenv.FreePort(t)
	backend(t, "web-1", "127.0.0.2", port)
	backend(t, "web-2", "127.0.0.3", port)
	// A TCP echo backend.
	echo, err := net.Listen("tcp", fmt.Sprintf("127.0.0.4:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	var certs []string
	for _, n := range []string{"a.example.com", "b.example.com", "c.example.com", "default.example.com"} {
		crt, key := selfSigned(t, n)
		c, err := eng.Certificates().Create(ctx, &api.Certificate{Meta: api.Meta{Name: strings.Split(n, ".")[0] + "-cert"}, Spec: api.CertificateSpec{Cert: crt, Key: key}})
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c.ID)
	}
	st, _ := eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "tls"}})
	web, _ := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "web"}, Spec: api.ServiceSpec{StackID: st.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}}})
	db, _ := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "db"}, Spec: api.ServiceSpec{StackID: st.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}}})
	for i, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: fmt.Sprintf("tls-web-%d", i+1)}, Spec: api.ContainerSpec{ServiceID: web.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}}, Status: api.ContainerStatus{State: api.ContainerRunning, PrimaryIP: ip}})
	}
	eng.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: "tls-db-1"}, Spec: api.ContainerSpec{ServiceID: db.ID, LaunchConfig: &api.LaunchConfig{Image: "app"}}, Status: api.ContainerStatus{State: api.ContainerRunning, PrimaryIP: "127.0.0.4"}})
	httpsPort, tcpPort, httpPort := testenv.FreePort(t), testenv.FreePort(t), testenv.FreePort(t)
	lbSvc, err := eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "lb"}, Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceLoadBalancer,
		LaunchConfig: &api.LaunchConfig{Image: "rancher/lb-service-haproxy:v0.9.1"},
		LBConfig: &api.LBConfig{PortRules: []api.PortRule{
			{SourcePort: httpsPort, Protocol: "https", TargetPort: port, ServiceID: "web"},
			{SourcePort: tcpPort, Protocol: "tcp", TargetPort: port, ServiceID: "db"},
			{SourcePort: httpPort, Protocol: "http", TargetPort: port, ServiceID: "web"},
		}, CertificateIDs: certs[:3], DefaultCertificateID: certs[3],
			StickinessPolicy: &api.StickinessPolicy{Cookie: "DROVERLB", Mode: "insert", Indirect: true, NoCache: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	startLB(t, ctx, Options{Engine: eng, ServiceID: lbSvc.ID, HAProxy: haproxy})
	// SNI picks each certificate; an unknown name gets the default.
	for _, name := range []string{"a.example.com", "b.example.com", "c.example.com", "unknown.example.com"} {
		want := name
		if name == "unknown.example.com" {
			want = "default.example.com"
		}
		testenv.Eventually(t, "TLS for "+name, 30*time.Second, func() error {
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort), &tls.Config{ServerName: name, InsecureSkipVerify: true})
			if err != nil {
				return err
			}
			defer conn.Close()
			cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName
			if cn != want {
				return fmt.Errorf("certificate %q, want %q", cn, want)
			}
			fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", name)
			b, _ := io.ReadAll(conn)
			if !strings.Contains(string(b), "web-") {
				return fmt.Errorf("answer %q", b)
			}
			return nil
		})
	}
	// TCP passes bytes through.
	testenv.Eventually(t, "TCP rule echoes", 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", tcpPort), 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		io.WriteString(c, "ping\n")
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping\n" {
			return fmt.Errorf("echo %q %v", buf, err)
		}
		return nil
	})
	// Stickiness: a client with the cookie stays on one backend.
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 3 * time.Second}
	seen := map[string]int{}
	for i := 0; i < 10; i++ {
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", httpPort))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		seen[strings.Fields(string(b))[0]]++
	}
	if len(seen) != 1 {
		t.Fatalf("a client with the stickiness cookie saw %v", seen)
	}
}
