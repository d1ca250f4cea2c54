package store

import (
	"context"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Group commit of plain puts.
//
// Most creates are a put of a new key and nothing else (a container, an
// event of a host: see Create). Sent one by one, each costs etcd a gRPC
// request, a raft proposal and an apply; with many writers etcd spends most
// of its time on that fixed cost, not on the keys. The batcher sends the
// puts that arrive while an earlier request is in flight together, as the
// Then branch of one transaction with no compares: the same keys, values and
// durability, one request. A put never waits for a timer: when nothing is in
// flight it goes at once, alone.
//
// The puts of one batch share one store revision, like the keys of any
// multi-key transaction; watchers already take a revision that holds several
// events (client.Cache resumes one revision early).
//
// A failed transaction fails every put in it, each of which then answers as
// a failed put would have alone. No put is in two batches.

// etcd refuses a transaction of more than --max-txn-ops operations (128 by
// default, the floor an operator can set) or of a request above
// --max-request-bytes (1.5 MiB by default). A batch stays within both; one
// put larger than batchMaxBytes goes alone (checkSize keeps it within etcd's
// limit).
const (
	batchMaxOps   = 128
	batchMaxBytes = 1 << 20
	// batchSenders is how many batches may be in flight at once: etcd
	// pipelines requests, so one sender alone would leave it idle while its
	// answer travels back.
	batchSenders = 2
)

type pendingPut struct {
	key, val string
	done     chan putResult
}

type putResult struct {
	rev int64
	err error
}

type putBatcher struct {
	cli *clientv3.Client
	// timeout bounds one batch's request to etcd, whoever waits for it.
	timeout func() time.Duration

	mu      sync.Mutex
	pending []*pendingPut
	running int // senders at work, at most batchSenders
	// batches and puts count what was sent, for tests and metrics.
	batches, puts int64
}

// put stores val at key with the next batch and returns the revision it was
// stored at. A cancelled ctx stops the wait, not the put: its outcome is then
// unknown, as with any etcd request cut short.
func (b *putBatcher) put(ctx context.Context, key, val string) (int64, error) {
	p := &pendingPut{key: key, val: val, done: make(chan putResult, 1)}
	b.mu.Lock()
	b.pending = append(b.pending, p)
	if b.running < batchSenders {
		b.running++
		go b.run()
	}
	b.mu.Unlock()
	select {
	case r := <-p.done:
		return r.rev, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// run sends batches until none is pending.
func (b *putBatcher) run() {
	for {
		b.mu.Lock()
		batch := b.take()
		if len(batch) == 0 {
			b.running--
			b.mu.Unlock()
			return
		}
		b.batches++
		b.puts += int64(len(batch))
		b.mu.Unlock()
		b.commit(batch)
	}
}

// take removes the next batch from the queue; b.mu is held.
func (b *putBatcher) take() []*pendingPut {
	n, size := 0, 0
	for n < len(b.pending) && n < batchMaxOps {
		sz := len(b.pending[n].key) + len(b.pending[n].val)
		if n > 0 && size+sz > batchMaxBytes {
			break
		}
		size += sz
		n++
	}
	batch := make([]*pendingPut, n)
	copy(batch, b.pending[:n])
	rest := copy(b.pending, b.pending[n:])
	clear(b.pending[rest:])
	b.pending = b.pending[:rest]
	return batch
}

func (b *putBatcher) commit(batch []*pendingPut) {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout())
	defer cancel()
	var res putResult
	if len(batch) == 1 {
		resp, err := b.cli.Put(ctx, batch[0].key, batch[0].val)
		if err != nil {
			res.err = err
		} else {
			res.rev = resp.Header.Revision
		}
	} else {
		ops := make([]clientv3.Op, len(batch))
		for i, p := range batch {
			ops[i] = clientv3.OpPut(p.key, p.val)
		}
		resp, err := b.cli.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			res.err = err
		} else {
			res.rev = resp.Header.Revision
		}
	}
	for _, p := range batch {
		p.done <- res
	}
}

// BatchStats reports how many plain-put batches were sent and how many puts
// they held.
func (s *Store) BatchStats() (batches, puts int64) {
	s.batcher.mu.Lock()
	defer s.batcher.mu.Unlock()
	return s.batcher.batches, s.batcher.puts
}
