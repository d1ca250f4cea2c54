// Package proc starts and stops the processes the benchmarks run beside
// drover: etcd members and drover servers, as real processes on loopback.
package proc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Proc is a child process the benchmark started and must stop.
type Proc struct {
	Name string
	bin  string
	args []string
	cmd  *exec.Cmd
	log  string // where its output went ("" for our stderr)
	done chan struct{}
}

// Start starts bin with args, its output appended to logPath.
func Start(name, logPath, bin string, args ...string) (*Proc, error) {
	p := &Proc{Name: name, bin: bin, args: args, log: logPath}
	return p, p.start()
}

func (p *Proc) start() error {
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stderr = os.Stderr
	if p.log != "" {
		lf, err := os.OpenFile(p.log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		defer lf.Close() // the child has its own copy
		cmd.Stdout, cmd.Stderr = lf, lf
	}
	// The children die with the benchmark even if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s (%s): %w", p.Name, p.bin, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(p.done)
	return nil
}

// Restart starts a stopped or killed process again with the same arguments.
func (p *Proc) Restart() error {
	if !p.Exited() {
		return fmt.Errorf("%s is still running", p.Name)
	}
	return p.start()
}

func (p *Proc) Pid() int { return p.cmd.Process.Pid }

func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM and waits; after 15 s it kills.
func (p *Proc) Stop() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		fmt.Fprintf(os.Stderr, "bench: %s did not stop within 15s of SIGTERM; killing it\n", p.Name)
		p.Kill()
	}
}

// Kill sends SIGKILL and waits.
func (p *Proc) Kill() {
	if p.Exited() {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
}

// Failure describes why p did not come up, with the end of its log.
func (p *Proc) Failure(err error) error {
	msg := fmt.Sprintf("%s did not come up: %v", p.Name, err)
	if p.Exited() {
		msg = fmt.Sprintf("%s exited (%v) before it came up", p.Name, p.cmd.ProcessState)
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

// FreePort returns a loopback port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// EtcdBinary finds Debian's etcd (make deps installs it), as the tests do;
// flagValue, if set, wins.
func EtcdBinary(flagValue string) (string, error) {
	for _, p := range []string{flagValue, os.Getenv("DROVER_TEST_ETCD"), "/usr/bin/etcd", "/usr/local/bin/etcd"} {
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

// Etcd is an etcd cluster of processes on loopback.
type Etcd struct {
	Members    []*Proc
	ClientURLs []string
}

// StartEtcd starts an n-member etcd cluster under dir, with the flags
// internal/testenv uses, and waits until it takes a write.
func StartEtcd(ctx context.Context, dir, bin string, n int) (*Etcd, *clientv3.Client, error) {
	e := &Etcd{}
	var peers, initial []string
	for i := 0; i < n; i++ {
		cport, err := FreePort()
		if err != nil {
			return nil, nil, err
		}
		pport, err := FreePort()
		if err != nil {
			return nil, nil, err
		}
		e.ClientURLs = append(e.ClientURLs, fmt.Sprintf("http://127.0.0.1:%d", cport))
		peers = append(peers, fmt.Sprintf("http://127.0.0.1:%d", pport))
		initial = append(initial, fmt.Sprintf("m%d=%s", i, peers[i]))
	}
	token := fmt.Sprintf("drover-bench-%d", time.Now().UnixNano())
	for i := 0; i < n; i++ {
		p, err := Start(fmt.Sprintf("etcd m%d", i), filepath.Join(dir, fmt.Sprintf("etcd-m%d.log", i)), bin,
			"--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, fmt.Sprintf("etcd-m%d", i)),
			"--listen-client-urls", e.ClientURLs[i], "--advertise-client-urls", e.ClientURLs[i],
			"--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", token, "--log-level", "warn", "--logger", "zap")
		if err != nil {
			e.Stop()
			return nil, nil, err
		}
		e.Members = append(e.Members, p)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: e.ClientURLs, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		e.Stop()
		return nil, nil, fmt.Errorf("etcd client: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = cli.Put(wctx, "/bench/ready", "1")
		cancel()
		if err == nil {
			return e, cli, nil
		}
		for _, m := range e.Members {
			if m.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
				cli.Close()
				e.Stop()
				return nil, nil, m.Failure(err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops every member.
func (e *Etcd) Stop() {
	for _, m := range e.Members {
		m.Stop()
	}
}

// Drover is a `drover server` process.
type Drover struct {
	*Proc
	URL    string
	Client *client.Client
	Creds  api.Credentials
}

// StartDrover starts bin as `drover server` on a free loopback port, with
// its data in dataDir, against the etcd at etcdURLs, with args added, and
// waits until it answers.
func StartDrover(ctx context.Context, name, bin, dataDir string, etcdURLs []string, args ...string) (*Drover, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	all := append([]string{"server", "--etcd-endpoints", strings.Join(etcdURLs, ","),
		"--data-dir", dataDir, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--log-level", "warn"}, args...)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	p, err := Start(name, filepath.Join(dataDir, "server.log"), bin, all...)
	if err != nil {
		return nil, fmt.Errorf("%w (run make build first)", err)
	}
	d := &Drover{Proc: p}
	return d, d.WaitUp(ctx)
}

// WaitUp waits until the server answers (after a start or restart).
func (d *Drover) WaitUp(ctx context.Context) error {
	credsPath := filepath.Join(d.dataDir(), "credentials.json")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := client.FromCredentialsFile(credsPath)
		if err == nil {
			b, _ := os.ReadFile(credsPath)
			json.Unmarshal(b, &d.Creds)
			if err = c.Ping(ctx); err == nil {
				d.URL, d.Client = d.Creds.URL, c
				return nil
			}
		}
		if d.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			d.Stop()
			return d.Failure(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *Drover) dataDir() string {
	for i, a := range d.args {
		if a == "--data-dir" && i+1 < len(d.args) {
			return d.args[i+1]
		}
	}
	return ""
}
