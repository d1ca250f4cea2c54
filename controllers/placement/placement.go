// Package placement is the placement controller: it keeps every container
// service (and load balancer) at its scale, or one unit per eligible host
// for a global service, by creating and deleting deployment units (a
// primary and its sidekicks, on one host) as scheduler.PlanService decides.
//
// It runs one placement at a time, and it remembers the containers it has
// created or deleted until its cache shows them (assumed placements), so a
// decision never counts on a stale view: two units are never put where one
// should go, and a hard anti-affinity rule holds even while the cache is
// behind. It owns status.state, health, message and observedGeneration of
// the services it places, and nothing of other kinds.
package placement

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/scheduler"
)

// Name is the controller's name in logs and metrics.
const Name = "placement"

// assumeFor bounds how long a write is assumed without the cache showing it.
const assumeFor = 30 * time.Second

// Options configure the controller.
type Options struct {
	Engine  *client.Client
	Logger  *slog.Logger
	Metrics *harness.Metrics
}

// Controller is the placement controller.
type Controller struct {
	eng      *client.Client
	log      *slog.Logger
	ctrl     *harness.Controller
	stacks   *client.Cache[api.Stack, *api.Stack]
	services *client.Cache[api.Service, *api.Service]
	ctrs     *client.Cache[api.Container, *api.Container]
	hosts    *client.Cache[api.Host, *api.Host]

	mu      sync.Mutex
	assumed map[string]assumed   // created, not in the cache yet
	gone    map[string]time.Time // deleted, still in the cache
}

type assumed struct {
	c  *api.Container
	at time.Time
}

const (
	idxService = "service"
	idxHost    = "host"
)

// Placed reports whether a service kind is placed by this controller.
func Placed(kind string) bool {
	return kind == api.ServiceContainer || kind == api.ServiceLoadBalancer
}

// New builds the controller; Run starts it.
func New(o Options) *Controller {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c := &Controller{eng: o.Engine, log: o.Logger.With("controller", Name), assumed: map[string]assumed{}, gone: map[string]time.Time{}}
	// One worker: each placement sees every earlier one.
	c.ctrl = &harness.Controller{Name: Name, Workers: 1, Log: o.Logger, Metrics: o.Metrics, Sync: c.sync}
	enqSvc := func(s *api.Service) {
		if Placed(s.Spec.Kind) {
			c.ctrl.Enqueue(s.ID)
		}
	}
	c.services = client.NewCache(o.Engine.Services(), client.ListOptions{}, client.Handlers[api.Service]{
		OnAdd: enqSvc, OnUpdate: func(_, s *api.Service) { enqSvc(s) },
	}, c.log)
	c.ctrs = client.NewCache(o.Engine.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: func(ct *api.Container) {
			c.mu.Lock()
			delete(c.assumed, ct.ID)
			c.mu.Unlock()
			c.enqCtr(ct)
		},
		OnUpdate: func(_, ct *api.Container) { c.enqCtr(ct) },
		OnDelete: func(ct *api.Container) {
			c.mu.Lock()
			delete(c.gone, ct.ID)
			c.mu.Unlock()
			c.enqCtr(ct)
		},
	}, c.log)
	c.ctrs.AddIndex(idxService, func(ct *api.Container) []string { return []string{ct.Spec.ServiceID} })
	c.ctrs.AddIndex(idxHost, func(ct *api.Container) []string { return []string{ct.Spec.HostID} })
	// A host change can change any placement (global services, affinity).
	enqAll := func(*api.Host) {
		for _, s := range c.services.List() {
			enqSvc(s)
		}
	}
	c.hosts = client.NewCache(o.Engine.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd: enqAll, OnUpdate: func(o, n *api.Host) {
			if o.Status.State != n.Status.State || o.Spec.Unschedulable != n.Spec.Unschedulable || !api.SameJSON(o.Labels, n.Labels) || hostlifecycle.Lost(o) != hostlifecycle.Lost(n) {
				enqAll(n)
			}
		}, OnDelete: enqAll,
	}, c.log)
	c.stacks = client.NewCache(o.Engine.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{}, c.log)
	return c
}

