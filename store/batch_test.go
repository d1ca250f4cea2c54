package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/api"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/store"
)

func newStore(t *testing.T, c *testenv.EtcdCluster) *store.Store {
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "w"}, []string{"collection", "op"})
	st := store.New(c.Client(t), "/batch-test/", writes)
	st.PageTimeout = 2 * time.Second
	return st
}

// Concurrent creates of new keys go to etcd together, and each answer is
// the truth about its own key: stored, at the revision the answer gives.
func TestIntegrationBatchedCreates(t *testing.T) {
	if testing.Short() {
		t.Skip("needs etcd")
	}
	cluster := testenv.StartEtcdCluster(t, 1)
	st := newStore(t, cluster)
	kind, _ := api.KindByCollection("containers")
	ctx := context.Background()

	const n = 300
	type result struct {
		id  string
		rev int64
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			obj := &api.Container{Meta: api.Meta{Name: fmt.Sprintf("c%d", i)}}
			_, rev, aerr := st.Create(ctx, kind, obj, nil)
			if aerr != nil {
				t.Errorf("create %d: %v", i, aerr)
				return
			}
			results[i] = result{obj.ID, rev}
		}()
	}
	close(start)
	wg.Wait()
	if t.Failed() {
		return
	}
	revs := map[int64]int{}
	for i, r := range results {
		raw, rev, err := st.Get(ctx, "containers", r.id)
		if err != nil {
			t.Fatalf("create %d answered %s at %d, but reading it: %v", i, r.id, r.rev, err)
		}
		if rev != r.rev {
			t.Errorf("create %d answered revision %d; etcd holds %s at %d", i, r.rev, r.id, rev)
		}
		obj, err := store.DecodeStored(kind, raw, rev)
		if err != nil || obj.GetMeta().Name != fmt.Sprintf("c%d", i) {
			t.Errorf("create %d: stored %v (%v), want name c%d", i, obj, err, i)
		}
		revs[rev]++
	}
	batches, puts := st.BatchStats()
	t.Logf("%d creates in %d etcd requests, %d revisions", puts, batches, len(revs))
	if puts != n {
		t.Errorf("BatchStats counted %d puts, want %d", puts, n)
	}
	if int64(len(revs)) != batches {
		t.Errorf("%d distinct revisions, want one per etcd request (%d)", len(revs), batches)
	}
	if batches >= n {
		t.Errorf("%d creates sent in %d requests: 300 concurrent creates were never grouped", n, batches)
	}
}

// When etcd is away, every create waiting in a batch gets an error, none
// waits past its deadline, and creates work again once etcd is back.
func TestIntegrationBatchedCreatesEtcdAway(t *testing.T) {
	if testing.Short() {
		t.Skip("needs etcd")
	}
	cluster := testenv.StartEtcdCluster(t, 1)
	st := newStore(t, cluster)
	kind, _ := api.KindByCollection("containers")
	cluster.Stop(0)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			if _, _, aerr := st.Create(ctx, kind, &api.Container{Meta: api.Meta{Name: "x"}}, nil); aerr == nil || aerr.Status != 503 {
				t.Errorf("create with etcd stopped: want 503, got %v", aerr)
			}
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("creates with etcd stopped took %s to fail", d)
	}
	cluster.Start(0)
	testenv.Eventually(t, "a create once etcd is back", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if _, _, aerr := st.Create(ctx, kind, &api.Container{Meta: api.Meta{Name: "y"}}, nil); aerr != nil {
			return aerr
		}
		return nil
	})
}
