// Command chaos runs writers through two drover servers sharing a 3-member
// etcd cluster while it kills and restarts an etcd member (the leader) and
// a server, and reports what clients would care about:
//
//	acknowledged creates lost (goal 0)
//	creates whose first answer left the outcome unknown (503 Unknown, or no
//	  answer), and how the idempotency key resolved them
//	events lost or duplicated on each server's container stream (goal 0)
//	p99 create time outside and during the faults, with the ratio
//
// Every create is sent as client.Create sends it: with an Idempotency-Key,
// again with the same key after a 503 or no answer. The run is bounded in
// time (-duration) and in writes (-max-writes).
//
// Usage: go run ./bench/chaos [-drover bin/drover] [-duration 60s]
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/bench/internal/proc"
	"github.com/drover/drover/client"
)

var (
	droverBin = flag.String("drover", "bin/drover", "drover binary")
	etcdBin   = flag.String("etcd", "", "etcd binary (default: $DROVER_TEST_ETCD, /usr/bin/etcd, or etcd on PATH)")
	duration  = flag.Duration("duration", 60*time.Second, "length of the run")
	writers   = flag.Int("writers", 8, "concurrent writers per server")
	pause     = flag.Duration("pause", 5*time.Millisecond, "pause between one writer's creates")
	maxWrites = flag.Int("max-writes", 200000, "stop writing after this many creates")
	giveUp    = flag.Duration("give-up", 40*time.Second, "a create not acknowledged after this long is abandoned")
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

// fault is a window during which something was down.
type fault struct {
	what       string
	start, end time.Time
}

// write is one create as its writer saw it.
type write struct {
	start, end time.Time
	id         string
	acked      bool
	unknown    bool // an answer said Unknown, or none came, before the last
	replayed   bool // the acknowledging answer was a replay of an earlier try
	attempts   int
}

func run() error {
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "drover-chaos-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := proc.EtcdBinary(*etcdBin)
	if err != nil {
		return err
	}
	etcd, ecli, err := proc.StartEtcd(ctx, dir, bin, 3)
	if err != nil {
		return err
	}
	defer etcd.Stop()
	defer ecli.Close()
	keys := filepath.Join(dir, "encryption-keys") // shared, as servers of one store must
	var servers []*proc.Drover
	for _, name := range []string{"a", "b"} {
		d, err := proc.StartDrover(ctx, "drover server "+name, *droverBin, filepath.Join(dir, name), etcd.ClientURLs,
			"--controllers=false", "--encryption-key-file", keys)
		if err != nil {
			return err
		}
		defer d.Stop()
		servers = append(servers, d)
	}
	fmt.Fprintf(os.Stderr, "chaos: etcd %v, servers %s and %s; logs in %s\n", etcd.ClientURLs, servers[0].URL, servers[1].URL, dir)

	c := servers[0].Client
	host, err := c.Hosts().Create(ctx, &api.Host{Meta: api.Meta{Name: "chaos-host"}})
	if err != nil {
		return err
	}

	// One watch cache per server, counting what each delivers.
	type seen struct {
		mu   sync.Mutex
		adds map[string]int
	}
	streams := make([]*seen, len(servers))
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var wwg sync.WaitGroup
	for i, d := range servers {
		s := &seen{adds: map[string]int{}}
		streams[i] = s
		cache := client.NewCache(d.Client.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
			OnAdd: func(o *api.Container) { s.mu.Lock(); s.adds[o.ID]++; s.mu.Unlock() },
		}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
		wwg.Add(1)
		go func() { defer wwg.Done(); cache.Run(wctx) }()
		if !cache.WaitForSync(ctx) {
			return fmt.Errorf("the container cache of server %d never synced", i)
		}
	}

	// Writers.
	var (
		mu     sync.Mutex
		writes []write
		count  atomic.Int64
	)
	end := time.Now().Add(*duration)
	body := func(n int64) []byte {
		b, _ := json.Marshal(&api.Container{Meta: api.Meta{Name: fmt.Sprintf("chaos-%d", n)}, Spec: api.ContainerSpec{HostID: host.ID}})
		return b
	}
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64}}
	var wg sync.WaitGroup
	for _, d := range servers {
		for w := 0; w < *writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) && ctx.Err() == nil {
					n := count.Add(1)
					if n > int64(*maxWrites) {
						return
					}
					wr := createOnce(ctx, httpc, d, body(n))
					mu.Lock()
					writes = append(writes, wr)
					mu.Unlock()
					time.Sleep(*pause)
				}
			}()
		}
	}

	// Faults, on a fixed timeline scaled to the run.
	var faults []fault
	at := func(frac float64) time.Time { return end.Add(-*duration).Add(time.Duration(frac * float64(*duration))) }
	sleepUntil := func(t time.Time) bool {
		select {
		case <-time.After(time.Until(t)):
			return true
		case <-ctx.Done():
			return false
		}
	}
	killMember := func(from, to float64) error {
		if !sleepUntil(at(from)) {
			return nil
		}
		i, err := leader(ctx, ecli, etcd)
		if err != nil {
			return err
		}
		f := fault{what: fmt.Sprintf("etcd leader m%d killed", i), start: time.Now()}
		etcd.Members[i].Kill()
		if !sleepUntil(at(to)) {
			return nil
		}
		if err := etcd.Members[i].Restart(); err != nil {
			return err
		}
		f.end = time.Now().Add(5 * time.Second) // recovery counts as the fault's
		faults = append(faults, f)
		fmt.Fprintf(os.Stderr, "chaos: %s at %s, restarted %s later\n", f.what, f.start.Format("15:04:05"), time.Since(f.start).Round(time.Second))
		return nil
	}
	if err := killMember(0.15, 0.30); err != nil {
		return err
	}
	if sleepUntil(at(0.45)) {
		f := fault{what: "server b killed", start: time.Now()}
		servers[1].Kill()
		if sleepUntil(at(0.60)) {
			if err := servers[1].Restart(); err != nil {
				return err
			}
			if err := servers[1].WaitUp(ctx); err != nil {
				return err
			}
			f.end = time.Now().Add(5 * time.Second)
			faults = append(faults, f)
			fmt.Fprintf(os.Stderr, "chaos: %s at %s, back %s later\n", f.what, f.start.Format("15:04:05"), time.Since(f.start).Round(time.Second))
		}
	}
	if err := killMember(0.70, 0.82); err != nil {
		return err
	}
	wg.Wait()

	// Settle: every stream catches up, then compare.
	acked := map[string]bool{}
	unknown, resolvedReplay, resolvedNew, gaveUp := 0, 0, 0, 0
	var in, out []time.Duration
	for _, w := range writes {
		if w.acked {
			acked[w.id] = true
		} else {
			gaveUp++
		}
		if w.unknown {
			unknown++
			if w.acked && w.replayed {
				resolvedReplay++
			} else if w.acked {
				resolvedNew++
			}
		}
		d := w.end.Sub(w.start)
		during := false
		for _, f := range faults {
			if w.end.After(f.start) && w.start.Before(f.end) {
				during = true
			}
		}
		if during {
			in = append(in, d)
		} else {
			out = append(out, d)
		}
	}
	// What the store holds, read straight from etcd: an acknowledged create
	// missing here is lost; one present but unacknowledged is a write whose
	// writer gave up.
	stored := map[string]bool{}
	gctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	resp, err := ecli.Get(gctx, "/drover/o/containers/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("reading the store: %w", err)
	}
	for _, kv := range resp.Kvs {
		stored[filepath.Base(string(kv.Key))] = true
	}
	lost, phantom := 0, 0
	for id := range acked {
		if !stored[id] {
			lost++
		}
	}
	for id := range stored {
		if !acked[id] {
			phantom++
		}
	}
	// Streams: wait (bounded) until each has everything stored, then count.
	deadline := time.Now().Add(30 * time.Second)
	type streamResult struct{ lost, dup, delivered int }
	results := make([]streamResult, len(streams))
	for i, s := range streams {
		for {
			s.mu.Lock()
			missing := 0
			for id := range stored {
				if s.adds[id] == 0 {
					missing++
				}
			}
			s.mu.Unlock()
			if missing == 0 || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		s.mu.Lock()
		var r streamResult
		for id := range stored {
			if s.adds[id] == 0 {
				r.lost++
			}
		}
		for _, n := range s.adds {
			r.delivered++
			if n > 1 {
				r.dup += n - 1
			}
		}
		s.mu.Unlock()
		results[i] = r
	}
	stopWatch()
	wwg.Wait()

	fmt.Printf("chaos: %s, 3-member etcd, 2 servers, %d writers each; faults: %s\n", duration.String(), *writers, describe(faults))
	fmt.Printf("chaos: creates acknowledged %d; acknowledged then lost %d (goal 0); abandoned after %s %d; stored without acknowledgement %d\n",
		len(acked), lost, giveUp.String(), gaveUp, phantom)
	fmt.Printf("chaos: creates whose outcome was unknown (503 Unknown or no answer) %d: resolved by the idempotency key as already made %d, made by the retry %d, unresolved %d\n",
		unknown, resolvedReplay, resolvedNew, unknown-resolvedReplay-resolvedNew)
	for i, r := range results {
		fmt.Printf("chaos: container stream of server %s: %d objects delivered, %d stored ones never delivered (goal 0), %d delivered twice (goal 0)\n",
			[]string{"a", "b"}[i], r.delivered, r.lost, r.dup)
	}
	pin, pout := p99(in), p99(out)
	fmt.Printf("chaos: create p99 during faults %.1f ms (%d creates); outside faults %.1f ms (%d creates); ratio %.1f\n",
		ms(pin), len(in), ms(pout), len(out), float64(pin)/float64(max(pout, 1)))
	if lost > 0 || results[0].lost > 0 || results[1].lost > 0 || results[0].dup > 0 || results[1].dup > 0 {
		return errors.New("acknowledged writes or events were lost or duplicated")
	}
	return nil
}

