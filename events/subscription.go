package events

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/drover/drover/api"
)

// subscription is one client's event stream. The hub offers it live events
// without ever blocking and queues only those its filter matches: a
// subscriber whose queue is full is cut off with a reason instead of making
// the server hold an unbounded backlog.
type Subscription struct {
	hub         *Hub
	filter      *Filter
	ch          chan delivery
	backlog     []*event
	minRev      int64     // live events at or below this were in the backlog
	catchUpFrom int64     // replay from etcd first, from this revision on
	slots       []subSlot // where the hub's index files it (hub.mu)

	// mark is the revision the last ping carried: every event the filter
	// matches up to it has been written. Only the stream goroutine uses it.
	mark int64

	dead       chan struct{}
	once       sync.Once
	deathName  string
	deathCause string
}

// delivery is one frame queued for a subscriber.
type delivery struct {
	rev   int64
	frame []byte
}

// offer is called with the hub locked. It queues what the subscriber is to
// send for ev, if anything, and reports false when the subscriber is too slow
// and has been cut off.
func (s *Subscription) offer(ev *event) bool {
	if ev.rev <= s.minRev {
		return true
	}
	f, ok := s.filter.frame(ev)
	if !ok {
		return true
	}
	select {
	case s.ch <- delivery{ev.rev, f}:
		return true
	default:
		s.kill(api.EventError, "subscriber fell "+strconv.Itoa(cap(s.ch))+" events behind and was disconnected; resubscribe with since=<last revision received>")
		return false
	}
}

func (s *Subscription) kill(name, cause string) {
	s.once.Do(func() {
		s.deathName, s.deathCause = name, cause
		close(s.dead)
	})
}

// Sink writes frames to a client: WebSocket or newline-delimited JSON.
// writeFrame may buffer; flush sends what is buffered. The stream flushes
// whenever its queue runs empty, so a burst costs one write, not one per event.
type Sink interface {
	WriteFrame(frame []byte) error
	Flush() error
}

// flushCoalesce is the shortest time between two flushes of one stream.
const flushCoalesce = 5 * time.Millisecond

// stream sends events to sink until ctx ends, the subscriber is cut off or
// sink fails. It never returns while events it owes are unsent, except on
// those three conditions.
func (s *Subscription) Stream(ctx context.Context, sink Sink, pingEvery time.Duration) error {
	defer s.hub.Unsubscribe(s)
	if s.catchUpFrom != 0 {
		resynced, err := s.catchUp(ctx, sink, pingEvery)
		if err != nil || resynced {
			return err
		}
	}
	for _, ev := range s.backlog {
		if f, ok := s.filter.frame(ev); ok {
			if err := sink.WriteFrame(f); err != nil {
				return err
			}
		}
	}
	s.backlog = nil
	if err := sink.Flush(); err != nil {
		return err
	}
	// The backlog held everything up to minRev the hub will not queue.
	s.mark = max(s.mark, s.minRev)
	t := time.NewTicker(pingEvery)
	defer t.Stop()
	// Flushes are coalesced: at once if the last was flushCoalesce ago or
	// more, else when that much time has passed. A quiet stream sees each
	// event immediately; a busy one costs one write per few milliseconds
	// instead of one per event.
	var lastFlush time.Time
	var flushTimer *time.Timer
	var flushC <-chan time.Time
	dirty := false
	flush := func() error {
		dirty, lastFlush = false, time.Now()
		return sink.Flush()
	}
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
	}()
	for {
		select {
		case d := <-s.ch:
			if err := sink.WriteFrame(d.frame); err != nil {
				return err
			}
			dirty = true
			s.hub.metrics.Delivered.Inc()
			if len(s.ch) == 0 && flushC == nil {
				if wait := flushCoalesce - time.Since(lastFlush); wait <= 0 {
					if err := flush(); err != nil {
						return err
					}
				} else {
					if flushTimer == nil {
						flushTimer = time.NewTimer(wait)
					} else {
						flushTimer.Reset(wait)
					}
					flushC = flushTimer.C
				}
			}
		case <-flushC:
			flushC = nil
			if dirty {
				if err := flush(); err != nil {
					return err
				}
			}
		case <-t.C:
			if err := sink.WriteFrame(pingFrame(s.bookmark())); err != nil {
				return err
			}
			if err := flush(); err != nil {
				return err
			}
		case <-s.dead:
			// Drain what was queued before the cut, then say why.
		drain:
			for {
				select {
				case d := <-s.ch:
					if err := sink.WriteFrame(d.frame); err != nil {
						return err
					}
				default:
					break drain
				}
			}
			b, _ := json.Marshal(api.Event{Name: s.deathName, Message: s.deathCause})
			if err := sink.WriteFrame(b); err != nil {
				return err
			}
			return sink.Flush()
		case <-ctx.Done():
			return nil
		}
	}
}

