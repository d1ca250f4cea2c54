// Package freebind listens on addresses the host does not have yet: dns and
// metadata listen on 169.254.169.250, which drover net puts on the host, and
// whichever starts first, the address or the server, they meet without a
// crash loop (IP_FREEBIND).
package freebind

import (
	"context"
	"net"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

var lc = net.ListenConfig{Control: func(network, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if strings.HasSuffix(network, "6") {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_FREEBIND, 1)
		} else {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_FREEBIND, 1)
		}
	})
	if err != nil {
		return err
	}
	return serr
}}

// Listen is net.Listen with IP_FREEBIND.
func Listen(network, address string) (net.Listener, error) {
	return lc.Listen(context.Background(), network, address)
}

// ListenPacket is net.ListenPacket with IP_FREEBIND.
func ListenPacket(network, address string) (net.PacketConn, error) {
	return lc.ListenPacket(context.Background(), network, address)
}
