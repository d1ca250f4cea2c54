package scheduler

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/util/workqueue"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/stacks"
)

// Options configure the controller.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Workers int
}

// Controller keeps every service's containers placed.
type Controller struct {
	opts     Options
	log      *slog.Logger
	eng      *client.Client
	stacks   *client.Cache[api.Stack, *api.Stack]
	services *client.Cache[api.Service, *api.Service]
	ctrs     *client.Cache[api.Container, *api.Container]
	hosts    *client.Cache[api.Host, *api.Host]
	queue    workqueue.TypedRateLimitingInterface[string]

	mu        sync.Mutex
	lastBatch map[string]time.Time // upgrade pacing; rebuilt harmlessly after a restart
	wrote     map[string]int64     // service id -> revision of our last container write
}

const (
	idxService = "service"
	idxHost    = "host"
)

// New builds a controller; Run starts it.
func New(opts Options) *Controller {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Workers == 0 {
		opts.Workers = 4
	}
	c := &Controller{opts: opts, log: opts.Logger.With("component", "scheduler"), eng: opts.Engine, lastBatch: map[string]time.Time{}, wrote: map[string]int64{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "scheduler"})}
	enqSvc := func(s *api.Service) {
		c.queue.Add(s.ID)
		c.queue.Add("stack:" + s.Spec.StackID)
	}
	c.services = client.NewCache(c.eng.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: enqSvc, OnUpdate: func(_, s *api.Service) { enqSvc(s) }, OnDelete: func(s *api.Service) { c.queue.Add("stack:" + s.Spec.StackID) },
	}, c.log)
	enqCtr := func(ct *api.Container) {
		if ct.Spec.ServiceID != "" {
			c.queue.Add(ct.Spec.ServiceID)
		}
	}
	c.ctrs = client.NewCache(c.eng.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: enqCtr, OnUpdate: func(_, ct *api.Container) { enqCtr(ct) }, OnDelete: enqCtr,
	}, c.log)
	c.ctrs.AddIndex(idxService, func(ct *api.Container) []string { return []string{ct.Spec.ServiceID} })
	c.ctrs.AddIndex(idxHost, func(ct *api.Container) []string { return []string{ct.Spec.HostID} })
	// Any host change can change any placement (global services, affinity).
	enqAll := func(*api.Host) {
		for _, s := range c.services.List() {
			c.queue.Add(s.ID)
		}
	}
	c.hosts = client.NewCache(c.eng.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd: enqAll, OnUpdate: func(o, n *api.Host) {
			if o.Status.State != n.Status.State || o.Spec.Unschedulable != n.Spec.Unschedulable || !sameJSON(o.Labels, n.Labels) || hostlifecycle.Lost(o) != hostlifecycle.Lost(n) {
				enqAll(n)
			}
		}, OnDelete: enqAll,
	}, c.log)
	enqStack := func(st *api.Stack) { c.queue.Add("stack:" + st.ID) }
	c.stacks = client.NewCache(c.eng.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: enqStack, OnUpdate: func(o, n *api.Stack) {
			if !sameJSON(o.Spec, n.Spec) {
				enqStack(n)
			}
		},
	}, c.log)
	return c
}

func sameJSON(a, b any) bool { return api.SameJSON(a, b) }

// Run starts the caches and workers and blocks until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for _, r := range []interface{ Run(context.Context) }{c.stacks, c.services, c.ctrs, c.hosts} {
		go r.Run(ctx)
	}
	for _, w := range []func(context.Context) bool{c.stacks.WaitForSync, c.services.WaitForSync, c.ctrs.WaitForSync, c.hosts.WaitForSync} {
		if !w(ctx) {
			return ctx.Err()
		}
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	var wg sync.WaitGroup
	for i := 0; i < c.opts.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.next(ctx) {
			}
		}()
	}
	c.log.Info("scheduler running")
	<-ctx.Done()
	wg.Wait()
	return nil
}

func (c *Controller) next(ctx context.Context) bool {
	id, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(id)
	requeue, err := c.sync(ctx, id)
	switch {
	case err != nil:
		if ctx.Err() == nil {
			c.log.Debug("scheduling failed; retrying", "service", id, "err", err)
			c.queue.AddRateLimited(id)
		}
	case requeue > 0:
		c.queue.Forget(id)
		c.queue.AddAfter(id, requeue)
	default:
		c.queue.Forget(id)
	}
	return true
}