// bookmark returns the revision the next ping carries: the subscriber has
// been sent every event its filter matches up to it. When its queue is empty
// that is the hub's last revision, since the hub queues matching events under
// the same lock as it moves that revision; otherwise the last mark stands
// (the next queued event may share a revision with the last one sent).
// Marks never go backwards.
func (s *Subscription) bookmark() int64 {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-s.dead: // the hub queues nothing more for it
	default:
		if len(s.ch) == 0 {
			s.mark = max(s.mark, h.lastRev)
		}
	}
	return s.mark
}

// pingFrame is {"name":"ping","revision":N}.
func pingFrame(rev int64) []byte {
	b := append(make([]byte, 0, 48), `{"name":"`+api.EventPing+`","revision":`...)
	b = strconv.AppendInt(b, rev, 10)
	return append(b, '}')
}

// catchUp replays history from etcd until the hub's ring reaches back far
// enough to take over. It reports whether it sent a resync instead. Pings go
// out meanwhile, marked with the revision replayed so far.
func (s *Subscription) catchUp(ctx context.Context, sink Sink, pingEvery time.Duration) (bool, error) {
	h := s.hub
	delivered := s.catchUpFrom
	s.mark = delivered
	if h.join(s, delivered) {
		return false, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objPrefix := h.objPrefix
	wch := h.cli.Watch(wctx, objPrefix, clientv3.WithPrefix(), clientv3.WithRev(delivered+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	idle := time.NewTimer(300 * time.Millisecond)
	defer idle.Stop()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return false, nil
				}
				return false, errors.New("store watch closed during catch-up")
			}
			if err := wr.Err(); err != nil {
				if errors.Is(err, rpctypes.ErrCompacted) {
					b, _ := json.Marshal(api.Event{Name: api.EventResync, Message: "revision " + strconv.FormatInt(s.catchUpFrom, 10) + " is older than the store keeps (compacted at " + strconv.FormatInt(wr.CompactRevision, 10) + "); list again and watch from the list's revision"})
					if err := sink.WriteFrame(b); err != nil {
						return true, err
					}
					return true, sink.Flush()
				}
				return false, err
			}
			for _, e := range wr.Events {
				ev := convertEvent(objPrefix, e)
				if ev == nil {
					continue
				}
				if f, ok := s.filter.frame(ev); ok {
					if err := sink.WriteFrame(f); err != nil {
						return false, err
					}
				}
				delivered = ev.rev
			}
			if err := sink.Flush(); err != nil {
				return false, err
			}
			if wr.IsProgressNotify() && wr.Header.Revision > delivered {
				delivered = wr.Header.Revision
			}
			if h.join(s, delivered) {
				return false, nil
			}
			idle.Reset(300 * time.Millisecond)
		case <-idle.C:
			// No news: ask etcd how far this watch has got.
			_ = h.cli.RequestProgress(wctx)
			idle.Reset(300 * time.Millisecond)
		case <-ping.C:
			// A watch response is written whole before delivered moves.
			s.mark = max(s.mark, delivered)
			if err := sink.WriteFrame(pingFrame(s.mark)); err != nil {
				return false, err
			}
			if err := sink.Flush(); err != nil {
				return false, err
			}
		case <-s.dead:
			return false, nil
		case <-ctx.Done():
			return false, nil
		}
	}
}

// Death says why the hub cut the subscriber off, if it did.
func (s *Subscription) Death() (cause string, dead bool) {
	select {
	case <-s.dead: // closed after deathCause is set: no race
		return s.deathCause, true
	default:
		return "", false
	}
}