// createOnce creates one container through d as client.Create does, and
// records how it went.
func createOnce(ctx context.Context, hc *http.Client, d *proc.Drover, body []byte) write {
	key := make([]byte, 16)
	rand.Read(key)
	w := write{start: time.Now()}
	wait := 100 * time.Millisecond
	for time.Since(w.start) < *giveUp && ctx.Err() == nil {
		w.attempts++
		req, _ := http.NewRequestWithContext(ctx, "POST", d.URL+"/v1/containers", bytes.NewReader(body))
		req.SetBasicAuth(d.Creds.AccessKey, d.Creds.SecretKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", hex.EncodeToString(key))
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == http.StatusCreated:
				var obj struct{ ID string }
				json.Unmarshal(b, &obj)
				w.end, w.id, w.acked = time.Now(), obj.ID, true
				w.replayed = resp.Header.Get("Idempotency-Replayed") == "true"
				return w
			case resp.StatusCode == http.StatusServiceUnavailable:
				var e api.Error
				if json.Unmarshal(b, &e) == nil && e.Code == api.CodeUnknown {
					w.unknown = true
				}
			default:
				fmt.Fprintf(os.Stderr, "chaos: create answered %d: %s\n", resp.StatusCode, b)
				w.end = time.Now()
				return w
			}
		} else if w.attempts > 0 {
			// No answer: the request may or may not have reached the store.
			w.unknown = true
		}
		time.Sleep(wait)
		wait = min(2*wait, time.Second)
	}
	w.end = time.Now()
	return w
}

// leader finds the index of the etcd leader.
func leader(ctx context.Context, cli *clientv3.Client, e *proc.Etcd) (int, error) {
	for i, u := range e.ClientURLs {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		st, err := cli.Status(sctx, u)
		cancel()
		if err == nil && st.Leader == st.Header.MemberId {
			return i, nil
		}
	}
	return 0, errors.New("no etcd member says it leads")
}

func describe(fs []fault) string {
	s := ""
	for i, f := range fs {
		if i > 0 {
			s += "; "
		}
		s += fmt.Sprintf("%s for %s", f.what, f.end.Add(-5*time.Second).Sub(f.start).Round(time.Second))
	}
	return s
}

func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[len(ds)*99/100]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
