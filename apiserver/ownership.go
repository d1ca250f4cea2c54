package apiserver

import (
	"net/http"
	"reflect"
	"slices"

	"github.com/drover/drover/api"
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
