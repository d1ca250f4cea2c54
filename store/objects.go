package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/drover/drover/api"
)

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// NewID returns prefix-xxxxxxxxxxxx with 62 bits of randomness: DNS-label safe.
func NewID(prefix string) string {
	return prefix + "-" + randomString(12, idAlphabet)
}

func randomString(n int, alphabet string) string { // see auth.RandomString

	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// InternalError is the API error for a store answer that makes no sense.
func InternalError(err error) *api.Error {
	return api.NewError(http.StatusInternalServerError, api.CodeInternal, "", "store: %v", err)
}

// Unavailable is the API error for a read that failed, in words a client can
// act on (the etcd error goes to the server's log, not to the client).
func Unavailable(err error) *api.Error {
	e := api.NewError(http.StatusServiceUnavailable, api.CodeUnavailable, "", "%s; retry", storeTrouble(err))
	e.Cause = err
	return e
}

// WriteFailed is the API error for a write etcd did not confirm. Unless etcd
// said it refused the write (no leader), the write may have happened: the
// answer says so (CodeUnknown).
func WriteFailed(err error) *api.Error {
	if !mayHaveApplied(err) {
		return Unavailable(err)
	}
	e := api.NewError(http.StatusServiceUnavailable, api.CodeUnknown, "",
		"%s, so whether the write happened is unknown: retry a create with the same Idempotency-Key header (a retry returns the first result), or read the object", storeTrouble(err))
	e.Cause = err
	return e
}

// storeTrouble says what an etcd error means, without its text.
func storeTrouble(err error) string {
	switch {
	case errors.Is(err, context.Canceled):
		return "the request ended before the store (etcd) answered"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, rpctypes.ErrTimeout), errors.Is(err, rpctypes.ErrGRPCTimeout),
		errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail), errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost),
		status.Code(err) == codes.DeadlineExceeded:
		return "the store (etcd) did not answer in time"
	case errors.Is(err, rpctypes.ErrNoLeader), errors.Is(err, rpctypes.ErrGRPCNoLeader):
		return "the store (etcd) has no leader: too few of its members are up"
	case status.Code(err) == codes.Unavailable:
		return "the store (etcd) cannot be reached"
	case errors.Is(err, rpctypes.ErrGRPCRequestTooLarge), errors.Is(err, rpctypes.ErrRequestTooLarge):
		return "the request is larger than the store (etcd) takes"
	}
	return "the store (etcd) failed"
}

// mayHaveApplied says whether a write that got err may still have happened.
func mayHaveApplied(err error) bool {
	return !errors.Is(err, rpctypes.ErrNoLeader) && !errors.Is(err, rpctypes.ErrGRPCNoLeader) &&
		!errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) && !errors.Is(err, rpctypes.ErrRequestTooLarge)
}

// confirm settles a write whose answer was lost: it reads key back (with a
// context of its own: the write's may be spent) and reports the revision at
// which key holds value, if it does. A key that does not hold it proves
// nothing (the write may still land), so the caller then answers Unknown.
func (s *Store) confirm(key string, value []byte) (int64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	resp, err := s.Cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) == 0 || !bytes.Equal(resp.Kvs[0].Value, value) {
		return 0, false
	}
	return resp.Kvs[0].ModRevision, true
}

// EncodeStored renders an object as stored: without revision.
func EncodeStored(obj api.Object) []byte {
	m := obj.GetMeta()
	rev := m.Revision
	m.Revision = 0
	b, err := json.Marshal(obj)
	m.Revision = rev
	if err != nil {
		panic(fmt.Sprintf("encoding %T: %v", obj, err)) // our own types always encode
	}
	return b
}

func DecodeStored(kind api.Kind, raw []byte, rev int64) (api.Object, error) {
	obj := kind.New()
	if err := json.Unmarshal(raw, obj); err != nil {
		return nil, fmt.Errorf("decoding stored %s: %w", kind.Type, err)
	}
	obj.GetMeta().Revision = rev
	return obj, nil
}