func (c *Controller) state() *State {
	st := &State{HostContainers: map[string][]*api.Container{}}
	for _, h := range c.hosts.List() {
		lost := hostlifecycle.Lost(h)
		st.Hosts = append(st.Hosts, &Host{ID: h.ID, Name: h.Name, Labels: h.Labels, Eligible: h.Status.State == api.HostActive && !h.Spec.Unschedulable, Lost: lost})
		st.HostContainers[h.ID] = c.ctrs.ByIndex(idxHost, h.ID)
	}
	return st
}

func newUnitID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sync places one service's containers, rolls its upgrade one batch, and
// writes its status. It returns when to look again if waiting on time.
func (c *Controller) sync(ctx context.Context, id string) (time.Duration, error) {
	if stackID, ok := strings.CutPrefix(id, "stack:"); ok {
		st, found := c.stacks.Get(stackID)
		if !found {
			return 0, nil
		}
		return 0, c.syncStack(ctx, st)
	}
	svc, ok := c.services.Get(id)
	if !ok || svc.Deleting() {
		return 0, nil // going: the garbage collector removes its containers
	}
	if svc.Spec.Kind != api.ServiceContainer && svc.Spec.Kind != api.ServiceLoadBalancer {
		// Not placed here: its status belongs to whoever runs it
		// (kubernetes-agent for Kubernetes services, nobody for records).
		return 0, nil
	}
	// Planning from a cache that has not seen our own last writes would
	// place the same units twice.
	c.mu.Lock()
	behind := c.wrote[id] > c.ctrs.Revision()
	c.mu.Unlock()
	if behind {
		return 100 * time.Millisecond, nil
	}
	ctrs := c.ctrs.ByIndex(idxService, id)
	stack, _ := c.stacks.Get(svc.Spec.StackID)
	requeue, upgrading, err := c.upgrade(ctx, svc, ctrs)
	if err != nil {
		return 0, err
	}
	plan, err := PlanService(svc, ctrs, c.state(), newUnitID)
	if err != nil {
		return 0, c.setStatus(ctx, svc, "error", err.Error(), ctrs)
	}
	if upgrading && svc.Spec.Upgrade != nil && svc.Spec.Upgrade.StartFirst {
		// Start-first: the replacement starts before the old unit goes, so
		// the planner must not trim the extra unit yet.
		plan.Delete = nil
	}
	for _, ct := range plan.Delete {
		if _, err := c.eng.Containers().Delete(ctx, ct.ID); err != nil && !api.IsNotFound(err) {
			return 0, err
		}
	}
	for _, cr := range plan.Create {
		if err := c.createUnit(ctx, svc, stack, cr); err != nil {
			return 0, err
		}
	}
	state, msg := "active", plan.Pending
	switch {
	case plan.Pending != "":
		state = "pending"
	case upgrading:
		state, msg = "upgrading", "replacing containers in batches"
	case len(plan.Create) > 0 || len(plan.Delete) > 0:
		state = "activating"
	}
	return requeue, c.setStatus(ctx, svc, state, msg, c.ctrs.ByIndex(idxService, id))
}

// createUnit creates a deployment unit: the primary and its sidekicks, on
// one host.
func (c *Controller) createUnit(ctx context.Context, svc *api.Service, stack *api.Stack, cr Create) error {
	stackName := ""
	if stack != nil {
		stackName = stack.Name
	}
	configs := []api.LaunchConfig{*svc.Spec.LaunchConfig}
	configs = append(configs, svc.Spec.Sidekicks...)
	for i, lc := range configs {
		sidekick := ""
		if i > 0 {
			sidekick = lc.Name
		}
		lc := lc
		lc.Name = ""
		labels := map[string]string{
			"io.drover.stack.name":            stackName,
			"io.drover.service.name":          svc.Name,
			"io.drover.stack_service.name":    stackName + "/" + svc.Name,
			"io.rancher.stack.name":           stackName,
			"io.rancher.stack_service.name":   stackName + "/" + svc.Name,
			"io.drover.service.launch.config": "io.drover.service.primary.launch.config",
		}
		if sidekick != "" {
			labels["io.drover.service.launch.config"] = sidekick
		}
		for k, v := range lc.Labels {
			labels[k] = v
		}
		ct := &api.Container{
			Meta: api.Meta{Name: ContainerName(stackName, svc.Name, sidekick, cr.Index), Labels: labels},
			Spec: api.ContainerSpec{ServiceID: svc.ID, HostID: cr.HostID, ServiceIndex: cr.Index, LaunchConfigName: sidekick, DeploymentUnit: cr.Unit, LaunchConfig: &lc},
		}
		created, err := c.eng.Containers().Create(ctx, ct)
		if err != nil {
			return fmt.Errorf("creating %s: %w", ct.Name, err)
		}
		c.noteWrite(svc.ID, created.Revision)
	}
	return nil
}

