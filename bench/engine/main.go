// Command engine benchmarks drover server with its embedded etcd, run as a
// separate process (bin/drover) so its memory is its own. It prints one line
// per figure:
//
//	creates/s with concurrent clients
//	p50/p99 latency from a write's acknowledgement to its delivery at each of
//	  100 subscribers while 1,000 writes/s go on
//	time to list 100,000 containers, and server RSS holding them
//
// Usage: go run ./bench/engine [-drover bin/drover] [-objects 100000]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

var (
	droverBin   = flag.String("drover", "bin/drover", "drover binary")
	objects     = flag.Int("objects", 100000, "containers to hold for the list and memory figures")
	writers     = flag.Int("writers", 64, "concurrent clients for the create throughput figure")
	createFor   = flag.Duration("create-for", 10*time.Second, "how long to measure create throughput")
	subscribers = flag.Int("subscribers", 100, "subscribers for the delivery latency figure")
	rate        = flag.Int("rate", 1000, "writes per second during the delivery latency figure")
	rateFor     = flag.Duration("rate-for", 10*time.Second, "how long the paced writes go on")
	hold        = flag.Duration("hold", 0, "keep the server running this long at the end (for profiling)")
)

func run() error {
	flag.Parse()
	dir, err := os.MkdirTemp("", "drover-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, c, err := startServer(dir)
	if err != nil {
		return err
	}
	defer func() { srv.Process.Signal(os.Interrupt); srv.Wait() }()
	ctx := context.Background()

	// Containers need a host and a service to hang from, like real ones.
	host, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "bench-host"}})
	if err != nil {
		return err
	}
	st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "bench"}})
	if err != nil {
		return err
	}
	scale := 1
	svc, err := c.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "web"}, Spec: api.ServiceSpec{StackID: st.ID, Scale: &scale, LaunchConfig: &api.LaunchConfig{Image: "nginx:1.27"}}})
	if err != nil {
		return err
	}
	var seq atomic.Int64
	newContainer := func() *api.Container {
		n := seq.Add(1)
		return &api.Container{
			Meta: api.Meta{Name: fmt.Sprintf("bench-web-%d", n), Labels: map[string]string{"io.drover.stack.name": "bench", "io.drover.service.name": "web", "index": strconv.FormatInt(n, 10)}},
			Spec: api.ContainerSpec{StackID: st.ID, ServiceID: svc.ID, HostID: host.ID, ServiceIndex: int(n), LaunchConfig: &api.LaunchConfig{
				Image: "nginx:1.27", Ports: []string{"80/tcp"}, Environment: map[string]string{"MODE": "bench", "INDEX": strconv.FormatInt(n, 10)},
				Labels: map[string]string{"io.drover.container.pull_image": "never"},
			}},
			Status: api.ContainerStatus{State: "running", PrimaryIP: fmt.Sprintf("10.42.%d.%d", (n/250)%256, n%250+1)},
		}
	}

	// 1. Create throughput.
	n, elapsed, err := createMany(ctx, c, *writers, 0, *createFor, newContainer)
	if err != nil {
		return err
	}
	fmt.Printf("engine: creates/s (%d concurrent clients, embedded etcd): %.0f (goal >= 2000)\n", *writers, float64(n)/elapsed.Seconds())

	// 2. Delivery latency at many subscribers under a steady write rate.
	p50, p99, p99start, delivered, achieved, err := deliveryLatency(ctx, c, newContainer)
	if err != nil {
		return err
	}
	fmt.Printf("engine: event delivery p50, write ack -> subscriber (%d subscribers, %.0f writes/s): %.2f ms\n", *subscribers, achieved, ms(p50))
	fmt.Printf("engine: event delivery p99, write ack -> subscriber (%d subscribers, %.0f writes/s): %.2f ms (goal < 50 ms)\n", *subscribers, achieved, ms(p99))
	fmt.Printf("engine: event delivery p99, write sent -> subscriber: %.2f ms (%d deliveries measured)\n", ms(p99start), delivered)

	// 3. Fill up to the target, then list and measure memory.
	if have := int(seq.Load()); have < *objects {
		if _, _, err := createMany(ctx, c, *writers, *objects-have, 0, newContainer); err != nil {
			return err
		}
	}
	total := int(seq.Load())
	var best, bestRaw time.Duration
	for i := 0; i < 3; i++ {
		start := time.Now()
		list, _, err := c.Containers().List(ctx, client.ListOptions{})
		if err != nil {
			return err
		}
		d := time.Since(start)
		if len(list) != total {
			return fmt.Errorf("list returned %d containers, want %d", len(list), total)
		}
		if best == 0 || d < best {
			best = d
		}
		if d, err = rawList(c); err != nil {
			return err
		}
		if bestRaw == 0 || d < bestRaw {
			bestRaw = d
		}
	}
	fmt.Printf("engine: list %d containers (HTTP + decode into Go structs, best of 3): %.3f s (goal < 1 s)\n", total, best.Seconds())
	fmt.Printf("engine: list %d containers (HTTP bytes only, best of 3): %.3f s\n", total, bestRaw.Seconds())
	mem := memory(srv.Process.Pid)
	fmt.Printf("engine: server RSS holding %d containers: %.0f MiB (peak %.0f MiB; anonymous %.0f MiB, etcd's mmap'd database file %.0f MiB) (goal < 300 MiB)\n",
		total, mem["VmRSS:"], mem["VmHWM:"], mem["RssAnon:"], mem["RssFile:"])
	if *hold > 0 {
		fmt.Fprintf(os.Stderr, "bench: holding the server at %s for %s\n", c.URL(), *hold)
		time.Sleep(*hold)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func startServer(dir string) (*exec.Cmd, *client.Client, error) {
	port := 18000 + os.Getpid()%1000
	cmd := exec.Command(*droverBin, "server", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--data-dir", dir, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("starting %s (run make build first): %w", *droverBin, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		credsPath := filepath.Join(dir, "credentials.json")
		c, err := client.FromCredentialsFile(credsPath)
		if err == nil {
			b, _ := os.ReadFile(credsPath)
			json.Unmarshal(b, &benchCreds)
			if err = c.Ping(context.Background()); err == nil {
				return cmd, c, nil
			}
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			return nil, nil, fmt.Errorf("server did not come up: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// createMany creates count containers (or, with count 0, as many as it can
// for d) with w concurrent clients.
func createMany(ctx context.Context, c *client.Client, w, count int, d time.Duration, mk func() *api.Container) (int, time.Duration, error) {
	var done atomic.Int64
	var firstErr atomic.Value
	stop := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if count > 0 && done.Load() >= int64(count) || count == 0 && time.Now().After(stop) || firstErr.Load() != nil {
					return
				}
				if _, err := c.Containers().Create(ctx, mk()); err != nil {
					firstErr.Store(err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, e.(error)
	}
	return int(done.Load()), time.Since(start), nil
}

type stamp struct {
	rev int64
	at  time.Time
}

func deliveryLatency(ctx context.Context, c *client.Client, mk func() *api.Container) (p50, p99, p99start time.Duration, n int, achieved float64, err error) {
	// Subscribers first, all watching from now.
	type sub struct {
		mu    sync.Mutex
		seen  []stamp
		close func()
	}
	subs := make([]*sub, *subscribers)
	for i := range subs {
		s := &sub{}
		subs[i] = s
		req, _ := http.NewRequestWithContext(ctx, "GET", c.URL()+"/v1/containers?watch=true", nil)
		req.SetBasicAuth(benchCreds.AccessKey, benchCreds.SecretKey)
		resp, err := streamClient.Do(req)
		if err != nil {
			return 0, 0, 0, 0, 0, err
		}
		s.close = func() { resp.Body.Close() }
		go func() {
			// Read raw lines and pick out the revision: decoding 100,000
			// events/s here would measure the benchmark, not the server.
			rd := bufio.NewReaderSize(resp.Body, 256<<10)
			for {
				line, err := rd.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				now := time.Now()
				if rev, ok := changeRevision(line); ok {
					s.mu.Lock()
					s.seen = append(s.seen, stamp{rev, now})
					s.mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	var mu sync.Mutex
	acks := map[int64]stamp{} // rev -> (rev, ack time); start time kept separately
	starts := map[int64]time.Time{}
	total := int(float64(*rate) * rateFor.Seconds())
	jobs := make(chan time.Time, total)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent := range jobs {
				ct, err := c.Containers().Create(ctx, mk())
				if err != nil {
					failed.Add(1)
					continue
				}
				now := time.Now()
				mu.Lock()
				acks[ct.Revision] = stamp{ct.Revision, now}
				starts[ct.Revision] = sent
				mu.Unlock()
			}
		}()
	}
	start := time.Now()
	interval := time.Second / time.Duration(*rate)
	for i := 0; i < total; i++ {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		jobs <- time.Now()
	}
	close(jobs)
	wg.Wait()
	achieved = float64(len(acks)) / time.Since(start).Seconds()
	time.Sleep(time.Second) // let the last deliveries land
	var lat, latStart []time.Duration
	for _, s := range subs {
		s.close()
		s.mu.Lock()
		for _, st := range s.seen {
			a, ok := acks[st.rev]
			if !ok {
				continue
			}
			d := st.at.Sub(a.at)
			if d < 0 {
				d = 0 // delivered before the writer had read its own answer
			}
			lat = append(lat, d)
			latStart = append(latStart, st.at.Sub(starts[st.rev]))
		}
		s.mu.Unlock()
	}
	if want := len(acks) * len(subs); len(lat) != want {
		return 0, 0, 0, 0, 0, fmt.Errorf("%d deliveries measured, want %d (%d writes x %d subscribers): events were lost", len(lat), want, len(acks), len(subs))
	}
	if failed.Load() > 0 {
		return 0, 0, 0, 0, 0, fmt.Errorf("%d writes failed", failed.Load())
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(latStart, func(i, j int) bool { return latStart[i] < latStart[j] })
	return lat[len(lat)/2], lat[len(lat)*99/100], latStart[len(latStart)*99/100], len(lat), achieved, nil
}

// streamClient has no pooling limits, so 100 streams get 100 connections.
var streamClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 0, MaxIdleConnsPerHost: 200}}

var changePrefix = []byte(`{"name":"resource.change","revision":`)

// changeRevision extracts N from a {"name":"resource.change","revision":N,...} line.
func changeRevision(line []byte) (int64, bool) {
	if !bytes.HasPrefix(line, changePrefix) {
		return 0, false
	}
	rest := line[len(changePrefix):]
	end := bytes.IndexByte(rest, ',')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.ParseInt(string(rest[:end]), 10, 64)
	return n, err == nil
}

// rawList times the list request without decoding it.
func rawList(c *client.Client) (time.Duration, error) {
	req, _ := http.NewRequest("GET", c.URL()+"/v1/containers", nil)
	req.SetBasicAuth(benchCreds.AccessKey, benchCreds.SecretKey)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, bufio.NewReaderSize(resp.Body, 1<<20))
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, errors.New("empty list body")
	}
	return time.Since(start), nil
}

// benchCreds are the server's admin credentials, for plain HTTP requests.
var benchCreds api.Credentials

// memory reads the server's /proc status memory lines, in MiB.
func memory(pid int) map[string]float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && strings.HasPrefix(f[0], "Vm") || len(f) >= 2 && strings.HasPrefix(f[0], "Rss") {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v / 1024
		}
	}
	return out
}