// refChecks returns the comparisons that make a write fail unless every
// referenced parent exists and is not being deleted, and the index entries
// to write with it.
func (s *Store) refChecks(coll string, obj api.Object, only func(ref) bool) ([]clientv3.Cmp, []clientv3.Op, []ref) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	var used []ref
	id := obj.GetMeta().ID
	for _, r := range refs[coll] {
		pid := r.get(obj)
		if pid == "" || (only != nil && !only(r)) {
			continue
		}
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(s.ObjectKey(r.parent, pid)), ">", 0),
			clientv3.Compare(clientv3.CreateRevision(s.MarkerKey(r.parent, pid)), "=", 0))
		if r.indexed != nil && r.indexed(obj) {
			ops = append(ops, clientv3.OpPut(s.IndexPrefix(coll, r.parent, pid)+id, ""))
		}
		used = append(used, r)
	}
	return cmps, ops, used
}

// explainRefFailure finds which reference made a write fail.
func (s *Store) explainRefFailure(ctx context.Context, obj api.Object, used []ref) *api.Error {
	for _, r := range used {
		pid := r.get(obj)
		if _, _, err := s.Get(ctx, r.parent, pid); err == ErrNotFound {
			return api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidReference, r.field, "%s: %s %q does not exist", r.field, strings.TrimSuffix(r.parent, "s"), pid)
		} else if err != nil {
			return Unavailable(err)
		}
		resp, err := s.Cli.Get(ctx, s.MarkerKey(r.parent, pid))
		if err != nil {
			return Unavailable(err)
		}
		if len(resp.Kvs) > 0 {
			return api.NewError(http.StatusConflict, api.CodeInvalidReference, r.field, "%s: %s %q is being deleted", r.field, strings.TrimSuffix(r.parent, "s"), pid)
		}
	}
	return nil
}

func nameTaken(coll string, obj api.Object) *api.Error {
	what := strings.TrimSuffix(coll, "s")
	if coll == "services" {
		return api.NewError(http.StatusConflict, api.CodeNameTaken, "name", "a service named %q already exists in stack %s", obj.GetMeta().Name, obj.(*api.Service).Spec.StackID)
	}
	return api.NewError(http.StatusConflict, api.CodeNameTaken, "name", "a %s named %q already exists", what, obj.GetMeta().Name)
}

// Create stores a new object with its name and reference index entries, and
// its secret if any, in one transaction.
func (s *Store) Create(ctx context.Context, kind api.Kind, obj api.Object, secret []byte) ([]byte, int64, *api.Error) {
	return s.CreateOnce(ctx, kind, obj, secret, nil)
}

