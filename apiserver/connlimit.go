package apiserver

import (
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// limitListener caps the connections one client address holds at once: a
// client that opens connections and sends nothing (or a byte at a time)
// cannot take every file and goroutine the server has, only its own share.
// A connection over the cap is answered 429 and closed before any TLS
// handshake or request parsing.
type limitListener struct {
	net.Listener
	max     int
	refused prometheus.Counter

	mu    sync.Mutex
	perIP map[string]int
}

func newLimitListener(l net.Listener, max int, refused prometheus.Counter) *limitListener {
	return &limitListener{Listener: l, max: max, refused: refused, perIP: map[string]int{}}
}

var tooMany = func() []byte {
	body := `{"type":"error","status":429,"code":"TooManyConnections","message":"this address holds too many connections to the server; close some"}` + "\n"
	return []byte(fmt.Sprintf("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nRetry-After: 5\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
}()

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := remoteIP(c)
		l.mu.Lock()
		n := l.perIP[ip]
		if n >= l.max {
			l.mu.Unlock()
			l.refused.Inc()
			go func() {
				c.SetWriteDeadline(time.Now().Add(time.Second))
				c.Write(tooMany)
				c.Close()
			}()
			continue
		}
		l.perIP[ip] = n + 1
		l.mu.Unlock()
		return &limitedConn{Conn: c, release: func() { l.release(ip) }}, nil
	}
}

func (l *limitListener) release(ip string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.perIP[ip] <= 1 {
		delete(l.perIP, ip)
	} else {
		l.perIP[ip]--
	}
}

func remoteIP(c net.Conn) string {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.IP.String()
	}
	return c.RemoteAddr().String()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
