// Package store keeps the engine's objects in etcd: one key per object,
// unique names, references to parents, secrets kept apart, and every write
// a single transaction, so nothing is ever half-written and an object's
// revision is the etcd revision of its key. It knows nothing of HTTP: the
// API server gives it objects already decoded, and a Check function that
// fills defaults and validates them.
package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// Key layout in etcd. Everything lives under one prefix:
//
//	o/<collection>/<id>                       the object, JSON without "revision"
//	s/<collection>/<id>                       its secret (key hash, private key), never served
//	n/<collection>/<scope>/<name>             unique-name index -> id
//	i/<child>/<parentCollection>/<pid>/<cid>  reference index, for cascades and filters
//	d/<collection>/<id>                       deletion in progress: no new children
//
// Every write of an object and its index entries is one etcd transaction, so
// nothing is ever half-written, and an object's revision is the etcd
// ModRevision of its key.
type Store struct {
	Cli    *clientv3.Client
	Prefix string
	// Check fills an object's defaults and validates it before every write.
	Check func(coll string, obj api.Object) *api.Error
	// Keyring seals the secrets of sealedCollections at rest (nil: stored
	// as given). See seal.go.
	Keyring *Keyring
	// PageTimeout bounds each page of a List and each batch of puts
	// (0: none for pages, 10s for batches).
	PageTimeout time.Duration

	writes        *prometheus.CounterVec
	serviceStacks idMap      // each service's stack, for container creates
	parents       parents    // see parents.go
	batcher       putBatcher // see batch.go
	idem          idemLease  // see idempotency.go
}

// New returns a store under prefix; writes counts writes by collection and
// operation (labels "collection", "op").
func New(cli *clientv3.Client, prefix string, writes *prometheus.CounterVec) *Store {
	s := &Store{Cli: cli, Prefix: prefix, writes: writes, Check: func(string, api.Object) *api.Error { return nil }}
	s.batcher = putBatcher{cli: cli, timeout: func() time.Duration {
		if s.PageTimeout > 0 {
			return s.PageTimeout
		}
		return 10 * time.Second
	}}
	return s
}

func (s *Store) ObjectKey(coll, id string) string { return s.Prefix + "o/" + coll + "/" + id }
func (s *Store) ObjectPrefix(coll string) string  { return s.Prefix + "o/" + coll + "/" }
func (s *Store) SecretKey(coll, id string) string { return s.Prefix + "s/" + coll + "/" + id }
func (s *Store) MarkerKey(coll, id string) string { return s.Prefix + "d/" + coll + "/" + id }
func (s *Store) NameKey(coll, scope, name string) string {
	return s.Prefix + "n/" + coll + "/" + scope + "/" + name
}
func (s *Store) IndexPrefix(child, parentColl, pid string) string {
	return s.Prefix + "i/" + child + "/" + parentColl + "/" + pid + "/"
}

// ErrNotFound says an object does not exist.
var ErrNotFound = errors.New("not found")

// Get reads one object's stored bytes and revision.
func (s *Store) Get(ctx context.Context, coll, id string) ([]byte, int64, error) {
	resp, err := s.Cli.Get(ctx, s.ObjectKey(coll, id))
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, ErrNotFound
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// listPageSize bounds the size of one etcd range response while listing.
// etcd counts the rest of the range on every limited request, so small pages
// make a large list quadratic, and big ones cost memory: 10,000 objects
// (~7 MB) per page.
const listPageSize = 10000

// List calls fn for every key under prefix, in key order, all read at one
// store revision, which it returns. Pages keep memory flat for large lists.
func (s *Store) List(ctx context.Context, prefix string, keysOnly bool, fn func(key string, value []byte, rev int64) error) (int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	from := prefix
	var atRev int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(listPageSize)}
		if atRev != 0 {
			opts = append(opts, clientv3.WithRev(atRev))
		}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if s.PageTimeout > 0 {
			pctx, cancel = context.WithTimeout(ctx, s.PageTimeout)
		}
		resp, err := s.Cli.Get(pctx, from, opts...)
		cancel()
		if err != nil {
			return 0, err
		}
		if atRev == 0 {
			atRev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			if err := fn(string(kv.Key), kv.Value, kv.ModRevision); err != nil {
				return atRev, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return atRev, nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// WriteWithRevision writes what withRevision returns, without a copy.
func WriteWithRevision(w *bufio.Writer, stored []byte, rev int64) {
	if len(stored) < 2 || stored[0] != '{' {
		w.Write(stored)
		return
	}
	var num [24]byte
	w.WriteString(`{"revision":`)
	w.Write(strconv.AppendInt(num[:0], rev, 10))
	if !bytes.Equal(stored, []byte("{}")) {
		w.WriteByte(',')
	}
	w.Write(stored[1:])
}

// WithRevision returns the stored JSON object with "revision" added, without
// decoding it: lists and events of 100,000 objects stay cheap.
func WithRevision(stored []byte, rev int64) []byte {
	if len(stored) < 2 || stored[0] != '{' {
		return stored
	}
	out := make([]byte, 0, len(stored)+24)
	out = append(out, `{"revision":`...)
	out = strconv.AppendInt(out, rev, 10)
	if !bytes.Equal(stored, []byte("{}")) {
		out = append(out, ',')
	}
	return append(out, stored[1:]...)
}

// IDByName reads the id a unique name (in its scope) points at.
func (s *Store) IDByName(ctx context.Context, coll, scope, name string) (string, error) {
	resp, err := s.Cli.Get(ctx, s.NameKey(coll, scope, name))
	if err != nil {
		return "", err
	}
	if len(resp.Kvs) == 0 {
		return "", ErrNotFound
	}
	return string(resp.Kvs[0].Value), nil
}
