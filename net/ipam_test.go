package overlay

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
)

// Allocators racing on one directory (the agent and the CNI plugin) never
// hand out one address twice; a full subnet says so; a released address is
// given again; the state survives a new allocator (a restart).
func TestIPAMNoDuplicates(t *testing.T) {
	dir := t.TempDir()
	_, sn, _ := net.ParseCIDR("10.42.5.0/27") // 29 usable but the gateway: .2-.30
	var mu sync.Mutex
	got := map[string]string{}
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a, err := NewIPAM(dir, sn) // each its own allocator, as separate processes are
			if err != nil {
				t.Error(err)
				return
			}
			ip, err := a.Allocate(fmt.Sprintf("c%d", i), "eth0")
			if errors.Is(err, ErrSubnetFull) {
				return
			}
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := got[ip.String()]; dup {
				t.Errorf("%s given to c%d and %s", ip, i, other)
			}
			got[ip.String()] = fmt.Sprintf("c%d", i)
		}()
	}
	wg.Wait()
	if len(got) != 29 {
		t.Fatalf("%d addresses given out of a /27, want 29 (.2 to .30)", len(got))
	}
	a, _ := NewIPAM(dir, sn)
	if _, err := a.Allocate("late", "eth0"); !errors.Is(err, ErrSubnetFull) {
		t.Fatalf("allocating in a full subnet: %v, want ErrSubnetFull", err)
	}
	var freed string
	for ip, owner := range got {
		freed = ip
		if err := a.Release(owner, "eth0"); err != nil {
			t.Fatal(err)
		}
		break
	}
	ip, err := a.Allocate("late", "eth0")
	if err != nil || ip.String() != freed {
		t.Fatalf("after releasing %s: got %v %v", freed, ip, err)
	}
	if again, ok, _ := a.Lookup("late", "eth0"); !ok || !again.Equal(ip) {
		t.Fatalf("lookup after a new allocator: %v %v", again, ok)
	}
}
