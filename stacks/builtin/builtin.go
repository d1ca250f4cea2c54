// Package builtin holds the stacks shipped inside the drover binary and
// versioned with it: infra (net, dns, metadata on every host) and
// kubernetes (Kubernetes as engine services). drover up deploys them.
package builtin

import (
	_ "embed"
	"fmt"
	"sort"
)

//go:embed infra.yml
var infra []byte

//go:embed kubernetes.yml
var kubernetes []byte

// Stack is one built-in stack's compose file.
type Stack struct {
	Name    string
	Compose []byte
}

// Stacks are the built-in stacks in the order drover up deploys them.
var Stacks = []Stack{{Name: "infra", Compose: infra}, {Name: "kubernetes", Compose: kubernetes}}

// Get returns a built-in stack by name.
func Get(name string) (Stack, error) {
	for _, s := range Stacks {
		if s.Name == name {
			return s, nil
		}
	}
	names := make([]string, 0, len(Stacks))
	for _, s := range Stacks {
		names = append(names, s.Name)
	}
	sort.Strings(names)
	return Stack{}, fmt.Errorf("no built-in stack %q (there are: %v)", name, names)
}
