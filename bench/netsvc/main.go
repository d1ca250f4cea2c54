// Command netsvc benchmarks drover dns and drover metadata, each a separate
// process fed by a drover server holding 10,000 services (1,000 of them
// Kubernetes services) and 50,000 containers. It prints one line per figure:
// DNS queries/s (with Debian's dnsperf) for engine and Kubernetes names and
// per core of the DNS daemon, DNS p99 latency, the memory of each daemon,
// and metadata requests/s. Then, on a second server of its own: metadata's
// JSON list of 1,000 containers beside a bare net/http server serving the
// same bytes, and the time from an engine change to metadata's answer at
// 10,000 containers beside a raw engine watch.
//
// Usage: go run ./bench/netsvc [-drover bin/drover]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

var droverBin = flag.String("drover", "bin/drover", "drover binary")

func main() {
	flag.Parse()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func freePort() int {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func start(args ...string) (*exec.Cmd, error) {
	cmd := exec.Command(*droverBin, args...)
	cmd.Stderr = os.Stderr
	return cmd, cmd.Start()
}

func run() error {
	if _, err := exec.LookPath("dnsperf"); err != nil {
		return fmt.Errorf("dnsperf is not installed: make deps (apt-get install dnsperf)")
	}
	dir, err := os.MkdirTemp("", "drover-netsvc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	creds := filepath.Join(dir, "credentials.json")
	srv, err := start("server", "--listen", fmt.Sprintf("127.0.0.1:%d", freePort()), "--data-dir", dir, "--scheduler=false", "--log-level", "warn")
	if err != nil {
		return err
	}
	procs := []*exec.Cmd{srv}
	defer func() {
		for _, p := range procs {
			p.Process.Signal(os.Interrupt)
			p.Wait()
		}
	}()
	var c *client.Client
	for i := 0; ; i++ {
		if c, err = client.FromCredentialsFile(creds); err == nil && c.Ping(context.Background()) == nil {
			break
		}
		if i > 600 {
			return fmt.Errorf("server did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintln(os.Stderr, "bench: loading 10,000 services and 50,000 containers")
	if err := load(c); err != nil {
		return err
	}
	dnsPort, mdPort := freePort(), freePort()
	dnsd, err := start("dns", "--listen", fmt.Sprintf("127.0.0.1:%d", dnsPort), "--upstream", "127.0.0.1:1", "--metrics-listen", "", "--credentials", creds, "--state-dir", filepath.Join(dir, "dns-state"), "--log-level", "warn")
	if err != nil {
		return err
	}
	procs = append(procs, dnsd)
	mdd, err := start("metadata", "--listen", fmt.Sprintf("127.0.0.1:%d", mdPort), "--xff", "--credentials", creds, "--state-dir", filepath.Join(dir, "metadata-state"), "--log-level", "warn")
	if err != nil {
		return err
	}
	procs = append(procs, mdd)
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", dnsPort)
	// Ready when the last service loaded answers.
	for i := 0; ; i++ {
		m := new(mdns.Msg)
		m.SetQuestion("svc99.stack99.drover.internal.", mdns.TypeA)
		if r, err := mdns.Exchange(m, dnsAddr); err == nil && len(r.Answer) == 5 {
			break
		}
		if i > 1200 {
			return fmt.Errorf("dns never had the full record set")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i := 0; ; i++ {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/latest/containers", mdPort))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.Count(string(b), "\n") >= 50000 {
				break
			}
		}
		if i > 1200 {
			return fmt.Errorf("metadata never had every container")
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, kind := range []string{"engine", "kubernetes"} {
		qps, perCore, avg, err := dnsperf(dnsAddr, dnsd.Process.Pid, kind, dir)
		if err != nil {
			return err
		}
		fmt.Printf("netsvc: dns %s names, dnsperf over loopback: %.0f queries/s, %.0f per core of the dns daemon (goal >= 30000 per core), average latency %.3f ms\n", kind, qps, perCore, avg*1000)
	}
	p50, p99 := dnsLatency(dnsAddr)
	fmt.Printf("netsvc: dns latency, one query at a time (miekg/dns client): p50 %.3f ms, p99 %.3f ms (goal p99 < 2 ms)\n", p50, p99)
	rps, mdPerCore := metadataLoad(mdPort, mdd.Process.Pid)
	fmt.Printf("netsvc: metadata self/container/primary_ip, 16 keep-alive clients over loopback: %.0f requests/s (%.0f per core of the daemon) (goal >= 20000)\n", rps, mdPerCore)
	fmt.Printf("netsvc: memory holding 10,000 services and 50,000 containers: dns %.0f MiB, metadata %.0f MiB RSS\n", rssMiB(dnsd.Process.Pid), rssMiB(mdd.Process.Pid))
	return metadataFigures(dir)
}

func load(c *client.Client) error {
	ctx := context.Background()
	type job struct {
		st, sv int
		stack  string
	}
	stacks := make([]string, 100)
	for i := range stacks {
		s, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("stack%d", i)}})
		if err != nil {
			return err
		}
		stacks[i] = s.ID
	}
	jobs := make(chan job, 10000)
	for st := 0; st < 100; st++ {
		for sv := 0; sv < 100; sv++ {
			jobs <- job{st, sv, stacks[st]}
		}
	}
	close(jobs)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				svc := &api.Service{Meta: api.Meta{Name: fmt.Sprintf("svc%d", j.sv)}, Spec: api.ServiceSpec{StackID: j.stack, Kind: api.ServiceContainer, LaunchConfig: &api.LaunchConfig{Image: "app"}}}
				if j.sv%10 == 0 {
					svc.Spec.Kind, svc.Spec.VIP, svc.Spec.LaunchConfig = api.ServiceKubernetes, fmt.Sprintf("10.43.%d.%d", j.st, j.sv), nil
					svc.Labels = map[string]string{"io.drover.kubernetes.namespace": fmt.Sprintf("ns%d", j.st), "io.drover.kubernetes.name": fmt.Sprintf("svc%d", j.sv), "io.drover.kubernetes.uid": fmt.Sprintf("u%d-%d", j.st, j.sv)}
					svc.Spec.Ports = []api.ServicePort{{Name: "http", Port: 80, Protocol: "tcp"}}
				}
				created, err := c.Services().Create(ctx, svc)
				if err != nil {
					firstErr.Store(err)
					return
				}
				for i := 0; i < 5; i++ {
					ct := &api.Container{Meta: api.Meta{Name: fmt.Sprintf("stack%d-svc%d-%d", j.st, j.sv, i+1)},
						Spec:   api.ContainerSpec{ServiceID: created.ID, ServiceIndex: i + 1, LaunchConfig: &api.LaunchConfig{Image: "app"}},
						Status: api.ContainerStatus{State: "running", PrimaryIP: fmt.Sprintf("10.%d.%d.%d", 42+j.st/50, (j.st%50)*5+i, j.sv+1)}}
					if _, err := c.Containers().Create(ctx, ct); err != nil {
						firstErr.Store(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return e.(error)
	}
	return nil
}

func cpuSeconds(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // clock ticks
}

func rssMiB(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseFloat(f[1], 64)
			return v / 1024
		}
	}
	return 0
}

var qpsRe = regexp.MustCompile(`Queries per second:\s+([0-9.]+)`)
var completedRe = regexp.MustCompile(`Queries completed:\s+([0-9]+)`)
var avgRe = regexp.MustCompile(`Average Latency \(s\):\s+([0-9.]+)`)

func dnsperf(addr string, pid int, kind, dir string) (float64, float64, float64, error) {
	file := filepath.Join(dir, "queries-"+kind)
	f, _ := os.Create(file)
	w := bufio.NewWriter(f)
	for i := 0; i < 20000; i++ {
		st, sv := rand.IntN(100), rand.IntN(100)
		if kind == "engine" {
			fmt.Fprintf(w, "svc%d.stack%d.drover.internal A\n", sv, st)
		} else {
			fmt.Fprintf(w, "svc%d.ns%d.svc.cluster.local A\n", sv/10*10, st)
		}
	}
	w.Flush()
	f.Close()
	host, port, _ := net.SplitHostPort(addr)
	before := cpuSeconds(pid)
	out, err := exec.Command("dnsperf", "-s", host, "-p", port, "-d", file, "-l", "10", "-c", "8", "-q", "256").CombinedOutput()
	used := cpuSeconds(pid) - before
	if err != nil {
		return 0, 0, 0, fmt.Errorf("dnsperf: %v\n%s", err, out)
	}
	m, n, a := qpsRe.FindSubmatch(out), completedRe.FindSubmatch(out), avgRe.FindSubmatch(out)
	if m == nil || n == nil || a == nil {
		return 0, 0, 0, fmt.Errorf("cannot read dnsperf's output:\n%s", out)
	}
	qps, _ := strconv.ParseFloat(string(m[1]), 64)
	done, _ := strconv.ParseFloat(string(n[1]), 64)
	avg, _ := strconv.ParseFloat(string(a[1]), 64)
	return qps, done / used, avg, nil
}

func dnsLatency(addr string) (float64, float64) {
	c := &mdns.Client{Net: "udp", Timeout: time.Second}
	var lat []time.Duration
	for i := 0; i < 5000; i++ {
		m := new(mdns.Msg)
		m.SetQuestion(fmt.Sprintf("svc%d.stack%d.drover.internal.", rand.IntN(100), rand.IntN(100)), mdns.TypeA)
		start := time.Now()
		if _, _, err := c.Exchange(m, addr); err == nil {
			lat = append(lat, time.Since(start))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	return ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100])
}

func metadataLoad(port, pid int) (float64, float64) {
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	hc := &http.Client{Transport: tr}
	var n atomic.Int64
	deadline := time.Now().Add(10 * time.Second)
	before := cpuSeconds(pid)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				st, sv, i := rand.IntN(100), rand.IntN(100), rand.IntN(5)
				req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/latest/self/container/primary_ip", port), nil)
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", 42+st/50, (st%50)*5+i, sv+1))
				resp, err := hc.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	used := cpuSeconds(pid) - before
	return float64(n.Load()) / 10, float64(n.Load()) / used
}
