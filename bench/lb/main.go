// Command lb is make bench-lb: how fast drover renders a large LB config,
// requests/s through drover's HAProxy beside the same client straight to
// the backend (the peer, same run), and reloads under load (failed requests,
// time until the new config serves). Everything on loopback; every loop is
// bounded in count and time.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/lb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-lb:", err)
		os.Exit(1)
	}
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func backend(ip string, port int, name string) (func(), error) {
	ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", ip, port))
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) })}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

func run() error {
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		return fmt.Errorf("haproxy is missing (make deps installs it)")
	}
	// 1. Rendering 5,000 port rules.
	var rules []lb.Rule
	for i := 0; i < 5000; i++ {
		rules = append(rules, lb.Rule{Index: i, PortRule: api.PortRule{SourcePort: 80 + i%10, Hostname: fmt.Sprintf("h%d.example.com", i), Path: fmt.Sprintf("/p%d", i%7), TargetPort: 8080},
			Backend: fmt.Sprintf("svc%d_8080", i%500), Targets: []lb.Target{{Name: fmt.Sprintf("c%d-1", i), IP: "10.42.0.5", Port: 8080}, {Name: fmt.Sprintf("c%d-2", i), IP: "10.42.1.5", Port: 8080}}})
	}
	var times []time.Duration
	for i := 0; i < 7; i++ {
		start := time.Now()
		if _, err := lb.Render(lb.Input{Rules: rules}); err != nil {
			return err
		}
		times = append(times, time.Since(start))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	fmt.Printf("lb: render 5,000 port rules (500 backends): median %.1f ms of 7 (goal < 200 ms)\n", float64(times[3].Microseconds())/1000)

	// 2. Requests/s through HAProxy vs straight to the backend.
	port := freePort()
	stop1, err := backend("127.0.0.2", port, "one")
	if err != nil {
		return err
	}
	defer stop1()
	stop2, err := backend("127.0.0.3", port, "two")
	if err != nil {
		return err
	}
	defer stop2()
	dir, err := os.MkdirTemp("/tmp", "drover-bench-lb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	lbPort, healthPort := freePort(), freePort()
	render := func(ip string) error {
		out, err := lb.Render(lb.Input{SocketPath: filepath.Join(dir, "haproxy.sock"), HealthPort: healthPort, Rules: []lb.Rule{{PortRule: api.PortRule{SourcePort: lbPort, TargetPort: port}, Backend: "web_" + fmt.Sprint(port),
			Targets: []lb.Target{{Name: "web-1", IP: ip, Port: port}}}}})
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "haproxy.cfg"), []byte(out.Config), 0o600)
	}
	if err := render("127.0.0.2"); err != nil {
		return err
	}
	master := filepath.Join(dir, "master.sock")
	cmd := exec.Command(haproxy, "-W", "-S", master+",mode,600", "-f", filepath.Join(dir, "haproxy.cfg"))
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	lbURL := fmt.Sprintf("http://127.0.0.1:%d/", lbPort)
	for i := 0; ; i++ {
		if body, err := get(http.DefaultClient, lbURL); err == nil && body == "one" {
			break
		}
		if i > 100 {
			return fmt.Errorf("haproxy did not serve")
		}
		time.Sleep(50 * time.Millisecond)
	}
	direct := load(fmt.Sprintf("http://127.0.0.2:%d/", port), 16, 5*time.Second)
	through := load(lbURL, 16, 5*time.Second)
	fmt.Printf("lb: requests/s, 16 keep-alive clients for 5 s: through HAProxy %.0f, straight to the backend (peer) %.0f; ratio %.2f\n", through, direct, through/direct)

	// 3. Reloads under load: none fails; the new config serves within.
	var ok, failed atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for i := 0; i < 1_000_000 && ctx.Err() == nil; i++ {
				if _, err := get(c, lbURL); err != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	var live []time.Duration
	for i := 0; i < 20; i++ {
		want, ip := "two", "127.0.0.3"
		if i%2 == 1 {
			want, ip = "one", "127.0.0.2"
		}
		if err := render(ip); err != nil {
			return err
		}
		start := time.Now()
		if err := masterCmd(master, "reload"); err != nil {
			return err
		}
		for j := 0; ; j++ {
			if body, err := get(http.DefaultClient, lbURL); err == nil && body == want {
				break
			}
			if j > 2000 {
				return fmt.Errorf("reload %d never served", i)
			}
			time.Sleep(time.Millisecond)
		}
		live = append(live, time.Since(start))
	}
	cancel()
	wg.Wait()
	sort.Slice(live, func(i, j int) bool { return live[i] < live[j] })
	fmt.Printf("lb: 20 reloads under load (4 clients, a new connection per request): %d requests ok, %d failed; new config serving after median %.0f ms, max %.0f ms\n",
		ok.Load(), failed.Load(), float64(live[10].Microseconds())/1000, float64(live[19].Microseconds())/1000)
	return nil
}

func get(c *http.Client, url string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s", resp.Status)
	}
	return string(b), err
}

// load runs n keep-alive clients against url for d and returns requests/s.
func load(url string, n int, d time.Duration) float64 {
	var count atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for time.Now().Before(deadline) {
				if _, err := get(c, url); err == nil {
					count.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(count.Load()) / d.Seconds()
}

func masterCmd(sock, cmd string) error {
	b, err := lb.SocketCommand(sock, cmd, 5*time.Second)
	if err == nil && strings.Contains(b, "Unknown command") {
		err = fmt.Errorf("master: %s", b)
	}
	return err
}
