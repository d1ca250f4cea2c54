package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// proc is a child process the benchmark started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // where its output went ("" for our stderr)
	done chan struct{}
}

func startProc(name, logPath string, bin string, args ...string) (*proc, error) {
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	if logPath != "" {
		lf, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		defer lf.Close() // the child has its own copy
		cmd.Stdout, cmd.Stderr = lf, lf
	}
	// The children die with the benchmark even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and waits; after 15 s it kills.
func (p *proc) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "bench: %s did not stop within 15s of SIGTERM; killing it\n", p.name)
		p.cmd.Process.Kill()
		<-p.done
	}
}

// failure describes why p did not come up, with the end of its log.
func (p *proc) failure(err error) error {
	msg := fmt.Sprintf("%s did not come up: %v", p.name, err)
	if p.exited() {
		msg = fmt.Sprintf("%s exited (%v) before it came up", p.name, p.cmd.ProcessState)
	}
	if p.log != "" {
		if b, rerr := os.ReadFile(p.log); rerr == nil {
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 10 {
				lines = lines[len(lines)-10:]
			}
			msg += "; last lines of its log:\n" + strings.Join(lines, "\n")
		}
	}
	return errors.New(msg)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// etcdBinary finds Debian's etcd (make deps installs it), as the tests do.
func etcdBinary() (string, error) {
	for _, p := range []string{*etcdBin, os.Getenv("DROVER_TEST_ETCD"), "/usr/bin/etcd", "/usr/local/bin/etcd"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p, nil
	}
	return "", errors.New("etcd is not installed: run `make deps` (it installs Debian's etcd-server) or pass -etcd")
}

// startEtcd starts a single-member etcd on free loopback ports under dir,
// with the flags internal/testenv uses, and waits until it takes a write.
func startEtcd(ctx context.Context, dir string) (*proc, *clientv3.Client, string, error) {
	bin, err := etcdBinary()
	if err != nil {
		return nil, nil, "", err
	}
	cport, err := freePort()
	if err != nil {
		return nil, nil, "", err
	}
	pport, err := freePort()
	if err != nil {
		return nil, nil, "", err
	}
	clientURL := fmt.Sprintf("http://127.0.0.1:%d", cport)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", pport)
	p, err := startProc("etcd", filepath.Join(dir, "etcd.log"), bin,
		"--name", "bench", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "bench="+peerURL, "--initial-cluster-state", "new",
		"--initial-cluster-token", fmt.Sprintf("drover-bench-%d", time.Now().UnixNano()),
		"--log-level", "warn", "--logger", "zap")
	if err != nil {
		return nil, nil, "", err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{clientURL}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		p.stop()
		return nil, nil, "", fmt.Errorf("etcd client: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cli.Put(wctx, "/bench/ready", "1")
		cancel()
		if err == nil {
			return p, cli, clientURL, nil
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			cli.Close()
			p.stop()
			return nil, nil, "", p.failure(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startServer starts bin/drover server against the external etcd with the
// controllers off: the scheduler and garbage collector would otherwise act on
// the benchmark's objects while they are being counted.
func startServer(ctx context.Context, dir, etcdURL string) (*proc, *client.Client, error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	dataDir := filepath.Join(dir, "drover")
	p, err := startProc("drover server", "", *droverBin, "server",
		"--etcd-endpoints", etcdURL, "--controllers=false",
		"--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn")
	if err != nil {
		return nil, nil, fmt.Errorf("%w (run make build first)", err)
	}
	credsPath := filepath.Join(dataDir, "credentials.json")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := client.FromCredentialsFile(credsPath)
		if err == nil {
			b, _ := os.ReadFile(credsPath)
			json.Unmarshal(b, &benchCreds)
			if err = c.Ping(ctx); err == nil {
				return p, c, nil
			}
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, nil, p.failure(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// benchCreds are the server's admin credentials, for plain HTTP requests.
var benchCreds api.Credentials

// memory reads a process's /proc status memory lines (Vm*, Rss*), in MiB.
func memory(pid int) map[string]float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (strings.HasPrefix(f[0], "Vm") || strings.HasPrefix(f[0], "Rss")) {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v / 1024
		}
	}
	return out
}
