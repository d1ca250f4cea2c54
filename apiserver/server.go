// Package server is the drover engine: the v1 REST API over an etcd store,
// authentication, and the event stream every other component watches.
package apiserver

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
	"github.com/drover/drover/events"
	"github.com/drover/drover/store"
)

// Options configure a server. Zero values get defaults from withDefaults.
type Options struct {
	Listen        string   // address to serve on, e.g. 127.0.0.1:8080 (":0" picks a port)
	DataDir       string   // credentials.json, and the embedded etcd's data
	EtcdEndpoints []string // external etcd; empty runs an embedded one
	// TLS to an external etcd: the CA that signed its certificates, and
	// this server's client certificate and key (etcd --client-cert-auth).
	EtcdCAFile, EtcdCertFile, EtcdKeyFile string
	// EncryptionKeyFile holds the keys sealing certificate private keys at
	// rest (default <DataDir>/encryption-keys, created if missing; see
	// store/seal.go). Every server of one store needs the same file.
	EncryptionKeyFile string
	TLSCert           string
	TLSKey            string
	Logger            *slog.Logger

	// HistoryRevisions is how many store revisions the embedded etcd keeps
	// for watchers resuming with since=; older ones get a resync.
	HistoryRevisions int
	PingInterval     time.Duration
	MaxBodyBytes     int64
	SubscriberBuffer int // events queued per subscriber before it is cut off
	RingSize         int // recent events kept in memory for resuming watchers
	KeyPrefix        string

	// StreamWriteTimeout bounds every write of an event stream: a client
	// that takes no data for this long is cut off (default 10s).
	StreamWriteTimeout time.Duration

	// ReadTimeout bounds reading one request, body included (default 30s).
	ReadTimeout time.Duration

	// NoManagedNetwork leaves out the managed network (and with it host
	// subnets), for engines whose hosts bring their own networking.
	NoManagedNetwork bool

	// MaxConnsPerClient caps the connections one client address may hold
	// (default 1024); more are answered 429 and closed.
	MaxConnsPerClient int

	// StoreTimeout bounds the store calls of one plain request (default 5s):
	// past it the client gets 503 with Retry-After.
	StoreTimeout time.Duration
	// EtcdWait is how long a server with --etcd-endpoints waits for etcd
	// to answer at start, saying so every few seconds (default 1m).
	EtcdWait time.Duration

	// Gatherers add metrics of the same process (the controllers) to /metrics.
	Gatherers []prometheus.Gatherer
}