// CreateOnce is Create, and with once set, also records the request's
// idempotency key in the same transaction, so the key names at most one
// object. A key already recorded fails the create with ErrReplay (see
// idempotency.go).
func (s *Store) CreateOnce(ctx context.Context, kind api.Kind, obj api.Object, secret []byte, once *Idempotency) ([]byte, int64, *api.Error) {
	m := obj.GetMeta()
	if m.ID == "" {
		m.ID = NewID(kind.IDPrefix)
	}
	m.Type = kind.Type
	now := time.Now().UTC().Truncate(time.Millisecond)
	m.CreatedAt, m.UpdatedAt, m.Revision = now, now, 0
	m.Generation, m.DeletionTimestamp = 1, nil
	if err := s.Check(kind.Collection, obj); err != nil {
		return nil, 0, err
	}
	if err := s.denormalize(ctx, kind.Collection, obj); err != nil {
		return nil, 0, err
	}
	skip := map[string]bool{} // host subnets taken meanwhile
	for attempt := 0; ; attempt++ {
		key := s.ObjectKey(kind.Collection, m.ID)
		cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
		var allocCmps []clientv3.Cmp
		var allocOps []clientv3.Op
		host, isHost := obj.(*api.Host)
		if isHost {
			var aerr *api.Error
			if allocCmps, allocOps, aerr = s.allocateSubnet(ctx, host, skip); aerr != nil {
				return nil, 0, aerr
			}
		}
		stored := EncodeStored(obj)
		if aerr := checkSize(obj, stored, secret); aerr != nil {
			return nil, 0, aerr
		}
		ops := []clientv3.Op{clientv3.OpPut(key, string(stored))}
		scope, unique := nameScope(kind.Collection, obj)
		var nk string
		if unique {
			nk = s.NameKey(kind.Collection, scope, m.Name)
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(nk), "=", 0))
			ops = append(ops, clientv3.OpPut(nk, m.ID))
		}
		checked, aerr := s.checkParents(ctx, kind.Collection, obj)
		if aerr != nil {
			return nil, 0, aerr
		}
		only := func(ref) bool { return true }
		if checked {
			only = func(r ref) bool { return r.indexed != nil } // checked against the parents map; index entries still go in
		}
		rc, ro, used := s.refChecks(kind.Collection, obj, only)
		if checked {
			rc, used = nil, nil
		}
		cmps = append(append(cmps, rc...), allocCmps...)
		ops = append(append(ops, ro...), allocOps...)
		if secret != nil {
			at := s.SecretKey(kind.Collection, m.ID)
			ops = append(ops, clientv3.OpPut(at, string(s.seal(kind.Collection, secret, at))))
		}
		if once != nil {
			c, o, err := s.recordOnce(ctx, once, kind.Collection, m.ID)
			if err != nil {
				return nil, 0, Unavailable(err)
			}
			cmps, ops = append(cmps, c), append(ops, o)
		}
		if len(cmps) == 1 && len(ops) == 1 {
			// Nothing to compare but that the key is new, and the id was drawn
			// here with 62 random bits: a plain put, the cheapest write etcd
			// has, sent with the other puts waiting (batch.go).
			rev, err := s.batcher.put(ctx, key, string(stored))
			if err != nil {
				var ok bool
				if rev, ok = s.confirm(key, stored); !ok {
					return nil, 0, WriteFailed(err)
				}
			}
			s.writes.WithLabelValues(kind.Collection, "create").Inc()
			return stored, rev, nil
		}
		resp, err := s.Cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
		if err != nil {
			if once != nil && errors.Is(err, rpctypes.ErrLeaseNotFound) {
				s.forgetLease()
				return nil, 0, Unavailable(err)
			}
			if rev, ok := s.confirm(key, stored); ok {
				s.writes.WithLabelValues(kind.Collection, "create").Inc()
				return stored, rev, nil
			}
			return nil, 0, WriteFailed(err)
		}
		if !resp.Succeeded {
			if once != nil {
				if r, err := s.Cli.Get(ctx, once.key); err == nil && len(r.Kvs) > 0 {
					return nil, 0, errReplay
				}
			}
			if unique {
				if r, err := s.Cli.Get(ctx, nk); err == nil && len(r.Kvs) > 0 {
					return nil, 0, nameTaken(kind.Collection, obj)
				}
			}
			if e := s.explainRefFailure(ctx, obj, used); e != nil {
				return nil, 0, e
			}
			if isHost && host.Status.Subnet != "" && attempt < 50 {
				// Another registration took the subnet (or the network
				// changed) meanwhile: pick again.
				skip[host.Status.Subnet] = true
				continue
			}
			return nil, 0, api.NewError(http.StatusConflict, api.CodeConflict, "", "concurrent change; retry")
		}
		s.writes.WithLabelValues(kind.Collection, "create").Inc()
		return stored, resp.Header.Revision, nil
	}
}

// mutateFunc turns the current object into the wanted one. It may return a
// new secret to store with it.
type mutateFunc func(cur api.Object) (api.Object, []byte, *api.Error)

// update applies fn to the current object and stores the result if the
// object did not change meanwhile. With expectRev != 0 a changed object is a
// 409; without, the read-modify-write is retried.
func (s *Store) Update(ctx context.Context, kind api.Kind, id string, expectRev int64, fn mutateFunc) ([]byte, int64, *api.Error) {
	for attempt := 0; ; attempt++ {
		raw, rev, err := s.Get(ctx, kind.Collection, id)
		if err == ErrNotFound {
			return nil, 0, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "%s %q not found", kind.Type, id)
		} else if err != nil {
			return nil, 0, Unavailable(err)
		}
		if expectRev != 0 && expectRev != rev {
			return nil, 0, api.NewError(http.StatusConflict, api.CodeConflict, "revision", "revision %d is not current (%d): read the object again and reapply your change", expectRev, rev)
		}
		cur, derr := DecodeStored(kind, raw, rev)
		if derr != nil {
			return nil, 0, InternalError(derr)
		}
		// fn gets its own copy: one that changes the object it is given
		// and returns it must still be seen to have changed it.
		mine, _ := DecodeStored(kind, raw, rev)
		next, secret, aerr := fn(mine)
		if aerr != nil {
			return nil, 0, aerr
		}
		stored, newRev, aerr, retry := s.commitUpdate(ctx, kind, cur, next, secret)
		if !retry || expectRev != 0 {
			if retry {
				return nil, 0, api.NewError(http.StatusConflict, api.CodeConflict, "revision", "revision %d is not current: the object changed meanwhile", expectRev)
			}
			return stored, newRev, aerr
		}
		if attempt >= 20 {
			return nil, 0, api.NewError(http.StatusConflict, api.CodeConflict, "", "%s %q is changing too often to update; retry", kind.Type, id)
		}
	}
}

