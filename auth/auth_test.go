package auth

import (
	"encoding/base64"
	"net/http"
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