func (o *Options) withDefaults() {
	if o.Listen == "" {
		o.Listen = "127.0.0.1:8080"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HistoryRevisions == 0 {
		o.HistoryRevisions = 100000
	}
	if o.PingInterval == 0 {
		o.PingInterval = 5 * time.Second
	}
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 1 << 20
	}
	if o.SubscriberBuffer == 0 {
		o.SubscriberBuffer = 10000
	}
	if o.RingSize == 0 {
		o.RingSize = 10000
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.StoreTimeout == 0 {
		o.StoreTimeout = 5 * time.Second
	}
	if o.MaxConnsPerClient == 0 {
		o.MaxConnsPerClient = 1024
	}
	if o.KeyPrefix == "" {
		o.KeyPrefix = "/drover/"
	}
	if o.EncryptionKeyFile == "" && o.DataDir != "" {
		o.EncryptionKeyFile = filepath.Join(o.DataDir, "encryption-keys")
	}
}

// Server is a running engine.
type Server struct {
	opts    Options
	log     *slog.Logger
	st      *store.Store
	hub     *events.Hub
	auth    *auth.Cache
	metrics *metrics
	etcd    *embed.Etcd // nil with an external etcd
	ln      net.Listener
	http    *http.Server
	url     string

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex
	err    error
}

// Start opens the store, writes credentials, and starts serving. Call Close
// (or cancel ctx) to stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	opts.withDefaults()
	if opts.DataDir == "" {
		return nil, errors.New("server: --data-dir is required")
	}
	// Listen first: a port in use must fail before anything is written.
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("server: listening on %s: %w", opts.Listen, err)
	}
	started := false
	_, statErr := os.Stat(opts.DataDir)
	defer func() {
		if started {
			return
		}
		ln.Close()
		if os.IsNotExist(statErr) {
			os.RemoveAll(opts.DataDir) // a failed first start leaves nothing behind
		}
	}()
	if err := os.MkdirAll(opts.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: creating data dir: %w", err)
	}
	keyring, err := store.LoadKeyring(opts.EncryptionKeyFile)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s := &Server{opts: opts, log: opts.Logger, auth: auth.NewCache(), metrics: newMetrics(), done: make(chan struct{})}
	cli, err := s.openStore(ctx)
	if err != nil {
		s.closeStore()
		return nil, err
	}
	s.st = store.New(cli, opts.KeyPrefix, s.metrics.writes)
	s.metrics.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "drover_server_store_put_batches_total", Help: "etcd requests that carried creates of new keys, grouped (see store/batch.go).",
		}, func() float64 { b, _ := s.st.BatchStats(); return float64(b) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "drover_server_store_batched_puts_total", Help: "Creates of new keys sent in those requests.",
		}, func() float64 { _, p := s.st.BatchStats(); return float64(p) }),
	)
	s.st.PageTimeout = opts.StoreTimeout
	s.st.Keyring = keyring
	s.st.Check = func(coll string, obj api.Object) *api.Error {
		normalize(coll, obj)
		return validate(coll, obj)
	}
	s.hub = events.New(cli, s.st.Prefix+"o/", s.log, s.metrics.hub, opts.RingSize)
	s.hub.OnStart = func(rev int64) {
		ctx, cancel := context.WithTimeout(context.Background(), opts.StoreTimeout)
		defer cancel()
		if err := s.st.LoadParents(ctx, rev); err != nil {
			// Creates compare parents in their transactions instead.
			s.log.Warn("loading parents for reference checks", "err", err)
		}
	}
	s.hub.OnChange = func(coll, id string, rev int64, removed, deleting bool) {
		s.auth.Invalidate(coll, id, rev)
		s.st.ParentChanged(coll, id, rev, removed, deleting)
	}
	s.hub.OnReset = func(rev int64) {
		s.auth.Reset(rev)
		s.st.ForgetParents()
		s.hub.OnStart(rev)
	}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "drover_server_subscribers", Help: "Event stream subscribers connected now.",
	}, func() float64 { return float64(s.hub.Subscribers()) }))

	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "drover_server_connections_refused_total", Help: "Connections refused because their client address held MaxConnsPerClient already."})
	s.metrics.reg.MustRegister(refused)
	s.ln = newLimitListener(ln, opts.MaxConnsPerClient, refused)
	scheme := "http"
	if opts.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(opts.TLSCert, opts.TLSKey)
		if err != nil {
			ln.Close()
			s.closeStore()
			return nil, fmt.Errorf("server: loading TLS key pair: %w", err)
		}
		s.ln = tls.NewListener(s.ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
	}
	s.url = scheme + "://" + advertised(ln.Addr().(*net.TCPAddr))

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	initCtx, initCancel := context.WithTimeout(ctx, time.Minute)
	defer initCancel()
	if err := s.bootstrapCredentials(initCtx); err != nil {
		cancel()
		s.ln.Close()
		s.closeStore()
		return nil, err
	}
	if err := s.bootstrapNetwork(initCtx); err != nil {
		cancel()
		s.ln.Close()
		s.closeStore()
		return nil, err
	}
	// Secrets sealed by an older key, or stored before sealing, are sealed
	// anew; one this key file cannot open stops the start (the servers'
	// key files differ).
	if n, err := s.st.Reseal(initCtx); err != nil {
		cancel()
		s.ln.Close()
		s.closeStore()
		return nil, fmt.Errorf("server: re-sealing secrets with key %s of %s: %w", keyring.CurrentKey(), opts.EncryptionKeyFile, err)
	} else if n > 0 {
		s.log.Info("secrets re-sealed", "count", n, "key", keyring.CurrentKey(), "keyFile", opts.EncryptionKeyFile)
	}
	ready := make(chan struct{})
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		if err := s.hub.Run(runCtx, ready); err != nil {
			s.setErr(fmt.Errorf("server: event hub: %w", err))
			cancel()
		}
	}()
	select {
	case <-ready:
	case <-hubDone:
		s.ln.Close()
		s.closeStore()
		return nil, s.err
	}
	// A request has ReadTimeout to arrive whole, body included, so a client
	// trickling a body cannot hold a connection for long; streams lift the
	// deadline once they start (they have write deadlines of their own).
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: opts.ReadTimeout, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}
	go func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.setErr(fmt.Errorf("server: serving: %w", err))
			cancel()
		}
	}()
	go func() {
		select {
		case <-ctx.Done():
		case <-runCtx.Done():
		}
		s.shutdown(hubDone)
	}()
	s.log.Info("drover server started", "url", s.url, "dataDir", opts.DataDir, "etcd", s.etcdDescription(), "credentials", s.CredentialsPath())
	started = true
	return s, nil
}

