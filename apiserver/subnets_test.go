package apiserver_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
)

func managed(t *testing.T, c *client.Client) *api.Network {
	t.Helper()
	nets, _, err := c.Networks().List(context.Background(), client.ListOptions{Name: "managed"})
	if err != nil || len(nets) != 1 {
		t.Fatalf("network managed: %d found, %v", len(nets), err)
	}
	return &nets[0]
}

// Every host gets its own subnet of the managed network when it registers,
// keeps it when it registers again, and frees it when it is deleted.
func TestIntegrationHostSubnets(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	n := managed(t, admin)
	if n.Spec.CIDR != "10.42.0.0/16" || n.Spec.HostSubnetSize != 24 || n.Spec.MTU != 1450 || n.Spec.VNI == 0 {
		t.Fatalf("network managed from the first start: %+v; want 10.42.0.0/16 in /24s, MTU 1450, a VNI", n.Spec)
	}
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	anon := client.New(s.URL(), "", "")
	// 20 hosts at once: 20 different subnets, all inside the network.
	_, cidr, _ := net.ParseCIDR(n.Spec.CIDR)
	var mu sync.Mutex
	regs := map[string]*api.RegisterResponse{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: fmt.Sprintf("n%d", i)})
			if err != nil {
				t.Errorf("registering n%d: %v", i, err)
				return
			}
			mu.Lock()
			regs[r.Host.Name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	owner := map[string]string{}
	for name, r := range regs {
		sn := r.Host.Status.Subnet
		ip, ipnet, err := net.ParseCIDR(sn)
		if err != nil || !cidr.Contains(ip) || !strings.HasSuffix(sn, "/24") || !ip.Equal(ipnet.IP) {
			t.Fatalf("host %s got subnet %q, want a /24 of %s", name, sn, n.Spec.CIDR)
		}
		if other, dup := owner[sn]; dup {
			t.Fatalf("subnet %s went to %s and %s", sn, other, name)
		}
		owner[sn] = name
	}
	// Registering again keeps the subnet.
	r0 := regs["n0"]
	again, err := client.New(s.URL(), r0.AccessKey, r0.SecretKey).Register(ctx, api.RegisterRequest{Name: "n0"})
	if err != nil || again.Host.Status.Subnet != r0.Host.Status.Subnet {
		t.Fatalf("n0 registering again: %+v %v; want subnet %s kept", again, err, r0.Host.Status.Subnet)
	}
	// Nobody sets a subnet by hand, admin included.
	if _, err := admin.Hosts().PatchStatus(ctx, r0.Host.ID, map[string]any{"status": map[string]any{"subnet": "10.42.200.0/24"}}); !api.IsStatus(err, 422) {
		t.Fatalf("patching status.subnet: want 422, got %v", err)
	}
	// Deleting a host frees its subnet for the next one.
	freed := regs["n7"].Host.Status.Subnet
	if _, err := admin.Hosts().Delete(ctx, regs["n7"].Host.ID); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "n7 gone", 20*time.Second, func() error {
		if _, err := admin.Hosts().Get(ctx, regs["n7"].Host.ID); !api.IsNotFound(err) {
			return fmt.Errorf("still there: %v", err)
		}
		return nil
	})
	late, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	if late.Host.Status.Subnet != freed {
		// The allocator takes the first free subnet: the freed one.
		t.Fatalf("after n7 (%s) went, a new host got %s; want the freed subnet", freed, late.Host.Status.Subnet)
	}
	// The cidr of a network in use does not change.
	if _, err := admin.Networks().Patch(ctx, n.ID, map[string]any{"spec": map[string]any{"cidr": "10.99.0.0/16"}}); !api.IsStatus(err, 409) || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("changing the cidr of a network in use: want 409 saying it is in use, got %v", err)
	}
	// Its MTU may.
	if _, err := admin.Networks().Patch(ctx, n.ID, map[string]any{"spec": map[string]any{"mtu": 1400}}); err != nil {
		t.Fatalf("changing the MTU: %v", err)
	}
}

// A full network leaves a new host without a subnet and says why; nothing
// is handed out twice.
func TestIntegrationFullNetwork(t *testing.T) {
	integration(t)
	ctx := context.Background()
	s, admin := testenv.StartServer(t, apiserver.Options{})
	n := managed(t, admin)
	// No host yet: the network may be made small (two /30s).
	if _, err := admin.Networks().Patch(ctx, n.ID, map[string]any{"spec": map[string]any{"cidr": "10.99.0.0/29", "hostSubnetSize": 30}}); err != nil {
		t.Fatalf("resizing the unused network: %v", err)
	}
	tok, err := admin.RegistrationTokens().Create(ctx, &api.RegistrationToken{})
	if err != nil {
		t.Fatal(err)
	}
	anon := client.New(s.URL(), "", "")
	var got []string
	for i := 0; i < 3; i++ {
		r, err := anon.Register(ctx, api.RegisterRequest{Token: tok.Status.Token, Name: fmt.Sprintf("h%d", i)})
		if err != nil {
			t.Fatalf("registering h%d: %v", i, err)
		}
		got = append(got, r.Host.Status.Subnet)
		if i == 2 && (r.Host.Status.Subnet != "" || !strings.Contains(r.Host.Status.Message, "full")) {
			t.Fatalf("third host on a network of two subnets: subnet %q, message %q; want none and a message saying the network is full", r.Host.Status.Subnet, r.Host.Status.Message)
		}
	}
	if got[0] != "10.99.0.0/30" || got[1] != "10.99.0.4/30" {
		t.Fatalf("subnets %v, want 10.99.0.0/30 and 10.99.0.4/30", got)
	}
}
