package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// metadataFigures runs its own server and metadata daemon: the JSON list
// of 1,000 containers against a bare net/http server serving the same
// bytes, then, at 10,000 containers, the time from an engine change to the
// metadata answer against a raw engine watch seeing the same change.
func metadataFigures(parent string) error {
	dir := filepath.Join(parent, "metadata")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	srv, err := start("server", "--listen", fmt.Sprintf("127.0.0.1:%d", freePort()), "--data-dir", dir, "--controllers=false", "--log-level", "warn")
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
	c, err := waitEngine(filepath.Join(dir, "credentials.json"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	ctrs, err := loadContainers(ctx, c, 0, 1000)
	if err != nil {
		return err
	}
	port := freePort()
	md, err := start("metadata", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--xff", "--credentials", filepath.Join(dir, "credentials.json"), "--state-dir", filepath.Join(dir, "metadata-state"), "--log-level", "warn")
	if err != nil {
		return err
	}
	procs = append(procs, md)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitContainers(base, 1000); err != nil {
		return err
	}

	// The list, as a client asks for it.
	body, err := fetch(base+"/latest/containers", "application/json")
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	peer := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})}
	go peer.Serve(ln)
	defer peer.Close()
	mdRPS, err := listLoad(base+"/latest/containers", body)
	if err != nil {
		return err
	}
	peerRPS, err := listLoad("http://"+ln.Addr().String()+"/", body)
	if err != nil {
		return err
	}
	fmt.Printf("netsvc: metadata JSON list of 1,000 containers (%d KiB), 8 keep-alive clients over loopback: %.0f requests/s (goal >= 1000); bare net/http serving the same bytes (peer): %.0f requests/s; ratio %.2f\n",
		len(body)/1024, mdRPS, peerRPS, mdRPS/peerRPS)

	more, err := loadContainers(ctx, c, 1000, 9000)
	if err != nil {
		return err
	}
	ctrs = append(ctrs, more...)
	if err := waitContainers(base, 10000); err != nil {
		return err
	}
	mdLat, watchLat, err := changeLatency(ctx, c, base, ctrs)
	if err != nil {
		return err
	}
	fmt.Printf("netsvc: metadata engine change -> self answer (long-poll), 10,000 containers: p50 %.2f ms, p99 %.2f ms (goal p99 < 10 ms); raw engine watch (peer): p50 %.2f ms, p99 %.2f ms; ratio of p99s %.2f\n",
		ms(pct(mdLat, 50)), ms(pct(mdLat, 99)), ms(pct(watchLat, 50)), ms(pct(watchLat, 99)), float64(pct(mdLat, 99))/float64(pct(watchLat, 99)))
	return nil
}

func waitEngine(creds string) (*client.Client, error) {
	for i := 0; ; i++ {
		c, err := client.FromCredentialsFile(creds)
		if err == nil && c.Ping(context.Background()) == nil {
			return c, nil
		}
		if i > 600 {
			return nil, fmt.Errorf("server did not start")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type benchContainer struct{ id, ip string }

// loadContainers adds n containers (5 per service, 20 services per stack),
// numbered from first.
func loadContainers(ctx context.Context, c *client.Client, first, n int) ([]benchContainer, error) {
	var mu sync.Mutex
	var out []benchContainer
	jobs := make(chan int)
	errc := make(chan error, 16)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for svcN := range jobs {
				st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("md%d", svcN)}})
				if err != nil {
					errc <- err
					return
				}
				sv, err := c.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: "svc"}, Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceContainer, LaunchConfig: &api.LaunchConfig{Image: "app", Ports: []string{"80/tcp"}}}})
				if err != nil {
					errc <- err
					return
				}
				for i := 0; i < 5; i++ {
					k := svcN*5 + i
					ip := fmt.Sprintf("10.%d.%d.%d", 50+k/65536, k/256%256, k%256)
					ct, err := c.Containers().Create(ctx, &api.Container{Meta: api.Meta{Name: fmt.Sprintf("md%d-svc-%d", svcN, i+1), Labels: map[string]string{"io.drover.stack.name": st.Name}},
						Spec:   api.ContainerSpec{ServiceID: sv.ID, ServiceIndex: i + 1, LaunchConfig: &api.LaunchConfig{Image: "app", Ports: []string{"80/tcp"}}},
						Status: api.ContainerStatus{State: "running", PrimaryIP: ip, MAC: "02:00:00:00:00:01"}})
					if err != nil {
						errc <- err
						return
					}
					mu.Lock()
					out = append(out, benchContainer{ct.ID, ip})
					mu.Unlock()
				}
			}
		}()
	}
	for s := first / 5; s < (first+n)/5; s++ {
		select {
		case jobs <- s:
		case err := <-errc:
			close(jobs)
			wg.Wait()
			return nil, err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errc:
		return nil, err
	default:
	}
	return out, nil
}