func (s *Server) setErr(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// advertised turns a listen address into one clients can reach.
func advertised(a *net.TCPAddr) string {
	ip := a.IP
	if ip == nil || ip.IsUnspecified() {
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), strconv.Itoa(a.Port))
}

func (s *Server) etcdDescription() string {
	if s.etcd != nil {
		return "embedded"
	}
	return fmt.Sprint(s.opts.EtcdEndpoints)
}

// URL is where the API is served.
func (s *Server) URL() string { return s.url }

// CredentialsPath is the bootstrap admin key's file.
func (s *Server) CredentialsPath() string { return filepath.Join(s.opts.DataDir, "credentials.json") }

// Done is closed when the server has stopped.
func (s *Server) Done() <-chan struct{} { return s.done }

// Err is why the server stopped, if it failed.
func (s *Server) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops the server gracefully and waits for it.
func (s *Server) Close() error {
	s.cancel()
	<-s.done
	return s.Err()
}

func (s *Server) shutdown(hubDone <-chan struct{}) {
	defer close(s.done)
	s.log.Info("drover server shutting down")
	s.cancel()
	<-hubDone // the hub has told every subscriber, so their streams end
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.http.Shutdown(ctx); err != nil {
		s.http.Close()
	}
	s.closeStore()
	s.log.Info("drover server stopped")
}

func (s *Server) openStore(ctx context.Context) (*clientv3.Client, error) {
	if len(s.opts.EtcdEndpoints) > 0 {
		tlsCfg, err := s.etcdTLS()
		if err != nil {
			return nil, err
		}
		cli, err := clientv3.New(clientv3.Config{
			Endpoints:   s.opts.EtcdEndpoints,
			DialTimeout: 5 * time.Second,
			Logger:      zap.NewNop(),
			TLS:         tlsCfg,
			// Keepalives notice a dead member so requests move to another.
			DialKeepAliveTime:    5 * time.Second,
			DialKeepAliveTimeout: 3 * time.Second,
		})
		if err != nil {
			return nil, fmt.Errorf("server: connecting to etcd %v: %w", s.opts.EtcdEndpoints, err)
		}
		wait := s.opts.EtcdWait
		if wait == 0 {
			wait = time.Minute
		}
		start := time.Now()
		for {
			cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := cli.Get(cctx, s.opts.KeyPrefix+"ready")
			cancel()
			if err == nil {
				return cli, nil
			}
			if time.Since(start) >= wait || ctx.Err() != nil {
				cli.Close()
				return nil, fmt.Errorf("server: etcd %v did not answer in %s: %w", s.opts.EtcdEndpoints, wait.Round(time.Second), err)
			}
			s.log.Warn("waiting for etcd", "endpoints", s.opts.EtcdEndpoints, "waited", time.Since(start).Round(time.Second).String(), "giving up after", wait.String(), "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second):
			}
		}
	}
	cfg := embed.NewConfig()
	cfg.Dir = filepath.Join(s.opts.DataDir, "etcd")
	cfg.Name = "drover"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cfg.AutoCompactionMode = "revision"
	cfg.AutoCompactionRetention = strconv.Itoa(s.opts.HistoryRevisions)
	// The raft log is held in memory between snapshots: keep it short (a
	// single member has no follower to catch up).
	cfg.SnapshotCount = 5000
	cfg.SnapshotCatchUpEntries = 1000
	cfg.MaxTxnOps = 1024
	// The embedded etcd is reached in-process; its own listeners are bound
	// to free loopback ports only because etcd insists on having them.
	peer, client, err := freeLoopbackURLs()
	if err != nil {
		return nil, err
	}
	// Only the server's user may use those ports: both require a client
	// certificate signed by a CA whose key is thrown away once it signed
	// the listeners' own certificate, whose key is a 0600 file in the data
	// dir. (Open, as they were, any user on the host could write the store
	// directly, an admin key being two puts, and read certificates' keys.)
	tlsInfo, err := lockedTLS(filepath.Join(s.opts.DataDir, "etcd-tls"))
	if err != nil {
		return nil, err
	}
	peer.Scheme, client.Scheme = "https", "https"
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = tlsInfo, tlsInfo
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("server: starting embedded etcd in %s: %w", cfg.Dir, err)
	}
	s.etcd = e
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		return nil, fmt.Errorf("server: embedded etcd failed: %w", err)
	case <-time.After(60 * time.Second):
		return nil, errors.New("server: embedded etcd did not become ready within 60s")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return v3client.New(e.Server), nil
}

