package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/drover/drover/client"
)

// delivery is one side's event delivery figures.
type delivery struct {
	p50, p99    time.Duration // write acknowledged -> received
	p99start    time.Duration // write sent -> received
	n           int           // deliveries measured
	writes      int           // writes acknowledged
	achieved    float64       // writes/s actually acknowledged
	subscribers int
}

// A write is known by what it wrote (the object's id, the etcd key), not by
// its revision: the engine commits concurrent creates together, so several
// share one revision.
type stamp struct {
	key string
	at  time.Time
}

// recorder keeps what one subscriber received and when.
type recorder struct {
	mu   sync.Mutex
	seen []stamp
}

func (r *recorder) add(key string, at time.Time) {
	r.mu.Lock()
	r.seen = append(r.seen, stamp{key, at})
	r.mu.Unlock()
}

// pacedWrites issues rate writes/s for rateFor from 32 workers, keeping each
// write's send and acknowledgement times by what it wrote.
func pacedWrites(write func() (string, error)) (acks, starts map[string]time.Time, achieved float64, err error) {
	var mu sync.Mutex
	acks, starts = map[string]time.Time{}, map[string]time.Time{}
	total := int(float64(*rate) * rateFor.Seconds())
	jobs := make(chan time.Time, total)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sent := range jobs {
				key, err := write()
				if err != nil {
					if failed.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				now := time.Now()
				mu.Lock()
				acks[key], starts[key] = now, sent
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
	if n := failed.Load(); n > 0 {
		return nil, nil, 0, fmt.Errorf("%d paced writes failed, the first: %v", n, firstErr.Load())
	}
	return acks, starts, achieved, nil
}

// summarize matches every subscriber's receipts with the writes' times.
func summarize(recs []*recorder, acks, starts map[string]time.Time, achieved float64) (delivery, error) {
	var lat, latStart []time.Duration
	for _, r := range recs {
		r.mu.Lock()
		for _, st := range r.seen {
			a, ok := acks[st.key]
			if !ok {
				continue
			}
			d := st.at.Sub(a)
			if d < 0 {
				d = 0 // delivered before the writer had read its own answer
			}
			lat = append(lat, d)
			latStart = append(latStart, st.at.Sub(starts[st.key]))
		}
		r.mu.Unlock()
	}
	if want := len(acks) * len(recs); len(lat) != want || want == 0 {
		return delivery{}, fmt.Errorf("%d deliveries measured, want %d (%d writes x %d subscribers): events were lost", len(lat), want, len(acks), len(recs))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	sort.Slice(latStart, func(i, j int) bool { return latStart[i] < latStart[j] })
	return delivery{
		p50: lat[len(lat)/2], p99: lat[len(lat)*99/100], p99start: latStart[len(latStart)*99/100],
		n: len(lat), writes: len(acks), achieved: achieved, subscribers: len(recs),
	}, nil
}

// droverDelivery: subscribers on the engine's NDJSON container stream, paced
// container creates.
func droverDelivery(ctx context.Context, c *client.Client, write func() (string, error)) (delivery, error) {
	recs := make([]*recorder, *subscribers)
	var closers []func()
	defer func() {
		for _, f := range closers {
			f()
		}
	}()
	for i := range recs {
		r := &recorder{}
		recs[i] = r
		req, _ := http.NewRequestWithContext(ctx, "GET", c.URL()+"/v1/containers?watch=true", nil)
		req.SetBasicAuth(benchCreds.AccessKey, benchCreds.SecretKey)
		resp, err := streamClient.Do(req)
		if err != nil {
			return delivery{}, err
		}
		closers = append(closers, func() { resp.Body.Close() })
		go func() {
			// Read raw lines and pick out the id: decoding 100,000
			// events/s here would measure the benchmark, not the server.
			rd := bufio.NewReaderSize(resp.Body, 256<<10)
			for {
				line, err := rd.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				now := time.Now()
				if id, ok := changeID(line); ok {
					r.add(id, now)
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond)
	acks, starts, achieved, err := pacedWrites(write)
	if err != nil {
		return delivery{}, err
	}
	time.Sleep(time.Second) // let the last deliveries land
	for _, f := range closers {
		f()
	}
	closers = nil
	return summarize(recs, acks, starts, achieved)
}

// etcdDelivery: the same number of etcd watchers on a prefix, each with its
// own client connection as each engine subscriber has, and paced raw puts.
func etcdDelivery(ctx context.Context, endpoint, prefix string, value []byte) (delivery, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	recs := make([]*recorder, *subscribers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for i := range recs {
		r := &recorder{}
		recs[i] = r
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			return delivery{}, fmt.Errorf("etcd watcher client: %w", err)
		}
		defer cli.Close()
		wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if resp, ok := <-wch; !ok || !resp.Created {
			return delivery{}, fmt.Errorf("etcd watch on %s was not created: %v", prefix, resp.Err())
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for resp := range wch {
				now := time.Now()
				for _, ev := range resp.Events {
					if ev.Type == clientv3.EventTypePut {
						r.add(string(ev.Kv.Key), now)
					}
				}
			}
		}()
	}
	put, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return delivery{}, fmt.Errorf("etcd client: %w", err)
	}
	defer put.Close()
	time.Sleep(500 * time.Millisecond)
	var seq atomic.Int64
	val := string(value)
	acks, starts, achieved, err := pacedWrites(func() (string, error) {
		key := prefix + strconv.FormatInt(seq.Add(1), 10)
		_, err := put.Put(ctx, key, val)
		return key, err
	})
	if err != nil {
		return delivery{}, err
	}
	time.Sleep(time.Second)
	cancel()
	return summarize(recs, acks, starts, achieved)
}

// streamClient has no pooling limits, so 100 streams get 100 connections.
var streamClient = &http.Client{Transport: &http.Transport{Proxy: nil, MaxConnsPerHost: 0, MaxIdleConnsPerHost: 200}}

var (
	changePrefix = []byte(`{"name":"resource.change",`)
	idField      = []byte(`"id":"`)
)

// changeID extracts the object's id from a {"name":"resource.change",
// "revision":N,"data":{"type":"container","id":"...",...}} line: the first
// "id" field is the object's own (api.Meta comes first).
func changeID(line []byte) (string, bool) {
	if !bytes.HasPrefix(line, changePrefix) {
		return "", false
	}
	i := bytes.Index(line, idField)
	if i < 0 {
		return "", false
	}
	rest := line[i+len(idField):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return "", false
	}
	return string(rest[:end]), true
}
