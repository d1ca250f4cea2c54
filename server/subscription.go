package server

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
// without ever blocking: a subscriber whose queue is full is cut off with a
// reason instead of making the server hold an unbounded backlog.
type subscription struct {
	hub         *hub
	filter      *filter
	ch          chan *event
	backlog     []*event
	minRev      int64 // live events at or below this were in the backlog
	catchUpFrom int64 // replay from etcd first, from this revision on

	dead       chan struct{}
	once       sync.Once
	deathName  string
	deathCause string
}

// offer is called with the hub locked. It reports false when the subscriber
// is too slow and has been cut off.
func (s *subscription) offer(ev *event) bool {
	if ev.rev <= s.minRev {
		return true
	}
	select {
	case s.ch <- ev:
		return true
	default:
		s.kill(api.EventError, "subscriber fell "+strconv.Itoa(cap(s.ch))+" events behind and was disconnected; resubscribe with since=<last revision received>")
		return false
	}
}

func (s *subscription) kill(name, cause string) {
	s.once.Do(func() {
		s.deathName, s.deathCause = name, cause
		close(s.dead)
	})
}

// frameSink writes frames to a client: WebSocket or newline-delimited JSON.
// writeFrame may buffer; flush sends what is buffered. The stream flushes
// whenever its queue runs empty, so a burst costs one write, not one per event.
type frameSink interface {
	writeFrame(frame []byte) error
	flush() error
}

// flushCoalesce is the shortest time between two flushes of one stream.
const flushCoalesce = 5 * time.Millisecond

// stream sends events to sink until ctx ends, the subscriber is cut off or
// sink fails. It never returns while events it owes are unsent, except on
// those three conditions.
func (s *subscription) stream(ctx context.Context, sink frameSink, pingEvery time.Duration) error {
	defer s.hub.unsubscribe(s)
	ping := []byte(`{"name":"ping"}`)
	if s.catchUpFrom != 0 {
		resynced, err := s.catchUp(ctx, sink)
		if err != nil || resynced {
			return err
		}
	}
	for _, ev := range s.backlog {
		if f, ok := s.filter.frame(ev); ok {
			if err := sink.writeFrame(f); err != nil {
				return err
			}
		}
	}
	s.backlog = nil
	if err := sink.flush(); err != nil {
		return err
	}
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
		return sink.flush()
	}
	defer func() {
		if flushTimer != nil {
			flushTimer.Stop()
		}
	}()
	for {
		select {
		case ev := <-s.ch:
			if f, ok := s.filter.frame(ev); ok {
				if err := sink.writeFrame(f); err != nil {
					return err
				}
				dirty = true
				s.hub.metrics.delivered.Inc()
			}
			if dirty && len(s.ch) == 0 && flushC == nil {
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
			if err := sink.writeFrame(ping); err != nil {
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
				case ev := <-s.ch:
					if f, ok := s.filter.frame(ev); ok {
						if err := sink.writeFrame(f); err != nil {
							return err
						}
					}
				default:
					break drain
				}
			}
			b, _ := json.Marshal(api.Event{Name: s.deathName, Message: s.deathCause})
			if err := sink.writeFrame(b); err != nil {
				return err
			}
			return sink.flush()
		case <-ctx.Done():
			return nil
		}
	}
}

// catchUp replays history from etcd until the hub's ring reaches back far
// enough to take over. It reports whether it sent a resync instead.
func (s *subscription) catchUp(ctx context.Context, sink frameSink) (bool, error) {
	h := s.hub
	delivered := s.catchUpFrom
	if h.join(s, delivered) {
		return false, nil
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objPrefix := h.st.prefix + "o/"
	wch := h.st.cli.Watch(wctx, objPrefix, clientv3.WithPrefix(), clientv3.WithRev(delivered+1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	idle := time.NewTimer(300 * time.Millisecond)
	defer idle.Stop()
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
					if err := sink.writeFrame(b); err != nil {
						return true, err
					}
					return true, sink.flush()
				}
				return false, err
			}
			for _, e := range wr.Events {
				ev := convertEvent(objPrefix, e)
				if ev == nil {
					continue
				}
				if f, ok := s.filter.frame(ev); ok {
					if err := sink.writeFrame(f); err != nil {
						return false, err
					}
				}
				delivered = ev.rev
			}
			if err := sink.flush(); err != nil {
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
			_ = h.st.cli.RequestProgress(wctx)
			idle.Reset(300 * time.Millisecond)
		case <-s.dead:
			return false, nil
		case <-ctx.Done():
			return false, nil
		}
	}
}

// filter decides what one subscriber sees: the types it asked for, its
// selectors, and what its role allows.
type filter struct {
	collections map[string]bool // nil: all
	selector    api.Selector
	stackID     string
	serviceID   string
	hostID      string
	scope       *principal
}

func (f *filter) allowsCollection(coll string) bool {
	if f.collections != nil && !f.collections[coll] {
		return false
	}
	return f.scope == nil || f.scope.canRead(coll)
}

func (f *filter) matches(coll, id string, fl *eventFields) bool {
	if f.scope != nil && !f.scope.canSee(coll, id, fl.Spec.HostID) {
		return false
	}
	if f.stackID != "" && fl.Spec.StackID != f.stackID && !(coll == "stacks" && id == f.stackID) {
		return false
	}
	if f.serviceID != "" && fl.Spec.ServiceID != f.serviceID {
		return false
	}
	if f.hostID != "" && fl.Spec.HostID != f.hostID {
		return false
	}
	return f.selector.Matches(fl.Labels)
}

// frame returns what to send for ev, if anything. An object that stops
// matching is sent as a removal, as Kubernetes watches do.
func (f *filter) frame(ev *event) ([]byte, bool) {
	if !f.allowsCollection(ev.collection) {
		return nil, false
	}
	if ev.remove {
		return ev.frame, f.matches(ev.collection, ev.id, &ev.cur)
	}
	if f.matches(ev.collection, ev.id, &ev.cur) {
		return ev.frame, true
	}
	if ev.hasPrev && f.matches(ev.collection, ev.id, &ev.prev) {
		resource := ev.frame[len(`{"name":"resource.change","revision":`)+len(strconv.FormatInt(ev.rev, 10))+len(`,"resource":`) : len(ev.frame)-1]
		return encodeFrame(true, ev.rev, resource), true
	}
	return nil, false
}
