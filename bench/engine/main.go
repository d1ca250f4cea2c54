// Command engine benchmarks drover server (bin/drover, controllers off)
// against an external etcd it starts, and prints every figure beside the
// same figure for that etcd alone, measured in the same run, with the ratio
// drover/etcd:
//
//	creates/s with concurrent clients | raw etcd puts/s of a value the size
//	  of one stored container, same concurrency, in alternating windows
//	p50/p99 from a write's acknowledgement to its delivery at each of 100
//	  subscribers at 1,000 writes/s | the same with 100 etcd watchers
//	time to list 100,000 containers as HTTP bytes | an etcd range read of
//	  the same stored values
//	server RSS holding them | etcd's RSS
//
// Usage: go run ./bench/engine [-drover bin/drover] [-objects 100000] [-create-for 5s]
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

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
	etcdBin     = flag.String("etcd", "", "etcd binary (default: $DROVER_TEST_ETCD, /usr/bin/etcd, or etcd on PATH)")
	objects     = flag.Int("objects", 100000, "containers to hold for the list and memory figures")
	writers     = flag.Int("writers", 64, "concurrent clients for the create throughput figure")
	createFor   = flag.Duration("create-for", 5*time.Second, "length of each create throughput window")
	windows     = flag.Int("windows", 2, "pairs of create throughput windows (etcd, then drover)")
	subscribers = flag.Int("subscribers", 100, "subscribers for the delivery latency figure")
	rate        = flag.Int("rate", 1000, "writes per second during the delivery latency figure")
	rateFor     = flag.Duration("rate-for", 10*time.Second, "how long the paced writes go on")
	hold        = flag.Duration("hold", 0, "keep the server running this long at the end (for profiling)")
)

// Key prefixes of the raw etcd figures, apart from the server's keys.
const (
	rawPutPrefix   = "/bench-raw/put/"
	rawWatchPrefix = "/bench-raw/watch/"
)

