package testenv

import (
	"context"
	"io"
	"log/slog"
	"os"
	"testing"

	"github.com/drover/drover/client"
	"github.com/drover/drover/server"
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
func StartServer(t testing.TB, opts server.Options) (*server.Server, *client.Client) {
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
	s, err := server.Start(context.Background(), opts)
	if err != nil {
		t.Fatalf("starting drover server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c, err := client.FromCredentialsFile(s.CredentialsPath())
	if err != nil {
		t.Fatalf("reading server credentials: %v", err)
	}
	return s, c
}
