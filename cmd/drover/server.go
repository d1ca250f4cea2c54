package main

import (
	"context"
	"fmt"
	flag "github.com/spf13/pflag"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/drover/drover/apiserver"
	"github.com/drover/drover/controllers"
	"github.com/drover/drover/internal/lifecycle"
	"github.com/drover/drover/store"
)

func runServer(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o apiserver.Options
	var endpoints string
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:8080", "address to serve the API on")
	fs.StringVar(&o.DataDir, "data-dir", "/var/lib/drover", "directory for credentials.json and the embedded etcd")
	fs.StringVar(&endpoints, "etcd-endpoints", "", "comma-separated etcd URLs; empty runs an embedded single-node etcd")
	fs.DurationVar(&o.EtcdWait, "etcd-wait", time.Minute, "with --etcd-endpoints: how long to wait for etcd to answer at start (it is logged every few seconds)")
	fs.StringVar(&o.EtcdCAFile, "etcd-cafile", "", "CA certificate that signed the external etcd's certificates (PEM)")
	fs.StringVar(&o.EtcdCertFile, "etcd-certfile", "", "client certificate for the external etcd (PEM; etcd --client-cert-auth)")
	fs.StringVar(&o.EtcdKeyFile, "etcd-keyfile", "", "private key of --etcd-certfile (PEM)")
	fs.StringVar(&o.EncryptionKeyFile, "encryption-key-file", "", "keys sealing certificate private keys at rest (default <data-dir>/encryption-keys, created if missing; the same file on every server)")
	rotate := fs.Bool("rotate-encryption-key", false, "put a new key first in the encryption key file and exit; restart every server with the new file to re-seal")
	fs.StringVar(&o.TLSCert, "tls-cert", "", "serve HTTPS with this certificate (PEM)")
	fs.StringVar(&o.TLSKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.IntVar(&o.HistoryRevisions, "history-revisions", 100000, "store revisions the embedded etcd keeps for resuming watchers")
	fs.DurationVar(&o.PingInterval, "ping-interval", 0, "event stream keepalive interval (default 5s)")
	managedNet := fs.Bool("managed-network", true, "create the network managed (10.42.0.0/16 in /24s) at first start, and give every host a subnet of it")
	fs.IntVar(&o.MaxConnsPerClient, "max-conns-per-client", 1024, "connections one client address may hold at once; more are answered 429")
	var co controllers.Options
	runControllers := true
	fs.BoolVar(&runControllers, "controllers", true, "run the controllers: garbage collector, host lifecycle, scheduler (one leader among servers sharing a store)")
	fs.BoolVar(&runControllers, "scheduler", true, "same as --controllers (kept for older scripts)")
	fs.DurationVar(&co.HostLifecycle.DisconnectAfter, "host-disconnect-after", 30*time.Second, "mark a host disconnected after its lease went this long without renewal")
	fs.DurationVar(&co.HostLifecycle.LostAfter, "host-lost-after", 2*time.Minute, "move a disconnected host's containers elsewhere after this long")
	gcPercent := fs.Int("gc-percent", 200, "Go GC target (GOGC): the server's live heap is small and every request allocates, so collecting half as often saves CPU for a little memory; GOGC in the environment wins")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(*gcPercent)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return usageError{"--tls-cert and --tls-key go together"}
	}
	if endpoints != "" {
		o.EtcdEndpoints = strings.Split(endpoints, ",")
	}
	o.NoManagedNetwork = !*managedNet
	if *rotate {
		path := o.EncryptionKeyFile
		if path == "" {
			path = filepath.Join(o.DataDir, "encryption-keys")
		}
		id, err := store.RotateKeyring(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "drover server: new encryption key %s is first in %s; copy the file to every server and restart them: each re-seals at start what older keys sealed, and logs \"secrets re-sealed\"; after that the older lines may be removed\n", id, path)
		return nil
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	o.Logger = log
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	reg := prometheus.NewRegistry()
	o.Gatherers = []prometheus.Gatherer{reg}
	// The API outlives the controllers at shutdown, so they can release
	// their lease and another server takes over at once.
	srvCtx, stopServer := context.WithCancel(context.Background())
	defer stopServer()
	srv, err := apiserver.Start(srvCtx, o)
	if err != nil {
		return err
	}
	ctrlCtx, stopControllers := context.WithCancel(ctx)
	defer stopControllers()
	ctrlDone := make(chan struct{})
	go func() {
		defer close(ctrlDone)
		if !runControllers {
			return
		}
		co.Credentials, co.Logger, co.Registry = srv.ControllerCredentialsPath(), log, reg
		if err := controllers.Run(ctrlCtx, co); err != nil && ctrlCtx.Err() == nil {
			log.Error("controllers failed", "err", err)
		}
	}()
	select {
	case <-ctx.Done():
	case <-srv.Done():
	}
	stopControllers()
	select {
	case <-ctrlDone:
	case <-time.After(10 * time.Second):
		log.Warn("controllers did not stop within 10s")
	}
	stopServer()
	<-srv.Done()
	return srv.Err()
}
