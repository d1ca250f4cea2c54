package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strconv"

	clientv3 "go.etcd.io/etcd/client/v3"
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
type store struct {
	cli    *clientv3.Client
	prefix string
}

func (s *store) objectKey(coll, id string) string { return s.prefix + "o/" + coll + "/" + id }
func (s *store) objectPrefix(coll string) string  { return s.prefix + "o/" + coll + "/" }
func (s *store) secretKey(coll, id string) string { return s.prefix + "s/" + coll + "/" + id }
func (s *store) markerKey(coll, id string) string { return s.prefix + "d/" + coll + "/" + id }
func (s *store) nameKey(coll, scope, name string) string {
	return s.prefix + "n/" + coll + "/" + scope + "/" + name
}
func (s *store) indexPrefix(child, parentColl, pid string) string {
	return s.prefix + "i/" + child + "/" + parentColl + "/" + pid + "/"
}

var errNotFound = errors.New("not found")

// get reads one object's stored bytes and revision.
func (s *store) get(ctx context.Context, coll, id string) ([]byte, int64, error) {
	resp, err := s.cli.Get(ctx, s.objectKey(coll, id))
	if err != nil {
		return nil, 0, err
	}
	if len(resp.Kvs) == 0 {
		return nil, resp.Header.Revision, errNotFound
	}
	return resp.Kvs[0].Value, resp.Kvs[0].ModRevision, nil
}

// listPageSize bounds the size of one etcd range response while listing.
// etcd counts the rest of the range on every limited request, so small pages
// make a large list quadratic, and big ones cost memory: 10,000 objects
// (~7 MB) per page.
const listPageSize = 10000

// list calls fn for every key under prefix, in key order, all read at one
// store revision, which it returns. Pages keep memory flat for large lists.
func (s *store) list(ctx context.Context, prefix string, keysOnly bool, fn func(key string, value []byte, rev int64) error) (int64, error) {
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
		resp, err := s.cli.Get(ctx, from, opts...)
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

// writeWithRevision writes what withRevision returns, without a copy.
func writeWithRevision(w *bufio.Writer, stored []byte, rev int64) {
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

// withRevision returns the stored JSON object with "revision" added, without
// decoding it: lists and events of 100,000 objects stay cheap.
func withRevision(stored []byte, rev int64) []byte {
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