func fetch(url, accept string) ([]byte, error) {
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != 200 {
		err = fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return b, err
}

func waitContainers(base string, n int) error {
	for i := 0; ; i++ {
		if b, err := fetch(base+"/latest/containers", "text/plain"); err == nil && bytes.Count(b, []byte("\n")) >= n {
			return nil
		}
		if i > 1200 {
			return fmt.Errorf("metadata never had %d containers", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// listLoad asks for url with 8 keep-alive clients for 5 s and checks every
// answer is want.
func listLoad(url string, want []byte) (float64, error) {
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}}
	var n atomic.Int64
	var bad atomic.Value
	const d = 5 * time.Second
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, len(want)+1)
			for time.Now().Before(deadline) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Accept", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					bad.Store(err)
					return
				}
				b := bytes.NewBuffer(buf[:0])
				b.ReadFrom(resp.Body)
				resp.Body.Close()
				if !bytes.Equal(b.Bytes(), want) {
					bad.Store(fmt.Errorf("%s answered %d bytes, not the list", url, b.Len()))
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, _ := bad.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / d.Seconds(), nil
}

// changeLatency changes one container at a time and times, from just
// before the write, the metadata long-poll of that container's own view
// returning the new value, and a raw watch of the engine seeing it.
func changeLatency(ctx context.Context, c *client.Client, base string, ctrs []benchContainer) (md, watch []time.Duration, err error) {
	_, rev, err := c.Containers().List(ctx, client.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := c.Containers().Watch(wctx, rev, client.ListOptions{}, 0)
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	type seen struct {
		key string
		at  time.Time
	}
	events := make(chan seen, 64)
	go func() {
		for {
			ev, err := w.Next()
			if err != nil {
				return
			}
			if ev.Object != nil {
				events <- seen{ev.Object.ID + "/" + strconv.Itoa(ev.Object.Status.StartCount), time.Now()}
			}
		}
	}()
	hc := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	get := func(path, ip string) (string, error) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := hc.Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for i := 0; i < 300; i++ {
		ct := ctrs[rand.IntN(len(ctrs))]
		want := strconv.Itoa(1000 + i)
		version, err := get("/latest/version", ct.ip)
		if err != nil {
			return nil, nil, err
		}
		got := make(chan error, 1)
		var mdAt time.Time
		go func() {
			v := version
			for {
				body, err := get("/latest/self/container/start_count?wait=true&maxWait=10&value="+v, ct.ip)
				if err != nil || body == want {
					mdAt = time.Now()
					got <- err
					return
				}
				if v, err = get("/latest/version", ct.ip); err != nil {
					got <- err
					return
				}
			}
		}()
		start := time.Now()
		if _, err := c.Containers().PatchStatus(ctx, ct.id, map[string]any{"status": map[string]any{"startCount": 1000 + i}}); err != nil {
			return nil, nil, err
		}
		key := ct.id + "/" + want
		for {
			s := <-events
			if s.key == key {
				watch = append(watch, s.at.Sub(start))
				break
			}
		}
		if err := <-got; err != nil {
			return nil, nil, err
		}
		md = append(md, mdAt.Sub(start))
	}
	return md, watch, nil
}

func pct(d []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, len(s)*p/100)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