func (c *Controller) enqCtr(ct *api.Container) {
	if ct.Spec.ServiceID != "" {
		c.ctrl.Enqueue(ct.Spec.ServiceID)
	}
}

// Run runs the controller until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for _, r := range []func(context.Context){c.stacks.Run, c.services.Run, c.ctrs.Run, c.hosts.Run} {
		go r(ctx)
	}
	return c.ctrl.Run(ctx, c.stacks.WaitForSync, c.services.WaitForSync, c.ctrs.WaitForSync, c.hosts.WaitForSync)
}

// view merges the cache with what this controller wrote and the cache has
// not shown yet.
func (c *Controller) view(cached []*api.Container, keep func(*api.Container) bool) []*api.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	out := make([]*api.Container, 0, len(cached))
	for _, ct := range cached {
		if at, ok := c.gone[ct.ID]; ok && now.Sub(at) < assumeFor {
			continue
		}
		out = append(out, ct)
	}
	for id, a := range c.assumed {
		if now.Sub(a.at) > assumeFor {
			delete(c.assumed, id) // the cache will never show it: it went meanwhile
			continue
		}
		if keep(a.c) {
			out = append(out, a.c)
		}
	}
	return out
}

func (c *Controller) containersOf(svcID string) []*api.Container {
	return c.view(c.ctrs.ByIndex(idxService, svcID), func(ct *api.Container) bool { return ct.Spec.ServiceID == svcID })
}

func (c *Controller) state() *scheduler.State {
	st := &scheduler.State{On: func(hostID string) []*api.Container {
		return c.view(c.ctrs.ByIndex(idxHost, hostID), func(ct *api.Container) bool { return ct.Spec.HostID == hostID })
	}}
	for _, h := range c.hosts.List() {
		st.Hosts = append(st.Hosts, &scheduler.Host{ID: h.ID, Name: h.Name, Labels: h.Labels,
			Eligible: h.Status.State == api.HostActive && !h.Spec.Unschedulable && !h.Deleting(), Lost: hostlifecycle.Lost(h)})
	}
	return st
}

func newUnitID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func (c *Controller) sync(ctx context.Context, id string) error {
	svc, ok := c.services.Get(id)
	if !ok || svc.Deleting() || !Placed(svc.Spec.Kind) {
		return nil // going (the garbage collector removes its containers), or not placed here
	}
	ctrs := c.containersOf(id)
	plan, err := scheduler.PlanService(svc, ctrs, c.state(), newUnitID)
	if err != nil {
		return c.setStatus(ctx, svc, "error", err.Error(), ctrs)
	}
	for _, ct := range plan.Delete {
		if _, err := c.eng.Containers().Delete(ctx, ct.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("placement: deleting %s: %w", ct.Name, err)
		}
		c.mu.Lock()
		c.gone[ct.ID] = time.Now()
		c.mu.Unlock()
	}
	stk, _ := c.stacks.Get(svc.Spec.StackID)
	for _, cr := range plan.Create {
		if err := c.createUnit(ctx, svc, stk, cr); err != nil {
			return err
		}
	}
	state, msg := "active", plan.Pending
	switch {
	case plan.Pending != "":
		state = "pending"
	case len(plan.Create) > 0 || len(plan.Delete) > 0:
		state = "activating"
	}
	return c.setStatus(ctx, svc, state, msg, c.containersOf(id))
}

