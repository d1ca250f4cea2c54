package metadata

import (
	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// store is the read side of client.Cache. The caches hold the one copy of
// every engine object; the metadata state holds only what it serves: each
// object rendered once, as JSON bytes, in Rancher's shape.
type store[T any] interface {
	Get(id string) (*T, bool)
	ByIndex(index, value string) []*T
}

var (
	_ store[api.Stack]     = (*client.Cache[api.Stack, *api.Stack])(nil)
	_ store[api.Service]   = (*client.Cache[api.Service, *api.Service])(nil)
	_ store[api.Container] = (*client.Cache[api.Container, *api.Container])(nil)
	_ store[api.Host]      = (*client.Cache[api.Host, *api.Host])(nil)
	_ store[api.Network]   = (*client.Cache[api.Network, *api.Network])(nil)
)

// Indexes the state reads membership through.
const (
	byStack   = "stack"   // services and containers by stack id
	byService = "service" // containers by service id
	byHost    = "host"    // containers by host id
)

var serviceIndexes = map[string]func(*api.Service) []string{
	byStack: func(v *api.Service) []string { return []string{v.Spec.StackID} },
}

var containerIndexes = map[string]func(*api.Container) []string{
	byStack: func(c *api.Container) []string { return []string{c.Spec.StackID} },
	byService: func(c *api.Container) []string {
		if c.Spec.ServiceID == "" {
			return nil
		}
		return []string{c.Spec.ServiceID}
	},
	byHost: func(c *api.Container) []string {
		if c.Spec.HostID == "" {
			return nil
		}
		return []string{c.Spec.HostID}
	},
}