func run() error {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "drover-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	etcdProc, ecli, etcdURL, err := startEtcd(ctx, dir)
	if err != nil {
		return err
	}
	defer etcdProc.Stop()
	defer ecli.Close()
	srv, c, err := startServer(ctx, dir, etcdURL)
	if err != nil {
		return err
	}
	defer srv.Stop()

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

	// The raw etcd figures write the very bytes the server stores for one
	// container, and read the server's container keys directly.
	probe, err := c.Containers().Create(ctx, newContainer())
	if err != nil {
		return err
	}
	objPrefix, value, err := findStored(ctx, ecli, probe.ID)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: a stored container is %d bytes at %s%s; etcd at %s, server at %s\n", len(value), objPrefix, probe.ID, etcdURL, c.URL())

	// 1. Create throughput, in alternating windows so noise hits both.
	var dn, en int
	var dt, et time.Duration
	minR, maxR := 0.0, 0.0
	var rawSeq atomic.Int64
	for i := 0; i < *windows; i++ {
		n, d, err := putMany(ctx, ecli, *writers, *createFor, value, &rawSeq)
		if err != nil {
			return fmt.Errorf("raw etcd puts: %w", err)
		}
		en, et = en+n, et+d
		eRate := float64(n) / d.Seconds()
		if n, d, err = createMany(ctx, c, *writers, 0, *createFor, newContainer); err != nil {
			return fmt.Errorf("creates: %w", err)
		}
		dn, dt = dn+n, dt+d
		dRate := float64(n) / d.Seconds()
		r := dRate / eRate
		if i == 0 || r < minR {
			minR = r
		}
		if r > maxR {
			maxR = r
		}
		fmt.Fprintf(os.Stderr, "bench: window pair %d: etcd puts/s %.0f, drover creates/s %.0f, ratio %.2f\n", i+1, eRate, dRate, r)
	}
	dRate, eRate := float64(dn)/dt.Seconds(), float64(en)/et.Seconds()
	fmt.Printf("engine: creates/s (%d clients): %.0f; etcd puts/s (same %d-byte value, same etcd, %d clients): %.0f; ratio %.2f (%d window pairs of %s: %.2f-%.2f) (goal >= 0.6)\n",
		*writers, dRate, len(value), *writers, eRate, dRate/eRate, *windows, *createFor, minR, maxR)

	if b, err := metricValue(ctx, c, "drover_server_store_put_batches_total"); err == nil && b > 0 {
		p, _ := metricValue(ctx, c, "drover_server_store_batched_puts_total")
		fmt.Fprintf(os.Stderr, "bench: the server sent %.0f creates to etcd in %.0f requests (%.1f per request)\n", p, b, p/b)
	}

	// 2. Delivery latency at many subscribers under a steady write rate.
	dd, err := droverDelivery(ctx, c, func() (string, error) {
		ct, err := c.Containers().Create(ctx, newContainer())
		if err != nil {
			return "", err
		}
		return ct.ID, nil
	})
	if err != nil {
		return fmt.Errorf("engine delivery: %w", err)
	}
	ed, err := etcdDelivery(ctx, etcdURL, rawWatchPrefix, value)
	if err != nil {
		return fmt.Errorf("etcd delivery: %w", err)
	}
	fmt.Printf("engine: event delivery p50, write ack -> subscriber (%d subscribers, %.0f writes/s): %.2f ms; etcd put ack -> watcher (%d watchers, %.0f puts/s): %.2f ms; ratio %.2f\n",
		dd.subscribers, dd.achieved, ms(dd.p50), ed.subscribers, ed.achieved, ms(ed.p50), ratio(dd.p50, ed.p50))
	fmt.Printf("engine: event delivery p99, write ack -> subscriber (%d subscribers, %.0f writes/s): %.2f ms (goal < 50 ms); etcd put ack -> watcher (%d watchers, %.0f puts/s): %.2f ms; ratio %.2f\n",
		dd.subscribers, dd.achieved, ms(dd.p99), ed.subscribers, ed.achieved, ms(ed.p99), ratio(dd.p99, ed.p99))
	fmt.Printf("engine: event delivery p99, write sent -> subscriber: %.2f ms (%d deliveries); etcd put sent -> watcher: %.2f ms (%d deliveries); ratio %.2f\n",
		ms(dd.p99start), dd.n, ms(ed.p99start), ed.n, ratio(dd.p99start, ed.p99start))

	// 3. Fill up to the target, then list and measure memory.
	if have := int(seq.Load()); have < *objects {
		if _, _, err := createMany(ctx, c, *writers, *objects-have, 0, newContainer); err != nil {
			return err
		}
	}
	total := int(seq.Load())
	var best, bestEtcd time.Duration
	var httpBytes, etcdBytes int64
	for i := 0; i < 3; i++ {
		d, n, err := rawList(ctx, c)
		if err != nil {
			return err
		}
		if best == 0 || d < best {
			best, httpBytes = d, n
		}
		d, n, count, err := etcdRange(ctx, ecli, objPrefix)
		if err != nil {
			return err
		}
		// A count off the target means something else wrote or deleted
		// containers, and the figures would not be of this run's objects.
		if count != total {
			return fmt.Errorf("etcd holds %d containers under %s, want %d", count, objPrefix, total)
		}
		if bestEtcd == 0 || d < bestEtcd {
			bestEtcd, etcdBytes = d, n
		}
	}
	fmt.Printf("engine: list %d containers (HTTP bytes, best of 3): %.3f s, %.1f MB (goal < 1 s); etcd range read of the same %d stored values (clientv3 Get, pages of %d at one revision as the server reads, best of 3): %.3f s, %.1f MB; ratio %.2f\n",
		total, best.Seconds(), float64(httpBytes)/1e6, total, listPage, bestEtcd.Seconds(), float64(etcdBytes)/1e6, ratio(best, bestEtcd))
	sm, em := memory(srv.Pid()), memory(etcdProc.Members[0].Pid())
	fmt.Printf("engine: server RSS holding %d containers: %.0f MiB (peak %.0f, anonymous %.0f) (goal < 300 MiB); etcd RSS (holding the server's keys and %d raw ones): %.0f MiB (peak %.0f, anonymous %.0f, mmap'd database file %.0f); ratio %.2f\n",
		total, sm["VmRSS:"], sm["VmHWM:"], sm["RssAnon:"], rawSeq.Load()+int64(ed.writes), em["VmRSS:"], em["VmHWM:"], em["RssAnon:"], em["RssFile:"], sm["VmRSS:"]/em["VmRSS:"])
	if *hold > 0 {
		fmt.Fprintf(os.Stderr, "bench: holding the server at %s (etcd at %s) for %s\n", c.URL(), etcdURL, *hold)
		select {
		case <-time.After(*hold):
		case <-ctx.Done():
		}
	}
	return nil
}