// createUnit creates a deployment unit: the primary and its sidekicks, on
// one host.
func (c *Controller) createUnit(ctx context.Context, svc *api.Service, stk *api.Stack, cr scheduler.Create) error {
	stackName := ""
	if stk != nil {
		stackName = stk.Name
	}
	configs := []api.LaunchConfig{*svc.Spec.LaunchConfig}
	configs = append(configs, svc.Spec.Sidekicks...)
	for i, lc := range configs {
		sidekick := ""
		if i > 0 {
			sidekick = lc.Name
		}
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
			Meta: api.Meta{Name: scheduler.ContainerName(stackName, svc.Name, sidekick, cr.Index), Labels: labels},
			Spec: api.ContainerSpec{ServiceID: svc.ID, HostID: cr.HostID, ServiceIndex: cr.Index, LaunchConfigName: sidekick, DeploymentUnit: cr.Unit, LaunchConfig: &lc},
		}
		created, err := c.eng.Containers().Create(ctx, ct)
		if err != nil {
			return fmt.Errorf("placement: creating %s: %w", ct.Name, err)
		}
		c.mu.Lock()
		if _, seen := c.ctrs.Get(created.ID); !seen {
			c.assumed[created.ID] = assumed{c: created, at: time.Now()}
		}
		c.mu.Unlock()
	}
	return nil
}

// publicEndpoints are where the service's running containers are published
// on their hosts: the host's address and each published port (for a load
// balancer, every rule's source port too, which the agent publishes).
func (c *Controller) publicEndpoints(svc *api.Service, ctrs []*api.Container) []api.PublicEndpoint {
	var ports []int
	seen := map[int]bool{}
	add := func(p int) {
		if p > 0 && !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	if lc := svc.Spec.LaunchConfig; lc != nil {
		for _, spec := range lc.Ports {
			add(publishedPort(spec))
		}
	}
	if lb := svc.Spec.LBConfig; lb != nil && svc.Spec.Kind == api.ServiceLoadBalancer {
		for _, r := range lb.PortRules {
			add(r.SourcePort)
		}
	}
	if len(ports) == 0 {
		return nil
	}
	sort.Ints(ports)
	var out []api.PublicEndpoint
	for _, ct := range ctrs {
		if ct.Status.State != api.ContainerRunning || ct.Spec.HostID == "" {
			continue
		}
		h, ok := c.hosts.Get(ct.Spec.HostID)
		if !ok || h.Status.AgentIP == "" {
			continue
		}
		for _, p := range ports {
			out = append(out, api.PublicEndpoint{HostID: h.ID, IP: h.Status.AgentIP, Port: p})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].HostID != out[j].HostID {
			return out[i].HostID < out[j].HostID
		}
		return out[i].Port < out[j].Port
	})
	return out
}

// publishedPort is the host side of a port spec ("8080:80/tcp",
// "10.0.0.1:8080:80"), or 0 when nothing is published.
func publishedPort(spec string) int {
	spec, _, _ = strings.Cut(spec, "/")
	parts := strings.Split(spec, ":")
	if len(parts) < 2 {
		return 0
	}
	p, err := strconv.Atoi(parts[len(parts)-2])
	if err != nil {
		return 0
	}
	return p
}

// setStatus writes the service's state and health rolled up from its
// containers, if they changed.
func (c *Controller) setStatus(ctx context.Context, svc *api.Service, state, msg string, ctrs []*api.Container) error {
	health := "healthy"
	for _, ct := range ctrs {
		switch {
		case ct.Status.Health == "unhealthy":
			health = "unhealthy"
		case !scheduler.Ready(svc, ct) && health == "healthy":
			health = "initializing"
		}
	}
	eps := c.publicEndpoints(svc, ctrs)
	if svc.Status.State == state && svc.Status.Health == health && svc.Status.Message == msg && svc.Status.ObservedGeneration == svc.Generation &&
		api.SameJSON(svc.Status.PublicEndpoints, eps) {
		return nil
	}
	_, err := c.eng.Services().PatchStatus(ctx, svc.ID, map[string]any{"status": map[string]any{"state": state, "health": health, "message": msg,
		"observedGeneration": svc.Generation, "publicEndpoints": eps}})
	if api.IsNotFound(err) {
		return nil
	}
	return err
}