func (s *Store) commitUpdate(ctx context.Context, kind api.Kind, cur, next api.Object, secret []byte) ([]byte, int64, *api.Error, bool) {
	cm, nm := cur.GetMeta(), next.GetMeta()
	if nm.ID != "" && nm.ID != cm.ID {
		return nil, 0, invalid("id", "is immutable (%q)", cm.ID), false
	}
	if nm.Type != "" && nm.Type != cm.Type {
		return nil, 0, invalid("type", "is %q and cannot change", cm.Type), false
	}
	nm.ID, nm.Type, nm.CreatedAt, nm.UpdatedAt, nm.Revision = cm.ID, cm.Type, cm.CreatedAt, cm.UpdatedAt, 0
	if err := s.Check(kind.Collection, next); err != nil {
		return nil, 0, err, false
	}
	// References never change, except that a settable-once one may be set.
	newlySet := map[string]bool{}
	for _, r := range refs[kind.Collection] {
		o, n := r.get(cur), r.get(next)
		if o == n {
			continue
		}
		if r.settableOnce && o == "" {
			newlySet[r.field] = true
			continue
		}
		return nil, 0, invalid(r.field, "cannot change from %q to %q; create a new %s instead", o, n, kind.Type), false
	}
	var guard []clientv3.Cmp
	switch c := cur.(type) {
	case *api.Host:
		if n := next.(*api.Host); n.Status.Subnet != c.Status.Subnet {
			return nil, 0, invalid("status.subnet", "is allocated by the server from network %s (%q); it cannot be set to %q", ManagedNetwork, c.Status.Subnet, n.Status.Subnet), false
		}
	case *api.Network:
		cmp, aerr := s.CheckNetworkChange(ctx, c, next.(*api.Network))
		if aerr != nil {
			return nil, 0, aerr, false
		}
		if cmp != nil {
			guard = append(guard, *cmp)
		}
	}
	if specChanged(cur, next) {
		nm.Generation = cm.Generation + 1
	}
	if bytes.Equal(EncodeStored(cur), EncodeStored(next)) && secret == nil {
		return EncodeStored(cur), cm.Revision, nil, false // nothing to write
	}
	nm.UpdatedAt = time.Now().UTC().Truncate(time.Millisecond)
	key := s.ObjectKey(kind.Collection, cm.ID)
	stored := EncodeStored(next)
	if aerr := checkSize(next, stored, secret); aerr != nil {
		return nil, 0, aerr, false
	}
	if nm.Deleting() && len(nm.Finalizers) == 0 {
		// The last finalizer went: the object goes now.
		rev, aerr, retry := s.Purge(ctx, kind, cur)
		return stored, rev, aerr, retry
	}
	cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", cm.Revision)}, guard...)
	ops := []clientv3.Op{clientv3.OpPut(key, string(stored))}
	oscope, unique := nameScope(kind.Collection, cur)
	nscope, _ := nameScope(kind.Collection, next)
	renamed := unique && (cm.Name != nm.Name || oscope != nscope)
	if renamed {
		nk := s.NameKey(kind.Collection, nscope, nm.Name)
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(nk), "=", 0))
		ops = append(ops, clientv3.OpDelete(s.NameKey(kind.Collection, oscope, cm.Name)), clientv3.OpPut(nk, cm.ID))
	}
	rc, ro, used := s.refChecks(kind.Collection, next, func(r ref) bool { return newlySet[r.field] })
	cmps = append(cmps, rc...)
	ops = append(ops, ro...)
	if secret != nil {
		at := s.SecretKey(kind.Collection, cm.ID)
		ops = append(ops, clientv3.OpPut(at, string(s.seal(kind.Collection, secret, at))))
	}
	resp, err := s.Cli.Txn(ctx).If(cmps...).Then(ops...).Else(clientv3.OpGet(key, clientv3.WithKeysOnly())).Commit()
	if err != nil {
		if rev, ok := s.confirm(key, stored); ok {
			s.writes.WithLabelValues(kind.Collection, "update").Inc()
			return stored, rev, nil, false
		}
		return nil, 0, WriteFailed(err), false
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || kvs[0].ModRevision != cm.Revision {
			return nil, 0, nil, true // changed or deleted meanwhile: reread
		}
		if renamed {
			return nil, 0, nameTaken(kind.Collection, next), false
		}
		if e := s.explainRefFailure(ctx, next, used); e != nil {
			return nil, 0, e, false
		}
		return nil, 0, nil, true
	}
	s.writes.WithLabelValues(kind.Collection, "update").Inc()
	return stored, resp.Header.Revision, nil, false
}

