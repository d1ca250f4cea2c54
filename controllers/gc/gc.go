// Package gc is the engine's garbage collector. DELETE only marks an object
// that may have dependents (deletionTimestamp and the drover.io/dependents
// finalizer); the collector deletes its dependents (objects that name it in
// spec — a service's stackId, a container's serviceId or hostId, a lease's
// hostId — or in ownerReferences), waits until they are gone, then removes
// the finalizer, and the server drops the object with its last finalizer.
// It also deletes orphans: objects whose owner no longer exists.
//
// Everything it needs is in the objects themselves, so a collector that
// crashed mid-way, or a second one on another server, just carries on.
package gc

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
)

// Name is the controller's name in logs and metrics.
const Name = "gc"

// Options configure the collector.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Metrics *harness.Metrics
}

// Collector is the garbage collector.
type Collector struct {
	eng     *client.Client
	log     *slog.Logger
	ctrl    *harness.Controller
	sources map[string]*source // by collection
	order   []*source
}

const idxOwner = "owner"

// source is one collection's cache seen without its type.
type source struct {
	coll    string
	run     func(context.Context)
	wait    func(context.Context) bool
	rev     func() int64
	get     func(id string) (api.Object, bool)
	byOwner func(key string) []api.Object
	del     func(ctx context.Context, id string) error
	patch   func(ctx context.Context, id string, p any) error
}

type objPtr[T any] interface {
	*T
	api.Object
}

// ownerKeys lists "collection/id" of every owner of obj: the references in
// its spec and its ownerReferences.
func ownerKeys(obj api.Object) []string {
	var out []string
	switch o := obj.(type) {
	case *api.Service:
		out = append(out, "stacks/"+o.Spec.StackID)
	case *api.Container:
		if o.Spec.ServiceID != "" {
			out = append(out, "services/"+o.Spec.ServiceID)
		}
		if o.Spec.StackID != "" {
			out = append(out, "stacks/"+o.Spec.StackID)
		}
		if o.Spec.HostID != "" {
			out = append(out, "hosts/"+o.Spec.HostID)
		}
	case *api.Lease:
		if o.Spec.HostID != "" {
			out = append(out, "hosts/"+o.Spec.HostID)
		}
	}
	for _, r := range obj.GetMeta().OwnerReferences {
		if k, ok := api.KindByType(r.Type); ok {
			out = append(out, k.Collection+"/"+r.ID)
		}
	}
	return out
}

func watch[T any, PT objPtr[T]](g *Collector, res *client.Resource[T], coll string) {
	enq := func(o *T) { g.ctrl.Enqueue(coll + "/" + PT(o).GetMeta().ID) }
	c := client.NewCache[T, PT](res, client.ListOptions{}, client.Handlers[T]{
		OnAdd:    enq,
		OnUpdate: func(_, o *T) { enq(o) },
		OnDelete: func(o *T) {
			// A dependent went: its owners may now be free to go; an owner
			// went: its dependents are orphans.
			for _, k := range ownerKeys(PT(o)) {
				g.ctrl.Enqueue(k)
			}
			for _, s := range g.order {
				for _, d := range s.byOwner(coll + "/" + PT(o).GetMeta().ID) {
					g.ctrl.Enqueue(s.coll + "/" + d.GetMeta().ID)
				}
			}
		},
	}, g.log)
	c.AddIndex(idxOwner, func(o *T) []string { return ownerKeys(PT(o)) })
	s := &source{coll: coll, run: c.Run, wait: c.WaitForSync, rev: c.Revision,
		get: func(id string) (api.Object, bool) {
			o, ok := c.Get(id)
			if !ok {
				return nil, false
			}
			return PT(o), true
		},
		byOwner: func(key string) []api.Object {
			var out []api.Object
			for _, o := range c.ByIndex(idxOwner, key) {
				out = append(out, PT(o))
			}
			return out
		},
		del: func(ctx context.Context, id string) error {
			_, err := res.Delete(ctx, id)
			return err
		},
		patch: func(ctx context.Context, id string, p any) error {
			_, err := res.Patch(ctx, id, p)
			return err
		},
	}
	g.sources[coll] = s
	g.order = append(g.order, s)
}

// New builds a collector; Run starts it.
func New(o Options) *Collector {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	g := &Collector{eng: o.Engine, log: o.Logger.With("controller", Name), sources: map[string]*source{}}
	g.ctrl = &harness.Controller{Name: Name, Workers: 4, Log: o.Logger, Metrics: o.Metrics}
	g.ctrl.Sync = g.sync
	watch(g, o.Engine.Stacks(), "stacks")
	watch(g, o.Engine.Services(), "services")
	watch(g, o.Engine.Containers(), "containers")
	watch(g, o.Engine.Hosts(), "hosts")
	watch(g, o.Engine.Leases(), "leases")
	watch(g, o.Engine.Networks(), "networks")
	watch(g, o.Engine.Certificates(), "certificates")
	return g
}

// Run runs the collector until ctx ends.
func (g *Collector) Run(ctx context.Context) error {
	var waits []func(context.Context) bool
	for _, s := range g.order {
		go s.run(ctx)
		waits = append(waits, s.wait)
	}
	return g.ctrl.Run(ctx, waits...)
}