// HasHealthCheck says whether a container is health-checked (its own
// launch config's check, or its service's for a primary).
func HasHealthCheck(svc *api.Service, ct *api.Container) bool {
	if ct.Spec.LaunchConfig != nil && ct.Spec.LaunchConfig.HealthCheck != nil {
		return true
	}
	return ct.Spec.LaunchConfigName == "" && svc != nil && svc.Spec.HealthCheck != nil
}

// Ready says whether a container does its job: running (or, if it starts
// once, finished), and healthy where it has a health check.
func Ready(svc *api.Service, ct *api.Container) bool {
	if ct.Spec.LaunchConfig != nil && ct.Spec.LaunchConfig.StartOnce && ct.Status.State == api.ContainerStopped && ct.Status.ExitCode == 0 {
		return true
	}
	if ct.Status.State != api.ContainerRunning {
		return false
	}
	return !HasHealthCheck(svc, ct) || ct.Status.Health == "healthy"
}

// Outdated reports whether a container runs a launch config its service no
// longer has (it will be replaced by the rolling upgrade).
func Outdated(svc *api.Service, ct *api.Container) bool { return outdated(svc, ct) }

func outdated(svc *api.Service, ct *api.Container) bool {
	want := svc.Spec.LaunchConfig
	if ct.Spec.LaunchConfigName != "" {
		want = nil
		for i := range svc.Spec.Sidekicks {
			if svc.Spec.Sidekicks[i].Name == ct.Spec.LaunchConfigName {
				s := svc.Spec.Sidekicks[i]
				s.Name = ""
				want = &s
			}
		}
		if want == nil {
			return true // the sidekick was removed
		}
	}
	if want == nil || ct.Spec.LaunchConfig == nil {
		return true
	}
	// A container's launch config is its service's, verbatim (the
	// scheduler's own labels go on the container object, not in it).
	return !sameJSON(ct.Spec.LaunchConfig, want)
}

func stacksAffinity(svc *api.Service) ([]stacks.Rule, error) {
	return stacks.Affinity(svc.Spec.LaunchConfig.Labels)
}

