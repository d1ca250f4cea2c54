package agent

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/drover/drover/api"
)

// healthChecker runs each running container's health check (its launch
// config's, else its service's) and reports status.health: "initializing"
// until HealthyThreshold passes in a row, then "healthy", and "unhealthy"
// after UnhealthyThreshold failures in a row (or when initializing takes
// longer than InitializingTimeout, 60 s when unset); while initializing,
// the message says why the last probe failed.
type healthChecker struct {
	a     *Agent
	mu    sync.Mutex
	state map[string]*hcState
}

type hcState struct {
	dockerID  string
	startedAt time.Time
	since     time.Time
	next      time.Time
	running   bool
	ok, fail  int
	health    string
	reported  string
	msg       string // what was reported with it
}

// DefaultInitializingTimeout is how long a container may stay
// "initializing" (its check not yet passing) before it is unhealthy, when
// its health check sets no initializing_timeout (Rancher's UI default).
const DefaultInitializingTimeout = 60 * time.Second

func newHealthChecker(a *Agent) *healthChecker {
	return &healthChecker{a: a, state: map[string]*hcState{}}
}

func (h *healthChecker) checkFor(c *api.Container) *api.HealthCheck {
	if c.Spec.LaunchConfig != nil && c.Spec.LaunchConfig.HealthCheck != nil {
		return c.Spec.LaunchConfig.HealthCheck
	}
	if c.Spec.ServiceID != "" && c.Spec.LaunchConfigName == "" {
		if s, ok := h.a.svcs.Get(c.Spec.ServiceID); ok {
			return s.Spec.HealthCheck
		}
	}
	return nil
}

func (h *healthChecker) run(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !h.a.ctrs.HasSynced() {
			continue
		}
		seen := map[string]bool{}
		for _, c := range h.a.ctrs.List() {
			hc := h.checkFor(c)
			if hc == nil || c.Status.State != api.ContainerRunning || c.Status.DockerID == "" {
				continue
			}
			seen[c.ID] = true
			h.mu.Lock()
			st := h.state[c.ID]
			// A new container, or the same one started again, starts over.
			if st == nil || st.dockerID != c.Status.DockerID || !st.startedAt.Equal(startedAt(c)) {
				st = &hcState{dockerID: c.Status.DockerID, startedAt: startedAt(c), since: time.Now(), health: "initializing"}
				h.state[c.ID] = st
			}
			due := !st.running && time.Now().After(st.next)
			if due {
				st.running = true
			}
			h.mu.Unlock()
			if due {
				go h.probe(ctx, c, hc, st)
			}
		}
		h.mu.Lock()
		for id := range h.state {
			if !seen[id] {
				delete(h.state, id)
			}
		}
		h.mu.Unlock()
	}
}

func startedAt(c *api.Container) time.Time {
	if c.Status.StartedAt == nil {
		return time.Time{}
	}
	return *c.Status.StartedAt
}

func ms(n, def int) time.Duration {
	if n <= 0 {
		n = def
	}
	return time.Duration(n) * time.Millisecond
}

func (h *healthChecker) probe(ctx context.Context, c *api.Container, hc *api.HealthCheck, st *hcState) {
	err := h.check(ctx, c, hc)
	h.mu.Lock()
	st.running = false
	st.next = time.Now().Add(ms(hc.Interval, 2000))
	healthyAt, unhealthyAt := max(hc.HealthyThreshold, 1), max(hc.UnhealthyThreshold, 1)
	if err == nil {
		st.ok, st.fail = st.ok+1, 0
		if st.ok >= healthyAt {
			st.health = "healthy"
		}
	} else {
		st.ok, st.fail = 0, st.fail+1
		if st.fail >= unhealthyAt && st.health != "initializing" {
			st.health = "unhealthy"
		}
		limit := DefaultInitializingTimeout
		if hc.InitializingTimeout > 0 {
			limit = ms(hc.InitializingTimeout, 0)
		}
		if st.health == "initializing" && time.Since(st.since) > limit {
			st.health = "unhealthy"
		}
	}
	// The last probe's result goes with the state, so ps and stack up
	// show why a container is still initializing.
	msg := ""
	switch {
	case err != nil && st.health == "unhealthy":
		msg = "health check failed: " + err.Error()
	case err != nil && st.health == "initializing":
		msg = "initializing: last health check failed: " + err.Error()
	}
	health, changed := st.health, st.health != st.reported || msg != st.msg
	st.reported, st.msg = st.health, msg
	h.mu.Unlock()
	if changed {
		if h.a.report(ctx, c, map[string]any{"health": health, "message": msg}) != nil {
			// Not delivered (engine away): say it again next time.
			h.mu.Lock()
			st.reported = ""
			h.mu.Unlock()
		}
	}
}

// check runs one probe: a command inside the container, an HTTP request
// line, or a TCP connect.
func (h *healthChecker) check(ctx context.Context, c *api.Container, hc *api.HealthCheck) error {
	ctx, cancel := context.WithTimeout(ctx, ms(hc.ResponseTimeout, 2000))
	defer cancel()
	if len(hc.Command) > 0 {
		ex, err := h.a.docker.ContainerExecCreate(ctx, c.Status.DockerID, container.ExecOptions{Cmd: hc.Command})
		if err != nil {
			return err
		}
		if err := h.a.docker.ContainerExecStart(ctx, ex.ID, container.ExecStartOptions{Detach: true}); err != nil {
			return err
		}
		for {
			insp, err := h.a.docker.ContainerExecInspect(ctx, ex.ID)
			if err != nil {
				return err
			}
			if !insp.Running {
				if insp.ExitCode != 0 {
					return fmt.Errorf("command exited with %d", insp.ExitCode)
				}
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("command timed out")
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if c.Status.PrimaryIP == "" || hc.Port == 0 {
		return fmt.Errorf("no address or port to check")
	}
	addr := net.JoinHostPort(c.Status.PrimaryIP, strconv.Itoa(hc.Port))
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if hc.RequestLine == "" {
		return nil
	}
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	line := hc.RequestLine
	if !strings.Contains(line, "HTTP/") {
		line += " HTTP/1.0"
	}
	if _, err := fmt.Fprintf(conn, "%s\r\nHost: %s\r\nConnection: close\r\n\r\n", line, c.Status.PrimaryIP); err != nil {
		return err
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("no HTTP answer: %w", err)
	}
	parts := strings.Fields(status)
	if len(parts) < 2 {
		return fmt.Errorf("bad HTTP answer %q", strings.TrimSpace(status))
	}
	code, _ := strconv.Atoi(parts[1])
	if code < 200 || code >= 400 {
		return fmt.Errorf("HTTP %d", code)
	}
	return nil
}