// metricValue reads one unlabelled counter from the server's /metrics.
func metricValue(ctx context.Context, c *client.Client, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.URL()+"/metrics", nil)
	req.SetBasicAuth(benchCreds.AccessKey, benchCreds.SecretKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// ratio is drover's figure over etcd's.
func ratio(drover, etcd time.Duration) float64 {
	if etcd <= 0 {
		return 0
	}
	return float64(drover) / float64(etcd)
}

// findStored finds the etcd key holding the container id and returns the
// prefix of the server's container keys and the stored bytes. It scans every
// key, so it runs while the store is nearly empty.
func findStored(ctx context.Context, cli *clientv3.Client, id string) (prefix string, value []byte, err error) {
	resp, err := cli.Get(ctx, "\x00", clientv3.WithFromKey())
	if err != nil {
		return "", nil, fmt.Errorf("reading etcd: %w", err)
	}
	var key string
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		// The object is the largest JSON value under a key ending in its id
		// (index entries may end in the id too).
		if strings.HasSuffix(k, "/"+id) && len(kv.Value) > len(value) && json.Valid(kv.Value) && strings.Contains(k, "container") {
			key, value = k, kv.Value
		}
	}
	if key == "" {
		return "", nil, fmt.Errorf("no etcd key holds container %s (%d keys scanned): has the server's key layout changed?", id, len(resp.Kvs))
	}
	return strings.TrimSuffix(key, id), value, nil
}

// createMany creates count containers (or, with count 0, as many as it can
// for d) with w concurrent clients.
// Each client is a bare HTTP/1.1 connection, as wrk's are: it writes the
// request bytes and reads only the status line, the headers and as many body
// bytes as Content-Length says. The etcd side's client is gRPC, which spends
// little per request; net/http's client spends about half a core at these
// rates on a 2-core machine, CPU the server and etcd then lack. The figure
// is the server's, not the load generator's.
func createMany(ctx context.Context, c *client.Client, w, count int, d time.Duration, mk func() *api.Container) (int, time.Duration, error) {
	u, err := url.Parse(c.URL())
	if err != nil {
		return 0, 0, err
	}
	conns := make(chan *rawConn, w)
	for i := 0; i < w; i++ {
		rc, err := dialRaw(u.Host)
		if err != nil {
			return 0, 0, err
		}
		defer rc.Close()
		conns <- rc
	}
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(benchCreds.AccessKey+":"+benchCreds.SecretKey))
	head := "POST /v1/containers HTTP/1.1\r\nHost: " + u.Host + "\r\nAuthorization: " + auth + "\r\nContent-Type: application/json\r\nContent-Length: "
	return hammer(w, count, d, func() error {
		body, err := json.Marshal(mk())
		if err != nil {
			return err
		}
		rc := <-conns
		defer func() { conns <- rc }()
		status, err := rc.do(head, body)
		if err != nil {
			return err
		}
		if status != http.StatusCreated {
			return fmt.Errorf("create: HTTP %d", status)
		}
		return nil
	})
}

// rawConn is one kept-alive HTTP/1.1 connection of createMany.
type rawConn struct {
	net.Conn
	rd  *bufio.Reader
	buf []byte
}

