// Package controllers runs the engine's controllers: the garbage collector,
// host lifecycle (leases to host states), stack (compose files to services),
// placement (services to containers on hosts) and upgrade (rolling
// upgrades), each on the shared harness. They talk to the engine API
// with a service-role key like any other component, and one leader among
// the servers sharing a store runs them, elected through an engine lease.
package controllers

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/gc"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/controllers/hostlifecycle"
	"github.com/drover/drover/controllers/placement"
	"github.com/drover/drover/controllers/stack"
	"github.com/drover/drover/controllers/upgrade"
)

// Options configure the controllers.
type Options struct {
	// Credentials is a credentials.json of a service-role key.
	Credentials string
	// Engine, if set, is used instead of Credentials (tests).
	Engine   *client.Client
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// Identity names this process in the leader lease (default host:pid).
	Identity string
	// LeaseDuration is how long a silent leader keeps leadership (default 15s).
	LeaseDuration time.Duration
	// NoScheduler leaves out the stack, placement and upgrade controllers
	// (tests of the other controllers keep their objects to themselves).
	NoScheduler   bool
	HostLifecycle hostlifecycle.Options
}

// Run campaigns for leadership and runs every controller while leading,
// until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Identity == "" {
		h, _ := os.Hostname()
		o.Identity = h + "-" + strconv.Itoa(os.Getpid())
	}
	m := harness.NewMetrics(o.Registry)
	engine := func(name string) (*client.Client, error) {
		var c *client.Client
		if o.Engine != nil {
			c = o.Engine.Clone()
		} else {
			var err error
			if c, err = client.FromCredentialsFile(o.Credentials); err != nil {
				return nil, err
			}
		}
		// Each controller's writes are counted under its own name.
		c.WrapTransport(func(rt http.RoundTripper) http.RoundTripper { return m.CountingTransport(name, rt) })
		return c, nil
	}
	elect, err := engine("election")
	if err != nil {
		return err
	}
	el := &harness.Election{Engine: elect, Name: "controllers", Identity: o.Identity, Duration: o.LeaseDuration, Log: o.Logger}
	// Every client is made before campaigning: a bad credentials file is
	// an error now, not once leading.
	runners := map[string]func(*client.Client) func(context.Context) error{
		gc.Name: func(e *client.Client) func(context.Context) error {
			return gc.New(gc.Options{Engine: e, Logger: o.Logger, Metrics: m}).Run
		},
		hostlifecycle.Name: func(e *client.Client) func(context.Context) error {
			hl := o.HostLifecycle
			hl.Engine, hl.Logger, hl.Metrics = e, o.Logger, m
			return hostlifecycle.New(hl).Run
		},
	}
	if !o.NoScheduler {
		runners[stack.Name] = func(e *client.Client) func(context.Context) error {
			return stack.New(stack.Options{Engine: e, Logger: o.Logger, Metrics: m}).Run
		}
		runners[placement.Name] = func(e *client.Client) func(context.Context) error {
			return placement.New(placement.Options{Engine: e, Logger: o.Logger, Metrics: m}).Run
		}
		runners[upgrade.Name] = func(e *client.Client) func(context.Context) error {
			return upgrade.New(upgrade.Options{Engine: e, Logger: o.Logger, Metrics: m}).Run
		}
	}
	engines := map[string]*client.Client{}
	for name := range runners {
		if engines[name], err = engine(name); err != nil {
			return err
		}
	}
	el.Run(ctx, func(ctx context.Context) {
		g, gctx := errgroup.WithContext(ctx)
		for name, mk := range runners {
			run := mk(engines[name]) // fresh caches on every term of leadership
			g.Go(func() error { return run(gctx) })
		}
		if err := g.Wait(); err != nil && ctx.Err() == nil {
			o.Logger.Error("controllers stopped", "err", err)
		}
	})
	return nil
}
