package integration_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/internal/testenv"
	"github.com/drover/drover/metadata"
)

// 500 hosts renew their leases as agents do, for 60 s: liveness is lease
// writes only, so no host object changes and metadata (which serves hosts)
// sees no new version. Before leases, every heartbeat was a host write that
// woke every host watcher and every metadata long-poll.
func TestIntegrationHostLeasesWriteNoHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (60 s of 500 simulated agents); run without -short")
	}
	const hosts, every, soak = 500, 5 * time.Second, 60 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, eng := testenv.StartServer(t, apiserver.Options{})
	testenv.StartControllers(t, srv, controllers.Options{NoScheduler: true, HostLifecycle: hostlifecycle.Options{DisconnectAfter: 4 * every}})
	mdReady := make(chan string, 1)
	mdDone := make(chan error, 1)
	go func() {
		mdDone <- metadata.Run(ctx, metadata.Options{Listen: "127.0.0.1:0", Engine: eng, Logger: testenv.Logger(), Ready: mdReady})
	}()
	t.Cleanup(func() { cancel(); <-mdDone })
	var mdAddr string
	select {
	case mdAddr = <-mdReady:
	case err := <-mdDone:
		t.Fatalf("metadata: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("metadata not ready in 30s")
	}
	tok, err := eng.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	anon := client.New(srv.URL(), "", "")
	renewers := make([]*agent.LeaseRenewer, hosts)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i := range hosts {
		g.Go(func() error {
			r, err := anon.Register(gctx, api.RegisterRequest{Token: tok.Status.Token, Name: fmt.Sprintf("lease-host-%03d", i)})
			if err != nil {
				return err
			}
			renewers[i] = &agent.LeaseRenewer{Engine: client.New(srv.URL(), r.AccessKey, r.SecretKey), HostID: r.Host.ID, Duration: 3 * every}
			return renewers[i].Renew(gctx)
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatalf("registering %d hosts: %v", hosts, err)
	}
	// Agents renew on their own clocks, spread over the interval.
	var wg sync.WaitGroup
	var mu sync.Mutex
	renewals, failures := 0, 0
	soakCtx, stopSoak := context.WithCancel(ctx)
	defer stopSoak()
	for i, r := range renewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(i) * every / hosts):
			case <-soakCtx.Done():
				return
			}
			tk := time.NewTicker(every)
			defer tk.Stop()
			for {
				err := r.Renew(soakCtx)
				mu.Lock()
				if err != nil && soakCtx.Err() == nil {
					failures++
				} else if err == nil {
					renewals++
				}
				mu.Unlock()
				select {
				case <-soakCtx.Done():
					return
				case <-tk.C:
				}
			}
		}()
	}
	testenv.Eventually(t, "all hosts active", 60*time.Second, func() error {
		hs, _, err := eng.Hosts().List(ctx, client.ListOptions{})
		active := 0
		for _, h := range hs {
			if h.Status.State == api.HostActive {
				active++
			}
		}
		if err != nil || active != hosts {
			return fmt.Errorf("%d of %d active (%v)", active, hosts, err)
		}
		return nil
	})
	revs := map[string]int64{}
	hs, _, err := eng.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		revs[h.ID] = h.Revision
	}
	version := func() string {
		resp, err := http.Get("http://" + mdAddr + "/latest/version")
		if err != nil {
			t.Fatalf("metadata version: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	v0 := version()
	time.Sleep(soak)
	stopSoak()
	wg.Wait()
	if v1 := version(); v1 != v0 {
		t.Errorf("metadata version moved from %s to %s while only leases were renewed", v0, v1)
	}
	hs, _, err = eng.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	changed := 0
	for _, h := range hs {
		if revs[h.ID] != h.Revision {
			changed++
		}
	}
	if changed > 0 {
		t.Errorf("%d host objects changed while only leases were renewed", changed)
	}
	// The renewals really happened: about soak/every per host.
	if want := hosts * int(soak/every) * 9 / 10; renewals < want || failures > 0 {
		t.Errorf("%d renewals (%d failed); want at least %d and no failures", renewals, failures, want)
	}
	t.Logf("%d hosts, %d lease renewals in %s, no host writes", hosts, renewals, soak)
}
