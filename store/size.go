package store

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"sort"
	"strings"

	"github.com/drover/drover/api"
)

// MaxObjectBytes bounds one stored object with its secret. etcd refuses a
// request over 1.5 MiB; past that a write would fail as "store
// unavailable", and a client would retry it forever. Spec and the previous
// spec kept for rollback both count.
const MaxObjectBytes = 1400 << 10

// checkSize refuses an object too big to store, naming its largest parts.
func checkSize(obj api.Object, stored, secret []byte) *api.Error {
	// A secret may be stored sealed (seal.go): base64 and a header.
	if n := len(stored) + base64.StdEncoding.EncodedLen(len(secret)) + 128; n > MaxObjectBytes {
		parts := largestParts(obj)
		field := ""
		if len(parts) > 0 {
			field = parts[0].path
		}
		var list []string
		for _, p := range parts {
			list = append(list, fmt.Sprintf("%s (%d KiB)", p.path, p.size>>10))
		}
		return api.NewError(http.StatusRequestEntityTooLarge, api.CodeTooLarge, field,
			"the object would take %d KiB, over the %d KiB an object may take (with the previous spec kept for rollback); largest parts: %s",
			n>>10, MaxObjectBytes>>10, strings.Join(list, ", "))
	}
	return nil
}

type sizedPart struct {
	path string
	size int
}

// largestParts lists the three biggest fields one level into spec and
// status (status.previousSpec counts as one).
func largestParts(obj api.Object) []sizedPart {
	var out []sizedPart
	for _, top := range []string{"Spec", "Status"} {
		v := reflect.ValueOf(obj).Elem().FieldByName(top)
		if !v.IsValid() || v.Kind() != reflect.Struct {
			continue
		}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			b, _ := json.Marshal(v.Field(i).Interface())
			out = append(out, sizedPart{strings.ToLower(top) + "." + name, len(b)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].size > out[j].size })
	return out[:min(3, len(out))]
}
