package harness

import (
	"context"
	"log/slog"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Election holds an engine lease for one of several identities at a time.
// Expiry is judged by when this process saw the lease last change, not by
// the holder's clock, so clock skew between servers cannot make two leaders.
type Election struct {
	Engine   *client.Client
	Name     string // lease name, e.g. "controllers"
	Identity string
	// Duration is how long a silent leader keeps the lease (default 15s);
	// the leader renews every Duration/3.
	Duration time.Duration
	Log      *slog.Logger

	observedRev int64
	observedAt  time.Time
}

// Run campaigns, and runs lead while it holds the lease; lead's context
// ends when the lease is lost. Run returns when ctx ends, after releasing
// the lease so another server takes over at once.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context)) {
	if e.Duration == 0 {
		e.Duration = 15 * time.Second
	}
	if e.Log == nil {
		e.Log = slog.Default()
	}
	log := e.Log.With("lease", e.Name, "identity", e.Identity)
	for ctx.Err() == nil {
		l, ok := e.tryAcquire(ctx)
		if !ok {
			sleep(ctx, e.Duration/5)
			continue
		}
		log.Info("leading")
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(lctx)
		}()
		l = e.renewLoop(lctx, l, done)
		cancel()
		<-done
		if ctx.Err() != nil {
			e.release(l)
			return
		}
		log.Warn("lost the lease; campaigning again")
	}
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func (e *Election) get(ctx context.Context) (*api.Lease, error) {
	ls, _, err := e.Engine.Leases().List(ctx, client.ListOptions{Name: e.Name})
	if err != nil {
		return nil, err
	}
	for i := range ls {
		if ls[i].Name == e.Name {
			return &ls[i], nil
		}
	}
	return nil, nil
}

// tryAcquire takes the lease if it is free, expired, or already ours.
func (e *Election) tryAcquire(ctx context.Context) (*api.Lease, bool) {
	l, err := e.get(ctx)
	if err != nil {
		e.Log.Debug("reading lease", "lease", e.Name, "err", err)
		return nil, false
	}
	now := time.Now().UTC()
	if l == nil {
		created, err := e.Engine.Leases().Create(ctx, &api.Lease{Meta: api.Meta{Name: e.Name}, Spec: api.LeaseSpec{
			HolderIdentity: e.Identity, LeaseDurationSeconds: int(e.Duration / time.Second), AcquireTime: &now, RenewTime: &now}})
		if err != nil {
			return nil, false
		}
		return created, true
	}
	if l.Revision != e.observedRev {
		e.observedRev, e.observedAt = l.Revision, time.Now()
	}
	free := l.Spec.HolderIdentity == "" || l.Spec.HolderIdentity == e.Identity || time.Since(e.observedAt) > e.Duration
	if !free {
		return nil, false
	}
	next := *l
	if l.Spec.HolderIdentity != e.Identity {
		next.Spec.AcquireTime = &now
		next.Spec.LeaseTransitions++
	}
	next.Spec.HolderIdentity, next.Spec.RenewTime, next.Spec.LeaseDurationSeconds = e.Identity, &now, int(e.Duration/time.Second)
	updated, err := e.Engine.Leases().Update(ctx, l.ID, &next) // carries l.Revision: a race loses with 409
	if err != nil {
		return nil, false
	}
	return updated, true
}

// renewLoop renews until ctx ends, lead returns, or renewing fails for a
// whole lease duration; it returns the last lease written.
func (e *Election) renewLoop(ctx context.Context, l *api.Lease, done <-chan struct{}) *api.Lease {
	t := time.NewTicker(e.Duration / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return l
		case <-done:
			return l
		case <-t.C:
		}
		now := time.Now().UTC()
		next := *l
		next.Spec.RenewTime = &now
		updated, err := e.Engine.Leases().Update(ctx, l.ID, &next)
		if err == nil {
			l, lastOK = updated, time.Now()
			continue
		}
		if api.IsConflict(err) || api.IsNotFound(err) || time.Since(lastOK) > e.Duration*2/3 {
			// Someone else wrote the lease, or we cannot prove we hold it.
			return l
		}
	}
}

func (e *Election) release(l *api.Lease) {
	if l == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	next := *l
	next.Spec.HolderIdentity = ""
	e.Engine.Leases().Update(ctx, l.ID, &next)
}
