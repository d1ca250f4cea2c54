package lb

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// UDP rules are balanced by drover lb itself: HAProxy (Debian's) balances
// TCP and HTTP only. Each source port is a socket; each client address gets
// a session, a socket of its own to one backend (round robin), so replies
// find their way back; a session idle for UDPIdleTimeout is closed, as
// conntrack forgets a UDP flow. Changing the backends keeps sessions whose
// backend stays and closes the others.
type udpProxy struct {
	log    *slog.Logger
	mu     sync.Mutex
	fronts map[int]*udpFront
}

// UDPIdleTimeout is how long a UDP session lives without traffic.
var UDPIdleTimeout = 30 * time.Second

type udpFront struct {
	port     int
	conn     *net.UDPConn
	targets  atomic.Pointer[[]*net.UDPAddr]
	next     atomic.Uint64
	mu       sync.Mutex
	sessions map[string]*udpSession
	done     chan struct{}
	log      *slog.Logger
}

type udpSession struct {
	up      *net.UDPConn
	target  string
	lastUse atomic.Int64
}

func newUDPProxy(log *slog.Logger) *udpProxy {
	return &udpProxy{log: log, fronts: map[int]*udpFront{}}
}

// UDPRules are the rules drover lb balances itself, and the rest.
func UDPRules(rules []Rule) (udp, other []Rule) {
	for _, r := range rules {
		if strings.EqualFold(r.Protocol, "udp") {
			udp = append(udp, r)
		} else {
			other = append(other, r)
		}
	}
	return udp, other
}

// set makes the proxy serve exactly these rules: one port per source port
// (its rules' targets together), every other port closed.
func (p *udpProxy) set(rules []Rule) error {
	byPort := map[int][]*net.UDPAddr{}
	for _, r := range rules {
		if _, ok := byPort[r.SourcePort]; !ok {
			byPort[r.SourcePort] = nil
		}
		for _, t := range r.Targets {
			if t.Down {
				continue
			}
			ip := net.ParseIP(t.IP)
			if ip == nil {
				return fmt.Errorf("lb_config.port_rules[%d]: target %q is not an address", r.Index, t.IP)
			}
			byPort[r.SourcePort] = append(byPort[r.SourcePort], &net.UDPAddr{IP: ip, Port: t.Port})
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for port, targets := range byPort {
		sort.Slice(targets, func(i, j int) bool { return targets[i].String() < targets[j].String() })
		f := p.fronts[port]
		if f == nil {
			conn, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
			if err != nil {
				errs = append(errs, fmt.Errorf("udp port %d: %w", port, err))
				continue
			}
			f = &udpFront{port: port, conn: conn, sessions: map[string]*udpSession{}, done: make(chan struct{}), log: p.log}
			p.fronts[port] = f
			go f.serve()
			go f.reap()
		}
		f.setTargets(targets)
	}
	for port, f := range p.fronts {
		if _, ok := byPort[port]; !ok {
			f.close()
			delete(p.fronts, port)
		}
	}
	return errors.Join(errs...)
}

func (p *udpProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for port, f := range p.fronts {
		f.close()
		delete(p.fronts, port)
	}
}

func (f *udpFront) setTargets(targets []*net.UDPAddr) {
	f.targets.Store(&targets)
	keep := map[string]bool{}
	for _, t := range targets {
		keep[t.String()] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for client, s := range f.sessions {
		if !keep[s.target] {
			s.up.Close()
			delete(f.sessions, client)
		}
	}
}

func (f *udpFront) close() {
	close(f.done)
	f.conn.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	for client, s := range f.sessions {
		s.up.Close()
		delete(f.sessions, client)
	}
}

func (f *udpFront) serve() {
	buf := make([]byte, 64*1024)
	for {
		n, client, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			f.log.Warn("udp read", "port", f.port, "err", err)
			return
		}
		s, err := f.session(client)
		if err != nil {
			f.log.Debug("udp datagram dropped", "port", f.port, "client", client.String(), "err", err)
			continue
		}
		s.lastUse.Store(time.Now().UnixNano())
		if _, err := s.up.Write(buf[:n]); err != nil {
			f.log.Debug("udp forward", "port", f.port, "target", s.target, "err", err)
		}
	}
}

// session finds or makes the client's session.
func (f *udpFront) session(client *net.UDPAddr) (*udpSession, error) {
	key := client.String()
	f.mu.Lock()
	defer f.mu.Unlock()
	if s := f.sessions[key]; s != nil {
		return s, nil
	}
	targets := *f.targets.Load()
	if len(targets) == 0 {
		return nil, errors.New("no backend")
	}
	t := targets[int(f.next.Add(1)-1)%len(targets)]
	up, err := net.DialUDP("udp", nil, t)
	if err != nil {
		return nil, err
	}
	s := &udpSession{up: up, target: t.String()}
	s.lastUse.Store(time.Now().UnixNano())
	f.sessions[key] = s
	go func() {
		// Replies go back to the client from the front's port.
		buf := make([]byte, 64*1024)
		for {
			n, err := up.Read(buf)
			if err != nil {
				return
			}
			s.lastUse.Store(time.Now().UnixNano())
			f.conn.WriteToUDP(buf[:n], client)
		}
	}()
	return s, nil
}

// reap closes sessions idle for UDPIdleTimeout.
func (f *udpFront) reap() {
	t := time.NewTicker(max(UDPIdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-f.done:
			return
		case <-t.C:
		}
		cutoff := time.Now().Add(-UDPIdleTimeout).UnixNano()
		f.mu.Lock()
		for client, s := range f.sessions {
			if s.lastUse.Load() < cutoff {
				s.up.Close()
				delete(f.sessions, client)
			}
		}
		f.mu.Unlock()
	}
}

// sessions counts the open sessions by port (the tests read it).
func (p *udpProxy) sessions() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for port, f := range p.fronts {
		f.mu.Lock()
		out[strconv.Itoa(port)] = len(f.sessions)
		f.mu.Unlock()
	}
	return out
}