// caughtUp says whether every cache has seen the store at least up to rev:
// then a dependent missing from the caches really does not exist.
func (g *Collector) caughtUp(rev int64) bool {
	for _, s := range g.order {
		if s.rev() < rev {
			return false
		}
	}
	return true
}

func (g *Collector) sync(ctx context.Context, key string) error {
	coll, id, _ := strings.Cut(key, "/")
	src := g.sources[coll]
	if src == nil {
		return nil
	}
	obj, ok := src.get(id)
	if !ok {
		return nil
	}
	m := obj.GetMeta()
	if m.Deleting() {
		if !slices.Contains(m.Finalizers, api.FinalizerDependents) {
			return nil // waiting on other controllers' finalizers
		}
		return g.collect(ctx, key, obj)
	}
	// An orphan: an owner is gone (and not just unseen yet).
	for _, owner := range ownerKeys(obj) {
		ocoll, oid, _ := strings.Cut(owner, "/")
		os := g.sources[ocoll]
		if os == nil {
			continue
		}
		if _, found := os.get(oid); found {
			continue
		}
		if !g.caughtUp(m.Revision) {
			return harness.Requeue{After: 100 * time.Millisecond}
		}
		g.log.Info("deleting orphan", "object", key, "owner", owner)
		if err := src.del(ctx, id); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("gc: deleting orphan %s: %w", key, err)
		}
		return nil
	}
	return nil
}

// collect deletes the dependents of a deleted object, then lets it go.
func (g *Collector) collect(ctx context.Context, key string, obj api.Object) error {
	m := obj.GetMeta()
	pending := 0
	for _, s := range g.order {
		for _, d := range s.byOwner(key) {
			pending++
			if d.GetMeta().Deleting() {
				continue
			}
			if err := s.del(ctx, d.GetMeta().ID); err != nil && !api.IsNotFound(err) {
				return fmt.Errorf("gc: deleting %s/%s, a dependent of %s: %w", s.coll, d.GetMeta().ID, key, err)
			}
		}
	}
	if pending > 0 {
		return nil // each dependent's removal enqueues us again
	}
	// The caches may not have seen every dependent yet (a quiet collection's
	// cache moves only with its own events or a ping). The marker written
	// with deletionTimestamp stops new dependents, so one look at the store
	// for the dependents named in spec settles it.
	left, err := g.liveDependents(ctx, key)
	if err != nil {
		return err
	}
	if left > 0 {
		return harness.Requeue{After: 100 * time.Millisecond}
	}
	rest := slices.DeleteFunc(slices.Clone(m.Finalizers), func(f string) bool { return f == api.FinalizerDependents })
	if rest == nil {
		rest = []string{}
	}
	coll, id, _ := strings.Cut(key, "/")
	err = g.sources[coll].patch(ctx, id, map[string]any{"revision": m.Revision, "finalizers": rest})
	if err != nil && !api.IsNotFound(err) && !api.IsConflict(err) {
		return fmt.Errorf("gc: releasing %s: %w", key, err)
	}
	if api.IsConflict(err) {
		return harness.Requeue{After: 50 * time.Millisecond}
	}
	g.log.Debug("collected", "object", key)
	return nil
}

// liveDependents deletes, straight from the store's lists, the dependents
// named in spec that the caches have not shown yet, and counts them.
func (g *Collector) liveDependents(ctx context.Context, key string) (int, error) {
	coll, id, _ := strings.Cut(key, "/")
	n := 0
	del := func(what string, ids []string, err error, d func(context.Context, string) error) error {
		if err != nil {
			return fmt.Errorf("gc: listing %s of %s: %w", what, key, err)
		}
		for _, cid := range ids {
			n++
			if cid == "" {
				continue
			}
			if err := d(ctx, cid); err != nil && !api.IsNotFound(err) {
				return fmt.Errorf("gc: deleting %s %s of %s: %w", what, cid, key, err)
			}
		}
		return nil
	}
	var opts client.ListOptions
	switch coll {
	case "stacks":
		opts.StackID = id
		ids, err := liveIDs(ctx, g.eng.Services(), opts)
		if err := del("services", ids, err, g.sources["services"].del); err != nil {
			return n, err
		}
	case "services":
		opts.ServiceID = id
	case "hosts":
		opts.HostID = id
		ids, err := liveIDs(ctx, g.eng.Leases(), opts)
		if err := del("leases", ids, err, g.sources["leases"].del); err != nil {
			return n, err
		}
	default:
		return 0, nil
	}
	ids, err := liveIDs(ctx, g.eng.Containers(), opts)
	return n, del("containers", ids, err, g.sources["containers"].del)
}

// liveIDs lists the ids of the objects o selects; those already being
// deleted come back as "" (they count, but need no second DELETE).
func liveIDs[T any, PT objPtr[T]](ctx context.Context, r *client.Resource[T], o client.ListOptions) ([]string, error) {
	items, _, err := r.List(ctx, o)
	var ids []string
	for i := range items {
		m := PT(&items[i]).GetMeta()
		if m.Deleting() {
			ids = append(ids, "")
		} else {
			ids = append(ids, m.ID)
		}
	}
	return ids, err
}
