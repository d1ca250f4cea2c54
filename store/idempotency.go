package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// Idempotency keys.
//
// A client that sends a create with an "Idempotency-Key" header and gets no
// answer (or a CodeUnknown one) sends it again with the same key; the
// server then answers with the object the first request made, if it made
// one, instead of making a second. The key is recorded at
// k/<access key>/<sha-256 of the key> in the create's own transaction, with
// the collection, the id and a hash of the body, under an etcd lease that
// ends it a day later (idempotencyTTL).

const (
	idempotencyTTL = 24 * time.Hour
	// A lease is shared by the records of leaseReuse, so records live
	// between idempotencyTTL and idempotencyTTL+leaseReuse.
	leaseReuse = time.Hour
)

// Idempotency is one create's idempotency key.
type Idempotency struct {
	key  string // etcd key of the record
	body string // hash of the request body
}

// IdempotencyRecord is what a key recorded.
type IdempotencyRecord struct {
	Collection string `json:"collection"`
	ID         string `json:"id"`
	Body       string `json:"body"`
}

type idemLease struct {
	mu      sync.Mutex
	id      clientv3.LeaseID
	granted time.Time
}

// errReplay fails a create whose idempotency key is already recorded.
var errReplay = api.NewError(http.StatusConflict, api.CodeConflict, "Idempotency-Key", "this Idempotency-Key was used already")

// IsReplay says a create failed because its idempotency key was recorded
// meanwhile: the caller answers with that record.
func IsReplay(e *api.Error) bool { return e == errReplay }

// NewIdempotency checks an Idempotency-Key header value sent by the holder
// of accessKey with body.
func (s *Store) NewIdempotency(accessKey, header string, body []byte) (*Idempotency, *api.Error) {
	if len(header) > 255 {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "Idempotency-Key", "Idempotency-Key: at most 255 characters, got %d", len(header))
	}
	for i := 0; i < len(header); i++ {
		if c := header[i]; c < 0x21 || c > 0x7e {
			return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidField, "Idempotency-Key", "Idempotency-Key: printable ASCII without spaces only (a UUID, say)")
		}
	}
	k := sha256.Sum256([]byte(header))
	b := sha256.Sum256(body)
	return &Idempotency{key: s.Prefix + "k/" + accessKey + "/" + hex.EncodeToString(k[:]), body: hex.EncodeToString(b[:])}, nil
}

// Replayed returns the record of an idempotency key if there is one. A
// record of another body is an error: the key was reused for another request.
func (s *Store) Replayed(ctx context.Context, once *Idempotency) (*IdempotencyRecord, *api.Error) {
	resp, err := s.Cli.Get(ctx, once.key)
	if err != nil {
		return nil, Unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	var rec IdempotencyRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, InternalError(err)
	}
	if rec.Body != once.body {
		return nil, api.NewError(http.StatusUnprocessableEntity, api.CodeConflict, "Idempotency-Key",
			"this Idempotency-Key was used for another request (one that created %s %s); use a new key for a new request", rec.Collection, rec.ID)
	}
	return &rec, nil
}

// recordOnce returns the comparison and the put that record once for the
// object coll/id in the create's transaction.
func (s *Store) recordOnce(ctx context.Context, once *Idempotency, coll, id string) (clientv3.Cmp, clientv3.Op, error) {
	lease, err := s.idempotencyLease(ctx)
	if err != nil {
		return clientv3.Cmp{}, clientv3.Op{}, err
	}
	b, _ := json.Marshal(IdempotencyRecord{Collection: coll, ID: id, Body: once.body})
	return clientv3.Compare(clientv3.CreateRevision(once.key), "=", 0), clientv3.OpPut(once.key, string(b), clientv3.WithLease(lease)), nil
}

func (s *Store) idempotencyLease(ctx context.Context) (clientv3.LeaseID, error) {
	l := &s.idem
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.id != 0 && time.Since(l.granted) < leaseReuse {
		return l.id, nil
	}
	resp, err := s.Cli.Grant(ctx, int64((idempotencyTTL+leaseReuse)/time.Second))
	if err != nil {
		return 0, err
	}
	l.id, l.granted = resp.ID, time.Now()
	return l.id, nil
}

// forgetLease drops the lease after a write failed with it (it may have
// been revoked, or the store restored from a backup without it).
func (s *Store) forgetLease() {
	s.idem.mu.Lock()
	s.idem.id = 0
	s.idem.mu.Unlock()
}