// remove serves DELETE. An object that may have dependents (a stack, a
// service, a host) or that has finalizers is only marked: deletionTimestamp
// is set, the dependents finalizer added where it may have dependents, and
// the marker key that stops new children from appearing is written, all in
// one transaction. The garbage collector deletes the dependents and removes
// its finalizer, each controller named in finalizers removes its own, and the
// object goes with the last one. Nothing cascades inside the request, and a
// deletion cut short by a crash is simply picked up again by the collector.
// Other objects go at once. gone says which happened.
func (s *Store) Remove(ctx context.Context, kind api.Kind, id string, expectRev int64) (stored []byte, rev int64, gone bool, aerr *api.Error) {
	for attempt := 0; attempt < 20; attempt++ {
		raw, rev, err := s.Get(ctx, kind.Collection, id)
		if err == ErrNotFound {
			return nil, 0, false, api.NewError(http.StatusNotFound, api.CodeNotFound, "", "%s %q not found", kind.Type, id)
		} else if err != nil {
			return nil, 0, false, Unavailable(err)
		}
		if expectRev != 0 && expectRev != rev {
			return nil, 0, false, api.NewError(http.StatusConflict, api.CodeConflict, "revision", "revision %d is not current (%d)", expectRev, rev)
		}
		obj, derr := DecodeStored(kind, raw, rev)
		if derr != nil {
			return nil, 0, false, InternalError(derr)
		}
		m := obj.GetMeta()
		if m.Deleting() {
			return raw, rev, false, nil // already on its way
		}
		hasDependents := len(childRefs(kind.Collection)) > 0
		if !hasDependents && len(m.Finalizers) == 0 {
			newRev, aerr, retry := s.Purge(ctx, kind, obj)
			if retry {
				continue
			}
			return raw, newRev, true, aerr
		}
		now := time.Now().UTC().Truncate(time.Millisecond)
		m.DeletionTimestamp, m.UpdatedAt = &now, now
		if hasDependents {
			m.Finalizers = append(m.Finalizers, api.FinalizerDependents)
		}
		key := s.ObjectKey(kind.Collection, id)
		stored := EncodeStored(obj)
		resp, err := s.Cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(stored)), clientv3.OpPut(s.MarkerKey(kind.Collection, id), "")).Commit()
		if err != nil {
			if rev, ok := s.confirm(key, stored); ok {
				s.parentMarked(kind.Collection, id, rev)
				return stored, rev, false, nil
			}
			return nil, 0, false, WriteFailed(err)
		}
		if resp.Succeeded {
			s.writes.WithLabelValues(kind.Collection, "delete").Inc()
			s.parentMarked(kind.Collection, id, resp.Header.Revision)
			return stored, resp.Header.Revision, false, nil
		}
		if expectRev != 0 {
			return nil, 0, false, api.NewError(http.StatusConflict, api.CodeConflict, "revision", "revision %d is not current: the object changed meanwhile", expectRev)
		}
	}
	return nil, 0, false, api.NewError(http.StatusConflict, api.CodeConflict, "", "%s %q is changing too often to delete; retry", kind.Type, id)
}

