package apiserver

import (
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/drover/drover/api"
	"github.com/drover/drover/auth"
)

// Who owns what in an object:
//   - spec, name, labels, annotations, ownerReferences and finalizers belong
//     to whoever writes /v1/<c>/<id> (users, stack files, the controllers that
//     create objects);
//   - status belongs to the controllers, written through /v1/<c>/<id>/status,
//     each controller its own fields and conditions;
//   - type, id, revision, generation, createdAt, updatedAt and
//     deletionTimestamp belong to the server.
//
// A write through one path never changes what the other path owns, so a spec
// writer and a status writer can never undo each other.

// serverOwnedStatus lists the kinds whose status only the server writes.
var serverOwnedStatus = map[string]bool{"apikeys": true, "registrationtokens": true, "certificates": true}

func part(obj api.Object, name string) reflect.Value {
	return reflect.ValueOf(obj).Elem().FieldByName(name)
}

// keepStatus gives next the status of cur: a write to the main path.
func keepStatus(cur, next api.Object) {
	part(next, "Status").Set(part(cur, "Status"))
}

// onlyStatus returns cur with next's status: a write to /status.
func onlyStatus(kind api.Kind, cur, next api.Object) api.Object {
	out := kind.New()
	reflect.ValueOf(out).Elem().Set(reflect.ValueOf(cur).Elem())
	part(out, "Status").Set(part(next, "Status"))
	return out
}

// carryServerMeta copies the fields only the server sets from the stored
// object to the one being written.
func carryServerMeta(cur, next *api.Meta) {
	next.Generation = cur.Generation
	next.DeletionTimestamp = cur.DeletionTimestamp
}

// checkFinalizers refuses new finalizers on an object being deleted: they
// could hold it forever.
func checkFinalizers(cur, next *api.Meta) *api.Error {
	if !cur.Deleting() {
		return nil
	}
	for _, f := range next.Finalizers {
		if !slices.Contains(cur.Finalizers, f) {
			return api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidField, "finalizers",
				"finalizers: %q cannot be added while the object is being deleted; finalizers may only be removed now", f)
		}
	}
	return nil
}

// mergeConditions applies a status patch's conditions by type: the
// conditions named in the patch replace those of the same type, the others
// stay. A condition with "status": null is removed. Without this, a JSON
// merge patch would replace the whole list and one owner's write would
// erase another's conditions.
func mergeConditions(base, patch map[string]any) {
	ps, _ := patch["status"].(map[string]any)
	if ps == nil {
		return
	}
	pc, ok := ps["conditions"].([]any)
	if !ok {
		return
	}
	bs, _ := base["status"].(map[string]any)
	var cur []any
	if bs != nil {
		cur, _ = bs["conditions"].([]any)
	}
	out := make([]any, 0, len(cur)+len(pc))
	replaced := map[string]bool{}
	for _, c := range pc {
		if m, ok := c.(map[string]any); ok {
			if t, ok := m["type"].(string); ok {
				replaced[t] = true
			}
		}
	}
	for _, c := range cur {
		if m, ok := c.(map[string]any); ok {
			if t, _ := m["type"].(string); replaced[t] {
				continue
			}
		}
		out = append(out, c)
	}
	for _, c := range pc {
		if m, ok := c.(map[string]any); ok {
			if s, present := m["status"]; present && s == nil {
				continue // removal
			}
		}
		out = append(out, c)
	}
	ps["conditions"] = out
}

// agentHostStatus lists the host status fields an agent observes and may
// report; the others are kept by controllers (state and conditions by the
// host lifecycle controller, subnet by the network allocator, node labels by
// kubernetes-agent) and an agent that could write them could bait the
// scheduler (issue 9, defect 6).
var agentHostStatus = map[string]bool{"agentIP": true, "hostname": true, "capacity": true, "dockerVersion": true, "vtepMAC": true}

// Capacity an agent may claim; more is clamped, and logged.
const (
	maxMilliCPU       = 4096 * 1000 // 4,096 cores
	maxMemoryBytes    = 64 << 40    // 64 TiB
	maxLocalStorageMB = 1 << 30     // 1 EiB
)

// checkAgentHostStatus refuses an agent's change to a host status field it
// does not own, and clamps the capacity it claims to what a machine can have.
func (s *Server) checkAgentHostStatus(p *auth.Principal, cur, next *api.Host) *api.Error {
	cv, nv := reflect.ValueOf(cur.Status), reflect.ValueOf(next.Status)
	t := cv.Type()
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if agentHostStatus[name] || reflect.DeepEqual(cv.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		return api.NewError(http.StatusForbidden, api.CodeForbidden, "status."+name,
			"key %s (role agent) may not change status.%s of its host: agents report only status.agentIP, hostname, capacity, dockerVersion and vtepMAC", p.AccessKey, name)
	}
	c := &next.Status.Capacity
	if c.MilliCPU < 0 || c.MemoryBytes < 0 || c.LocalStorageMB < 0 {
		return invalid("status.capacity", "cannot be negative (%+v)", *c)
	}
	claimed := *c
	c.MilliCPU, c.MemoryBytes, c.LocalStorageMB = min(c.MilliCPU, maxMilliCPU), min(c.MemoryBytes, maxMemoryBytes), min(c.LocalStorageMB, maxLocalStorageMB)
	if *c != claimed {
		s.log.Warn("agent claimed more capacity than a machine has; clamped", "host", cur.ID, "key", p.AccessKey,
			"claimedMilliCPU", claimed.MilliCPU, "claimedMemoryBytes", claimed.MemoryBytes, "claimedLocalStorageMB", claimed.LocalStorageMB,
			"milliCPU", c.MilliCPU, "memoryBytes", c.MemoryBytes, "localStorageMB", c.LocalStorageMB)
	}
	if *c != cur.Status.Capacity {
		s.log.Info("host capacity changed, as its agent reports", "host", cur.ID, "key", p.AccessKey,
			"fromMilliCPU", cur.Status.Capacity.MilliCPU, "fromMemoryBytes", cur.Status.Capacity.MemoryBytes,
			"milliCPU", c.MilliCPU, "memoryBytes", c.MemoryBytes, "localStorageMB", c.LocalStorageMB)
	}
	return nil
}