// EtcdClientURL is the embedded etcd's client listener ("" with an
// external etcd), for tests that check nobody can use it.
func (s *Server) EtcdClientURL() string {
	if s.etcd == nil || len(s.etcd.Clients) == 0 {
		return ""
	}
	return "https://" + s.etcd.Clients[0].Addr().String()
}

func freeLoopbackURLs() (url.URL, url.URL, error) {
	var out [2]url.URL
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return url.URL{}, url.URL{}, fmt.Errorf("server: finding a free port for embedded etcd: %w", err)
		}
		out[i] = url.URL{Scheme: "http", Host: l.Addr().String()}
		l.Close()
	}
	return out[0], out[1], nil
}

func (s *Server) closeStore() {
	if s.st != nil && s.st.Cli != nil {
		s.st.Cli.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
	}
}

// bootstrapCredentials makes sure DATA/credentials.json holds a working admin
// key: it is created on first start, reused after, and put back into the
// store if the store lost it (a wiped or new etcd).
// bootstrapCredentials makes sure the admin key of credentials.json and the
// service key of controller-credentials.json exist.
func (s *Server) bootstrapCredentials(ctx context.Context) error {
	if err := s.bootstrapKey(ctx, s.CredentialsPath(), api.RoleAdmin, "bootstrap admin key"); err != nil {
		return err
	}
	return s.bootstrapKey(ctx, s.ControllerCredentialsPath(), api.RoleService, "service key of the controllers")
}

// bootstrapNetwork creates the managed network hosts take their subnets
// from, with its defaults (10.42.0.0/16 in /24s), if the store has none.
func (s *Server) bootstrapNetwork(ctx context.Context) error {
	if s.opts.NoManagedNetwork {
		return nil
	}
	kind, _ := api.KindByCollection("networks")
	_, _, aerr := s.st.Create(ctx, kind, &api.Network{Meta: api.Meta{Name: store.ManagedNetwork}}, nil)
	if aerr != nil && aerr.Code != api.CodeNameTaken {
		return fmt.Errorf("server: creating network %s: %w", store.ManagedNetwork, aerr)
	}
	return nil
}

// ControllerCredentialsPath is the service-role key the controllers run with.
func (s *Server) ControllerCredentialsPath() string {
	return filepath.Join(s.opts.DataDir, "controller-credentials.json")
}

func (s *Server) bootstrapKey(ctx context.Context, path, role, what string) error {
	var creds api.Credentials
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &creds); err != nil || creds.AccessKey == "" || creds.SecretKey == "" {
			return fmt.Errorf("server: %s is not a credentials file ({\"url\",\"accessKey\",\"secretKey\"}); move it away to create a new admin key", path)
		}
	case errors.Is(err, os.ErrNotExist):
		creds = api.Credentials{AccessKey: store.NewID("key"), SecretKey: auth.NewSecret()}
	default:
		return fmt.Errorf("server: reading %s: %w", path, err)
	}
	if _, _, err := s.st.Get(ctx, "apikeys", creds.AccessKey); errors.Is(err, store.ErrNotFound) {
		kind, _ := api.KindByCollection("apikeys")
		host, _ := os.Hostname()
		key := &api.APIKey{Meta: api.Meta{ID: creds.AccessKey, Name: creds.AccessKey}, Spec: api.APIKeySpec{Role: role, Description: what + " of the server on " + host + " (" + path + ")"}}
		key.Status.AccessKey = creds.AccessKey
		if _, _, aerr := s.st.Create(ctx, kind, key, []byte(auth.HashSecret(creds.SecretKey))); aerr != nil {
			return fmt.Errorf("server: storing %s: %w", what, aerr)
		}
	} else if err != nil {
		return fmt.Errorf("server: reading %s: %w", what, err)
	}
	if creds.URL != s.url {
		creds.URL = s.url
		out, _ := json.MarshalIndent(creds, "", "  ")
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, append(out, '\n'), 0o600); err != nil {
			return fmt.Errorf("server: writing %s: %w", tmp, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("server: writing %s: %w", path, err)
		}
	}
	return nil
}

func (s *Server) metricsHandler() http.Handler {
	return promhttp.HandlerFor(append(prometheus.Gatherers{s.metrics.reg}, s.opts.Gatherers...), promhttp.HandlerOpts{})
}

// Run starts a server and blocks until ctx is cancelled or it fails.
func Run(ctx context.Context, opts Options) error {
	s, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	<-s.Done()
	return s.Err()
}