// purge removes an object with its name, index, marker and secret keys, if
// it is still at the revision read. retry says it changed meanwhile. A
// host's agent keys go with it: only the server reads keys.
func (s *Store) Purge(ctx context.Context, kind api.Kind, obj api.Object) (int64, *api.Error, bool) {
	m := obj.GetMeta()
	key := s.ObjectKey(kind.Collection, m.ID)
	ops := []clientv3.Op{clientv3.OpDelete(key), clientv3.OpDelete(s.MarkerKey(kind.Collection, m.ID)), clientv3.OpDelete(s.SecretKey(kind.Collection, m.ID))}
	if scope, unique := nameScope(kind.Collection, obj); unique {
		nk := s.NameKey(kind.Collection, scope, m.Name)
		// Delete the name entry only if it is ours.
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(nk), "=", m.ID)}, []clientv3.Op{clientv3.OpDelete(nk)}, nil))
	}
	for _, r := range refs[kind.Collection] {
		if pid := r.get(obj); pid != "" && r.indexed != nil && r.indexed(obj) {
			ops = append(ops, clientv3.OpDelete(s.IndexPrefix(kind.Collection, r.parent, pid)+m.ID))
		}
	}
	if h, ok := obj.(*api.Host); ok {
		if op, ok := s.releaseSubnet(h); ok {
			ops = append(ops, op)
		}
	}
	if kind.Collection == "containers" {
		// The key the container was handed (GET .../secrets), if any.
		kid := "key-" + m.ID
		ops = append(ops, clientv3.OpDelete(s.ObjectKey("apikeys", kid)), clientv3.OpDelete(s.SecretKey("apikeys", kid)))
	}
	if kind.Collection == "hosts" {
		prefix := s.IndexPrefix("apikeys", "hosts", m.ID)
		if _, err := s.List(ctx, prefix, true, func(k string, _ []byte, _ int64) error {
			kid := strings.TrimPrefix(k, prefix)
			ops = append(ops, clientv3.OpDelete(k), clientv3.OpDelete(s.ObjectKey("apikeys", kid)), clientv3.OpDelete(s.SecretKey("apikeys", kid)))
			return nil
		}); err != nil {
			return 0, Unavailable(err), false
		}
	}
	resp, err := s.Cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", m.Revision)).Then(ops...).Commit()
	if err != nil {
		return 0, WriteFailed(err), false
	}
	if !resp.Succeeded {
		return 0, nil, true
	}
	s.writes.WithLabelValues(kind.Collection, "delete").Inc()
	return resp.Header.Revision, nil, false
}

// denormalize fills fields derived from other objects before a create: a
// container of a service belongs to that service's stack. A service's stack
// never changes and ids are never reused, so the answer is remembered; the
// create's transaction still checks that the service exists.
func (s *Store) denormalize(ctx context.Context, coll string, obj api.Object) *api.Error {
	c, ok := obj.(*api.Container)
	if !ok || c.Spec.ServiceID == "" {
		return nil
	}
	stackID, known := s.serviceStacks.get(c.Spec.ServiceID)
	if !known {
		raw, _, err := s.Get(ctx, "services", c.Spec.ServiceID)
		if err == ErrNotFound {
			return api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidReference, "spec.serviceId", "spec.serviceId: service %q does not exist", c.Spec.ServiceID)
		} else if err != nil {
			return Unavailable(err)
		}
		var svc api.Service
		if err := json.Unmarshal(raw, &svc); err != nil {
			return InternalError(err)
		}
		stackID = svc.Spec.StackID
		s.serviceStacks.put(c.Spec.ServiceID, stackID)
	}
	if c.Spec.StackID != "" && c.Spec.StackID != stackID {
		return invalid("spec.stackId", "is %q but service %s is in stack %q; leave it out", c.Spec.StackID, c.Spec.ServiceID, stackID)
	}
	c.Spec.StackID = stackID
	return nil
}

// idMap remembers immutable facts by id, up to a bound (then it starts over).
type idMap struct {
	mu sync.Mutex
	m  map[string]string
}

const idMapMax = 100000

func (m *idMap) get(id string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.m[id]
	return v, ok
}

func (m *idMap) put(id, v string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.m == nil || len(m.m) >= idMapMax {
		m.m = map[string]string{}
	}
	m.m[id] = v
}

func part(obj api.Object, name string) reflect.Value {
	return reflect.ValueOf(obj).Elem().FieldByName(name)
}

// specChanged says whether a write moves the generation.
func specChanged(cur, next api.Object) bool {
	return !api.SameJSON(part(cur, "Spec").Interface(), part(next, "Spec").Interface())
}

func invalid(field, format string, args ...any) *api.Error {
	return api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidField, field, field+": "+format, args...)
}
