package store

import "github.com/drover/drover/api"

// ref is a hard reference from one object to another: the parent must exist
// (and not be being deleted) when the child is written, and deleting the
// parent makes the garbage collector delete the child.
type ref struct {
	field  string
	parent string // collection
	get    func(api.Object) string
	// settableOnce: may go from "" to a value later (a container's host is
	// chosen by the scheduler after it is created); never changes after.
	settableOnce bool
	// indexed says whether the child gets an index entry under its parent.
	// Each is one more etcd key per write, so only what the server itself
	// must find by parent is indexed (a host's agent keys); everything
	// else is found by the garbage collector from its caches and by list
	// filters.
	indexed func(api.Object) bool
}

func always(api.Object) bool { return true }

var refs = map[string][]ref{
	"services": {
		{field: "spec.stackId", parent: "stacks", get: func(o api.Object) string { return o.(*api.Service).Spec.StackID }},
	},
	"containers": {
		// A container of a service always has that service's stack (see
		// denormalize).
		{field: "spec.stackId", parent: "stacks", get: func(o api.Object) string { return o.(*api.Container).Spec.StackID }},
		{field: "spec.serviceId", parent: "services", get: func(o api.Object) string { return o.(*api.Container).Spec.ServiceID }},
		{field: "spec.hostId", parent: "hosts", get: func(o api.Object) string { return o.(*api.Container).Spec.HostID }, settableOnce: true},
	},
	"apikeys": {
		{field: "spec.hostId", parent: "hosts", get: func(o api.Object) string { return o.(*api.APIKey).Spec.HostID }, indexed: always},
	},
	"leases": {
		{field: "spec.hostId", parent: "hosts", get: func(o api.Object) string { return o.(*api.Lease).Spec.HostID }},
	},
}

// childRef is a reference into a parent collection, seen from the parent.
type childRef struct {
	child string // collection
	ref   ref
}

// childRefs lists the references pointing at a parent collection.
func childRefs(parent string) []childRef {
	var out []childRef
	for _, k := range api.Kinds {
		for _, r := range refs[k.Collection] {
			if r.parent == parent {
				out = append(out, childRef{k.Collection, r})
			}
		}
	}
	return out
}

// nameScope says within what a name must be unique; ok is false where names
// need not be unique (containers: Docker names carry the id).
func nameScope(coll string, obj api.Object) (scope string, ok bool) {
	switch coll {
	case "services":
		return obj.(*api.Service).Spec.StackID, true
	case "containers", "apikeys", "registrationtokens":
		return "", false
	}
	return "-", true
}