// upgrade replaces outdated units one batch at a time: stop-first removes a
// batch and lets the planner create replacements; start-first lets the
// planner create replacements first (the service counts one batch over its
// scale) and removes the old batch once the new containers run. Each batch
// waits for the previous one to be running and for the interval.
func (c *Controller) upgrade(ctx context.Context, svc *api.Service, ctrs []*api.Container) (time.Duration, bool, error) {
	units := unitsOf(ctrs)
	var old, fresh []*Unit
	for _, u := range units {
		// A unit is replaced if any part runs an old config, or a part is
		// missing (a create cut short, a primary deleted by hand).
		isOld := false
		has := map[string]bool{}
		for _, ct := range u.Containers {
			isOld = isOld || outdated(svc, ct)
			has[ct.Spec.LaunchConfigName] = true
		}
		if !has[""] {
			isOld = true
		}
		for _, sk := range svc.Spec.Sidekicks {
			isOld = isOld || !has[sk.Name]
		}
		if isOld {
			old = append(old, u)
		} else {
			fresh = append(fresh, u)
		}
	}
	if len(old) == 0 {
		return 0, false, nil
	}
	cfg := api.UpgradeConfig{BatchSize: 1, IntervalMs: 2000}
	if u := svc.Spec.Upgrade; u != nil {
		if u.BatchSize > 0 {
			cfg.BatchSize = u.BatchSize
		}
		if u.IntervalMs > 0 {
			cfg.IntervalMs = u.IntervalMs
		}
		cfg.StartFirst = u.StartFirst
	}
	// Each batch waits for the previous one to be running and, where the
	// service has a health check, healthy: a version that runs but fails
	// its check is not rolled any further.
	for _, u := range fresh {
		for _, ct := range u.Containers {
			if !Ready(svc, ct) {
				return time.Second, true, nil
			}
		}
	}
	c.mu.Lock()
	wait := time.Duration(cfg.IntervalMs)*time.Millisecond - time.Since(c.lastBatch[svc.ID])
	c.mu.Unlock()
	if wait > 0 {
		return wait, true, nil
	}
	want := 1
	if svc.Spec.Scale != nil {
		want = *svc.Spec.Scale
	}
	if svc.Spec.Global {
		want = len(units)
	}
	sort.Slice(old, func(i, j int) bool { return old[i].Index < old[j].Index })
	batch := old
	if len(batch) > cfg.BatchSize {
		batch = batch[:cfg.BatchSize]
	}
	if cfg.StartFirst && !svc.Spec.Global && len(fresh)+len(old) < want+len(batch) {
		// Start the batch's replacements beside the old units; the old batch
		// goes once they run (the next pass, below).
		st := c.state()
		placed := map[string]int{}
		for _, u := range units {
			placed[u.HostID]++
		}
		rules, _ := stacksAffinity(svc)
		stack, _ := c.stacks.Get(svc.Spec.StackID)
		for range batch {
			h := choose(st, rules, svc, placed)
			if h == nil {
				return 0, true, errors.New("no host for a start-first replacement")
			}
			placed[h.ID]++
			idx := nextFree(units)
			if err := c.createUnit(ctx, svc, stack, Create{ServiceID: svc.ID, Unit: newUnitID(), Index: idx, HostID: h.ID}); err != nil {
				return 0, true, err
			}
			units = append(units, &Unit{Index: idx, HostID: h.ID})
		}
		c.markBatch(svc.ID)
		return time.Second, true, nil
	}
	// Stop-first never goes below scale by more than one batch: until the
	// last batch's replacements exist (and passed the gate above), wait.
	if !svc.Spec.Global && len(fresh)+len(old) < want {
		return time.Second, true, nil
	}
	for _, u := range batch {
		for _, ct := range u.Containers {
			if _, err := c.eng.Containers().Delete(ctx, ct.ID); err != nil && !api.IsNotFound(err) {
				return 0, true, err
			}
		}
	}
	c.markBatch(svc.ID)
	c.log.Info("upgrade batch", "service", svc.Name, "replaced", len(batch), "remaining", len(old)-len(batch), "startFirst", cfg.StartFirst)
	return time.Second, true, nil
}

func (c *Controller) noteWrite(svcID string, rev int64) {
	c.mu.Lock()
	if rev > c.wrote[svcID] {
		c.wrote[svcID] = rev
	}
	c.mu.Unlock()
}

func (c *Controller) markBatch(id string) {
	c.mu.Lock()
	c.lastBatch[id] = time.Now()
	c.mu.Unlock()
}

func nextFree(units []*Unit) int {
	used := map[int]bool{}
	for _, u := range units {
		used[u.Index] = true
	}
	for i := 1; ; i++ {
		if !used[i] {
			return i
		}
	}
}

// setStatus writes the service's state and health rolled up from its
// containers, if they changed.
func (c *Controller) setStatus(ctx context.Context, svc *api.Service, state, msg string, ctrs []*api.Container) error {
	health := "healthy"
	for _, ct := range ctrs {
		switch {
		case ct.Status.Health == "unhealthy":
			health = "unhealthy"
		case !Ready(svc, ct) && health == "healthy":
			health = "initializing"
		}
	}
	if svc.Status.State == state && svc.Status.Health == health && svc.Status.Message == msg && svc.Status.ObservedGeneration == svc.Generation {
		return nil
	}
	_, err := c.eng.Services().PatchStatus(ctx, svc.ID, map[string]any{"status": map[string]any{"state": state, "health": health, "message": msg, "observedGeneration": svc.Generation}})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}
