// Package testenv starts the real parts drover's integration tests run
// against: an external etcd cluster (Debian's etcd-server) and drover
// servers. Everything is on loopback and cleaned up when the test ends.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdBinary finds etcd or fails the test saying how to get it.
func EtcdBinary(t testing.TB) string {
	t.Helper()
	for _, p := range []string{os.Getenv("DROVER_TEST_ETCD"), "/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	t.Fatal("etcd is not installed: run `make test` (it installs it) or `apt-get install etcd-server`, or set DROVER_TEST_ETCD")
	return ""
}

// EtcdMember is one etcd process of a test cluster.
type EtcdMember struct {
	Name      string
	ClientURL string
	PeerURL   string
	dataDir   string
	cmd       *exec.Cmd
	args      []string
	bin       string
	logFile   string
}

// EtcdCluster is an n-member etcd cluster on loopback.
type EtcdCluster struct {
	t       testing.TB
	Members []*EtcdMember
}

// FreePort returns a loopback port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// StartEtcdCluster starts n etcd members and waits until the cluster answers.
func StartEtcdCluster(t testing.TB, n int) *EtcdCluster {
	t.Helper()
	bin := EtcdBinary(t)
	dir := t.TempDir()
	c := &EtcdCluster{t: t}
	var initial []string
	for i := 0; i < n; i++ {
		m := &EtcdMember{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", FreePort(t)),
			dataDir:   filepath.Join(dir, fmt.Sprintf("m%d", i)),
			bin:       bin,
			logFile:   filepath.Join(dir, fmt.Sprintf("m%d.log", i)),
		}
		initial = append(initial, m.Name+"="+m.PeerURL)
		c.Members = append(c.Members, m)
	}
	token := fmt.Sprintf("drover-test-%d", time.Now().UnixNano())
	for _, m := range c.Members {
		m.args = []string{
			"--name", m.Name, "--data-dir", m.dataDir,
			"--listen-client-urls", m.ClientURL, "--advertise-client-urls", m.ClientURL,
			"--listen-peer-urls", m.PeerURL, "--initial-advertise-peer-urls", m.PeerURL,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token, "--log-level", "warn", "--logger", "zap",
		}
		if err := m.start(); err != nil {
			t.Fatalf("starting etcd %s: %v", m.Name, err)
		}
	}
	t.Cleanup(func() {
		for _, m := range c.Members {
			m.stop()
		}
	})
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		if _, err := cli.Put(ctx, "/testenv/ready", "1"); err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("etcd cluster did not become ready in 60s; logs in %s", dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return c
}

func (m *EtcdMember) start() error {
	lf, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	m.cmd = exec.Command(m.bin, m.args...)
	m.cmd.Stdout, m.cmd.Stderr = lf, lf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return m.cmd.Start()
}

func (m *EtcdMember) stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

// Stop stops member i (its data stays, so Start brings it back).
func (c *EtcdCluster) Stop(i int) { c.Members[i].stop() }

// Start restarts a stopped member i.
func (c *EtcdCluster) Start(i int) {
	c.t.Helper()
	if err := c.Members[i].start(); err != nil {
		c.t.Fatalf("restarting etcd %s: %v", c.Members[i].Name, err)
	}
}

// Endpoints are the members' client URLs.
func (c *EtcdCluster) Endpoints() []string {
	var out []string
	for _, m := range c.Members {
		out = append(out, m.ClientURL)
	}
	return out
}

// Client returns an etcd client of the whole cluster, closed at cleanup.
func (c *EtcdCluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// ListenUDPAndTCP listens on one loopback port number for both UDP and TCP
// (a DNS server's pair). The kernel picks a free UDP port whose TCP twin
// may be taken by another test: it tries again then.
func ListenUDPAndTCP(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	for attempt := 0; ; attempt++ {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
		if attempt == 20 {
			t.Fatalf("no loopback port free for both UDP and TCP: %v", err)
		}
	}
}
