package testenv

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/api"
	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/controllers/gc"
)

// Logger returns a logger for tests: quiet unless DROVER_TEST_LOG=debug.
func Logger() *slog.Logger {
	if lv := os.Getenv("DROVER_TEST_LOG"); lv != "" {
		var l slog.Level
		l.UnmarshalText([]byte(lv))
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// StartServer starts a drover server on a free loopback port with its own
// data dir (or opts.DataDir) and returns it with an admin client. The server
// is closed at cleanup if the test has not closed it.
func StartServer(t testing.TB, opts apiserver.Options) (*apiserver.Server, *client.Client) {
	t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = Logger()
	}
	if opts.EncryptionKeyFile == "" && len(opts.EtcdEndpoints) > 0 {
		// Servers of one store share their encryption keys, as the
		// README says they must.
		opts.EncryptionKeyFile = sharedKeyFile(t, opts.EtcdEndpoints)
	}
	s, err := apiserver.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting drover server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.FromCredentialsFile(s.CredentialsPath())
	if err != nil {
		t.Fatalf("reading server credentials: %v", err)
	}
	// Deletion of objects with dependents is finished by the garbage
	// collector: it is part of the engine's contract, so every test engine
	// runs one.
	svc, err := client.FromCredentialsFile(s.ControllerCredentialsPath())
	if err != nil {
		t.Fatalf("reading controller credentials: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		gc.New(gc.Options{Engine: svc, Logger: opts.Logger}).Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return s, c
}

var (
	keyFilesMu sync.Mutex
	keyFiles   = map[string]string{} // by etcd endpoints
)

// sharedKeyFile is the encryption key file of the servers of one test
// store, in the temporary directory of the test that started the first.
func sharedKeyFile(t testing.TB, endpoints []string) string {
	keyFilesMu.Lock()
	defer keyFilesMu.Unlock()
	k := strings.Join(endpoints, ",")
	if f, ok := keyFiles[k]; ok {
		return f
	}
	f := filepath.Join(t.TempDir(), "encryption-keys")
	keyFiles[k] = f
	t.Cleanup(func() {
		keyFilesMu.Lock()
		delete(keyFiles, k)
		keyFilesMu.Unlock()
	})
	return f
}

// StartControllers runs every controller (as `drover server` does) against
// srv until the test ends, and returns their write counters' registry.
func StartControllers(t testing.TB, srv *apiserver.Server, o controllers.Options) *prometheus.Registry {
	t.Helper()
	reg := prometheus.NewRegistry()
	o.Credentials, o.Registry = srv.ControllerCredentialsPath(), reg
	if o.Logger == nil {
		o.Logger = Logger()
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 3 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := controllers.Run(ctx, o); err != nil && ctx.Err() == nil {
			t.Errorf("controllers: %v", err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return reg
}

// Eventually retries f until it returns nil or limit passes, then fails
// the test with what and f's last error.
func Eventually(t testing.TB, what string, limit time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, limit, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Credentials reads a server's admin credentials.json.
func Credentials(t testing.TB, s *apiserver.Server) *api.Credentials {
	t.Helper()
	b, err := os.ReadFile(s.CredentialsPath())
	if err != nil {
		t.Fatal(err)
	}
	var c api.Credentials
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}