func dialRaw(addr string) (*rawConn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &rawConn{Conn: c, rd: bufio.NewReaderSize(c, 16<<10)}, nil
}

// do sends head, the body's length, a blank line and the body, and returns
// the answer's status once its body has been read.
func (c *rawConn) do(head string, body []byte) (int, error) {
	c.buf = append(c.buf[:0], head...)
	c.buf = strconv.AppendInt(c.buf, int64(len(body)), 10)
	c.buf = append(c.buf, "\r\n\r\n"...)
	c.buf = append(c.buf, body...)
	if _, err := c.Write(c.buf); err != nil {
		return 0, err
	}
	line, err := c.rd.ReadSlice('\n')
	if err != nil {
		return 0, fmt.Errorf("reading the answer: %w", err)
	}
	// "HTTP/1.1 201 Created\r\n"
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.1 ")) {
		return 0, fmt.Errorf("not an HTTP/1.1 status line: %q", line)
	}
	status, err := strconv.Atoi(string(line[9:12]))
	if err != nil {
		return 0, fmt.Errorf("status line %q: %w", line, err)
	}
	length := -1
	for {
		h, err := c.rd.ReadSlice('\n')
		if err != nil {
			return 0, fmt.Errorf("reading the answer's headers: %w", err)
		}
		if len(h) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(h, []byte(":")); ok && strings.EqualFold(string(k), "Content-Length") {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(v))); err != nil {
				return 0, fmt.Errorf("Content-Length %q: %w", v, err)
			}
		}
	}
	if length < 0 {
		return 0, errors.New("the answer has no Content-Length (chunked answers are not expected for a create)")
	}
	if _, err := c.rd.Discard(length); err != nil {
		return 0, fmt.Errorf("reading the answer's body: %w", err)
	}
	return status, nil
}

// putMany puts value under fresh keys for d with w concurrent clients.
func putMany(ctx context.Context, cli *clientv3.Client, w int, d time.Duration, value []byte, seq *atomic.Int64) (int, time.Duration, error) {
	val := string(value)
	return hammer(w, 0, d, func() error {
		_, err := cli.Put(ctx, rawPutPrefix+strconv.FormatInt(seq.Add(1), 10), val)
		return err
	})
}

// hammer runs op from w goroutines count times, or with count 0 for d.
func hammer(w, count int, d time.Duration, op func() error) (int, time.Duration, error) {
	var done atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	stop := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < w; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if count > 0 && done.Add(1) > int64(count) || count == 0 && time.Now().After(stop) || firstErr.Load() != nil {
					return
				}
				if err := op(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if count == 0 {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return 0, 0, e.(error)
	}
	n := int(done.Load())
	if count > 0 {
		n = count
	}
	return n, time.Since(start), nil
}

// rawList times the list request without decoding it.
func rawList(ctx context.Context, c *client.Client) (time.Duration, int64, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", c.URL()+"/v1/containers", nil)
	req.SetBasicAuth(benchCreds.AccessKey, benchCreds.SecretKey)
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("list: %s", resp.Status)
	}
	n, err := io.Copy(io.Discard, bufio.NewReaderSize(resp.Body, 1<<20))
	if err != nil {
		return 0, 0, err
	}
	if n == 0 {
		return 0, 0, errors.New("empty list body")
	}
	return time.Since(start), n, nil
}

// listPage is the server's etcd page size for lists (server/store.go).
const listPage = 10000

// etcdRange reads every value under prefix the way the server lists: pages
// of listPage keys, all at the revision of the first page.
func etcdRange(ctx context.Context, cli *clientv3.Client, prefix string) (time.Duration, int64, int, error) {
	start := time.Now()
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	var atRev, bytes int64
	count := 0
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPage)}
		if atRev != 0 {
			opts = append(opts, clientv3.WithRev(atRev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("etcd range read: %w", err)
		}
		if atRev == 0 {
			atRev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			bytes += int64(len(kv.Value))
			count++
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return time.Since(start), bytes, count, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
