package auth

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"testing"
)

func TestCredentials(t *testing.T) {
	for _, tc := range []struct {
		set    func(r *http.Request)
		ak, sk string
		ok     bool
	}{
		{func(r *http.Request) { r.SetBasicAuth("key-1", "s3cret") }, "key-1", "s3cret", true},
		{func(r *http.Request) { r.Header.Set("Authorization", "Bearer key-1:s3cret") }, "key-1", "s3cret", true},
		{func(r *http.Request) {
			r.Header.Set("Authorization", "Bearer "+base64.StdEncoding.EncodeToString([]byte("key-1:s3cret")))
		}, "key-1", "s3cret", true},
		{func(r *http.Request) { r.Header.Set("Authorization", "Bearer nocolon") }, "", "", false},
		{func(*http.Request) {}, "", "", false},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		tc.set(r)
		ak, sk, ok := Credentials(r)
		if ak != tc.ak || sk != tc.sk || ok != tc.ok {
			t.Errorf("%v: got %q %q %v", r.Header, ak, sk, ok)
		}
	}
}

// Any Authorization header parses without panicking, and what it yields
// round-trips through Basic auth.
func FuzzCredentials(f *testing.F) {
	for _, s := range []string{"Bearer a:b", "Basic YTpi", "Bearer YTpi", "Bearer ", "Basic", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		r, _ := http.NewRequest("GET", "/", nil)
		r.Header.Set("Authorization", h)
		Credentials(r)
	})
}

func TestAgentRights(t *testing.T) {
	p := &Principal{Role: "agent", HostID: "h-1"}
	if p.CanWrite("containers", http.MethodPatch, false) || !p.CanWrite("containers", http.MethodPatch, true) {
		t.Error("an agent writes containers through /status only")
	}
	if p.CanWrite("hosts", http.MethodPut, false) || p.CanWrite("stacks", http.MethodPost, false) {
		t.Error("an agent may not write hosts' spec or create stacks")
	}
	if !p.CanSee("containers", "c-1", "h-1") || p.CanSee("containers", "c-2", "h-2") || p.OwnHost() != "h-1" {
		t.Error("an agent sees its own host's containers only")
	}
}

// Key churn cannot grow the cache without bound, and a read that raced a
// forgotten change is still not cached.
func TestCacheTombstonesBounded(t *testing.T) {
	c := NewCache()
	for i := 0; i < 3*maxTombstones; i++ {
		c.Invalidate("apikeys", "key-"+strconv.Itoa(i), int64(i+10))
	}
	if n := len(c.tomb); n > maxTombstones {
		t.Fatalf("%d tombstones kept, want at most %d", n, maxTombstones)
	}
	// A load answered at a revision before the last change of key-5 (whose
	// tombstone may be gone) must not be cached.
	load := func(rev int64) func() (Principal, string, int64, bool, error) {
		return func() (Principal, string, int64, bool, error) {
			return Principal{AccessKey: "key-5"}, "h", rev, true, nil
		}
	}
	c.Lookup("key-5", load(5))
	calls := 0
	c.Lookup("key-5", func() (Principal, string, int64, bool, error) { calls++; return Principal{}, "h", 5, true, nil })
	if calls != 1 {
		t.Fatal("a stale read was cached after its tombstone was dropped")
	}
	// A fresh read is cached.
	fresh := int64(4*maxTombstones + 100)
	c.Lookup("key-new", load(fresh))
	calls = 0
	c.Lookup("key-new", func() (Principal, string, int64, bool, error) { calls++; return Principal{}, "h", fresh, true, nil })
	if calls != 0 {
		t.Fatal("a fresh read was not cached")
	}
}
