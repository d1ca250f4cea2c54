package apiserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"

	"github.com/drover/drover/api"
	"github.com/drover/drover/store"
)

// decodeBody reads a JSON object body into a generic map, with errors that
// say where the JSON broke. The body is already size-limited by the caller.
func decodeBody(body []byte) (map[string]any, *api.Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, jsonSyntaxError(body, err)
	}
	if dec.More() {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "body has data after the JSON object at byte %d", dec.InputOffset())
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "body must be a JSON object, got %s", jsonKind(v))
	}
	return m, nil
}

func jsonSyntaxError(body []byte, err error) *api.Error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(body, se.Offset)
		return api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "malformed JSON at line %d, column %d: %s", line, col, se.Error())
	}
	if errors.Is(err, io.EOF) {
		return api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "request body is empty; send a JSON object")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		line, col := lineCol(body, int64(len(body)))
		return api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "malformed JSON: the body ends at line %d, column %d in the middle of a value", line, col)
	}
	return api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "malformed JSON: %s", err.Error())
}

func lineCol(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	line, col := 1, 1
	for _, c := range b[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// checkShape walks a decoded JSON value against the Go type it must fill and
// reports the first unknown field or wrong type with its path, e.g.
// `spec.launchConfig.ports[2]`. encoding/json alone names neither.
func checkShape(t reflect.Type, v any, path string) *api.Error {
	if v == nil {
		return nil // null is allowed anywhere and means "zero"
	}
	if t == reflect.TypeOf(time.Time{}) {
		s, ok := v.(string)
		if !ok {
			return typeError(path, "an RFC 3339 time string", v)
		}
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			return api.NewError(http.StatusBadRequest, api.CodeInvalidField, path, "%s: %q is not an RFC 3339 time", path, s)
		}
		return nil
	}
	if t == reflect.TypeOf(json.RawMessage{}) {
		return nil
	}
	switch t.Kind() {
	case reflect.Pointer:
		return checkShape(t.Elem(), v, path)
	case reflect.Interface:
		return nil
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return typeError(path, "an object", v)
		}
		fields := jsonFields(t)
		for k, fv := range m {
			ft, ok := fields[k]
			if !ok {
				return api.NewError(http.StatusBadRequest, api.CodeUnknownField, join(path, k), "unknown field %q%s; known fields: %s", k, inPath(path), strings.Join(sortedKeys(fields), ", "))
			}
			if err := checkShape(ft, fv, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return typeError(path, "an object", v)
		}
		for k, fv := range m {
			if err := checkShape(t.Elem(), fv, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case reflect.Slice:
		l, ok := v.([]any)
		if !ok {
			return typeError(path, "an array", v)
		}
		for i, ev := range l {
			if err := checkShape(t.Elem(), ev, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case reflect.String:
		if _, ok := v.(string); !ok {
			return typeError(path, "a string", v)
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return typeError(path, "true or false", v)
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(json.Number)
		if !ok {
			return typeError(path, "an integer", v)
		}
		i, err := n.Int64()
		if err != nil || (t.Kind() == reflect.Int32 && (i > math.MaxInt32 || i < math.MinInt32)) {
			return api.NewError(http.StatusBadRequest, api.CodeInvalidField, path, "%s: %s is not an integer in range", path, n)
		}
	case reflect.Float64, reflect.Float32:
		if _, ok := v.(json.Number); !ok {
			return typeError(path, "a number", v)
		}
	}
	return nil
}

func inPath(path string) string {
	if path == "" {
		return ""
	}
	return " in " + path
}

func typeError(path, want string, got any) *api.Error {
	return api.NewError(http.StatusBadRequest, api.CodeInvalidField, path, "%s must be %s, got %s", orBody(path), want, jsonKind(got))
}

func orBody(path string) string {
	if path == "" {
		return "body"
	}
	return path
}

func jsonKind(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", truncate(v, 40))
	case bool:
		return "boolean"
	case json.Number:
		return "number " + v.String()
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

// jsonFields maps JSON names to field types, following embedded structs the
// way encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			for k, v := range jsonFields(ft) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// decodeInto checks m against kind's type and fills a new object from it.
func decodeInto(kind api.Kind, m map[string]any) (api.Object, *api.Error) {
	obj := kind.New()
	if err := checkShape(reflect.TypeOf(obj), m, ""); err != nil {
		return nil, err
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "re-encoding body: %v", err)
	}
	if err := json.Unmarshal(raw, obj); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidField, te.Field, "%s must be %s", te.Field, te.Type)
		}
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "decoding body: %v", err)
	}
	return obj, nil
}

// decodeCreate decodes a create's body. Most bodies are right, so the
// first try is one strict decode straight into the object, with the
// encoding/json v2 decoder (about twice as fast as v1's, and as strict as the
// careful path: exact field names, no unknown or duplicate member, valid
// UTF-8); only a body it refuses takes the careful path (a generic decode
// walked against the type), which names the unknown field or wrong type by
// its path.
func decodeCreate(kind api.Kind, body []byte) (api.Object, *api.Error) {
	obj := kind.New()
	if err := jsonv2.Unmarshal(body, obj, jsonv2.RejectUnknownMembers(true)); err == nil && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{")) {
		return checkCreate(kind, obj)
	}
	m, aerr := decodeBody(body)
	if aerr != nil {
		return nil, aerr
	}
	if _, aerr := stripServerFields(m); aerr != nil {
		return nil, aerr
	}
	obj, aerr = decodeInto(kind, m)
	if aerr != nil {
		return nil, aerr
	}
	return checkCreate(kind, obj)
}

// checkCreate refuses what a client may not choose; revision and times are
// set by the store whatever the body said.
func checkCreate(kind api.Kind, obj api.Object) (api.Object, *api.Error) {
	m := obj.GetMeta()
	if m.ID != "" {
		return nil, invalid("id", "is assigned by the server; leave it out")
	}
	if m.Type != "" && m.Type != kind.Type {
		return nil, invalid("type", "is %q in collection %s, got %q", kind.Type, kind.Collection, m.Type)
	}
	return obj, nil
}

// mergePatch applies an RFC 7386 JSON merge patch to target (with the
// maintained implementation client-go uses) and returns the result with
// numbers kept as json.Number, ready for decodeInto's shape check.
func mergePatch(target, patch map[string]any) (map[string]any, *api.Error) {
	doc, err := json.Marshal(target)
	if err != nil {
		return nil, store.InternalError(err)
	}
	p, err := json.Marshal(patch)
	if err != nil {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "re-encoding patch: %v", err)
	}
	merged, err := jsonpatch.MergePatch(doc, p)
	if err != nil {
		return nil, api.NewError(http.StatusBadRequest, api.CodeInvalidJSON, "", "applying merge patch: %v", err)
	}
	var out map[string]any
	dec := json.NewDecoder(bytes.NewReader(merged))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		return nil, store.InternalError(err)
	}
	return out, nil
}

func typeOf(v any) reflect.Type { return reflect.TypeOf(v) }
