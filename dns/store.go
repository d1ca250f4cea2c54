package dns

import (
	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// store is the read side of client.Cache that records are derived from.
// The caches hold the one copy of every engine object; the server keeps
// only what it serves (records) and an address index.
type store[T any] interface {
	Get(id string) (*T, bool)
	ByIndex(index, value string) []*T
}

var (
	_ store[api.Stack]     = (*client.Cache[api.Stack, *api.Stack])(nil)
	_ store[api.Service]   = (*client.Cache[api.Service, *api.Service])(nil)
	_ store[api.Container] = (*client.Cache[api.Container, *api.Container])(nil)
)

// Indexes the record computation reads through.
const (
	byStack   = "stack"   // services by stack id
	byAlias   = "alias"   // alias services by stack id
	byService = "service" // containers by service id
	byIP      = "ip"      // containers by primary IP (reverse names)
)

var serviceIndexes = map[string]func(*api.Service) []string{
	byStack: func(v *api.Service) []string { return []string{v.Spec.StackID} },
	byAlias: func(v *api.Service) []string {
		if v.Spec.Kind == api.ServiceAlias {
			return []string{v.Spec.StackID}
		}
		return nil
	},
}

var containerIndexes = map[string]func(*api.Container) []string{
	byService: func(c *api.Container) []string {
		if c.Spec.ServiceID == "" {
			return nil
		}
		return []string{c.Spec.ServiceID}
	},
	byIP: func(c *api.Container) []string {
		if c.Status.PrimaryIP == "" {
			return nil
		}
		return []string{c.Status.PrimaryIP}
	},
}
