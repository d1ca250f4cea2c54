package lifecycle

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Ops is a daemon's operations endpoint: /healthz (the process runs),
// /readyz (Ready returns nil) and /metrics (Gatherer's metrics).
type Ops struct {
	Listen   string
	Gatherer prometheus.Gatherer
	// Ready says why the daemon cannot serve yet (nil: ready).
	Ready func() error
	// Handler, when set, serves every other path (a daemon whose API
	// shares the ops address).
	Handler http.Handler
	// WriteTimeout bounds a response (default 30s).
	WriteTimeout time.Duration
	srv          *http.Server
	ln           net.Listener
}

// Start listens and serves in the background.
func (o *Ops) Start() error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if o.Ready != nil {
			if err := o.Ready(); err != nil {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
		}
		io.WriteString(w, "ok\n")
	})
	if o.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	if o.Handler != nil {
		mux.Handle("/", o.Handler)
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 30 * time.Second
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s for /healthz, /readyz and /metrics: %w", o.Listen, err)
	}
	o.ln = ln
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: o.WriteTimeout, IdleTimeout: time.Minute}
	go o.srv.Serve(ln)
	return nil
}

// Addr is the address served.
func (o *Ops) Addr() string {
	if o.ln == nil {
		return ""
	}
	return o.ln.Addr().String()
}

// Stop shuts the endpoint down, letting requests in flight finish for a
// few seconds.
func (o *Ops) Stop() {
	if o.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	o.srv.Shutdown(ctx)
}
