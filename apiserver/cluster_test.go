package apiserver_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

// Two servers on one external 3-member etcd cluster: writes through one are
// seen in the other's event stream, and stopping an etcd member while writes
// go on loses nothing that was acknowledged.
func TestIntegrationExternalEtcdCluster(t *testing.T) {
	integration(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cluster := testenv.StartEtcdCluster(t, 3)
	_, a := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints()})
	_, b := testenv.StartServer(t, apiserver.Options{EtcdEndpoints: cluster.Endpoints()})

	seen := make(chan string, 100000)
	cache := client.NewCache(b.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: func(o *api.Stack) { seen <- o.ID },
	}, testenv.Logger())
	go cache.Run(ctx)
	if !cache.WaitForSync(ctx) {
		t.Fatal("cache on server B never synced")
	}
	st := mustStack(t, a, "from-a")
	select {
	case id := <-seen:
		if id != st.ID {
			t.Fatalf("server B's stream delivered %s, want %s", id, st.ID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write through server A never reached server B's event stream")
	}

	var mu sync.Mutex
	var acked []string
	failed := 0
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w, c := range []*client.Client{a, b, a, b} {
		wg.Add(1)
		go func(w int, c *client.Client) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				s, err := c.Stacks().Create(cctx, &api.Stack{Meta: api.Meta{Name: fmt.Sprintf("w%d-%d", w, i)}})
				ccancel()
				mu.Lock()
				if err != nil {
					failed++
				} else {
					acked = append(acked, s.ID)
				}
				mu.Unlock()
			}
		}(w, c)
	}
	time.Sleep(time.Second)
	// Stop the member server A's client is most likely using: the first.
	cluster.Stop(0)
	time.Sleep(3 * time.Second)
	cluster.Start(0)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(acked) < 50 {
		t.Fatalf("only %d writes acknowledged; the cluster did not keep serving with a member down", len(acked))
	}
	for _, c := range []*client.Client{a, b} {
		list, _, err := c.Stacks().List(ctx, client.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, s := range list {
			have[s.ID] = true
		}
		for _, id := range acked {
			if !have[id] {
				t.Fatalf("acknowledged stack %s is lost", id)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		for _, id := range acked {
			if _, ok := cache.Get(id); !ok {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server B's watchers never saw %d acknowledged writes", missing)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d writes acknowledged, %d failed while a member was down; none lost", len(acked), failed)
}
