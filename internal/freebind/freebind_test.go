package freebind

import (
	"net"
	"testing"
)

// An address no interface holds (TEST-NET-3) can be listened on.
func TestListenOnAbsentAddress(t *testing.T) {
	if _, err := net.Listen("tcp", "203.0.113.77:0"); err == nil {
		t.Skip("this host holds 203.0.113.77 (or binds anything): nothing to show")
	}
	ln, err := Listen("tcp", "203.0.113.77:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	pc, err := ListenPacket("udp", "203.0.113.77:0")
	if err != nil {
		t.Fatal(err)
	}
	pc.Close()
}
