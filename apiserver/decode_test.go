package apiserver

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/drover/drover/api"
	"github.com/drover/drover/store"
)

func TestCheckShapePaths(t *testing.T) {
	kind, _ := api.KindByCollection("services")
	cases := []struct {
		body, field, code string
	}{
		{`{"spec":{"scale":"x"}}`, "spec.scale", api.CodeInvalidField},
		{`{"spec":{"scale":1.5}}`, "spec.scale", api.CodeInvalidField},
		{`{"spec":{"launchConfig":{"environment":{"A":1}}}}`, "spec.launchConfig.environment.A", api.CodeInvalidField},
		{`{"spec":{"sidekicks":[{"image":"x"},{"imag":"y"}]}}`, "spec.sidekicks[1].imag", api.CodeUnknownField},
		{`{"labels":[]}`, "labels", api.CodeInvalidField},
		{`{"createdAt":"yesterday"}`, "createdAt", api.CodeInvalidField},
		{`{"spec":{"global":"yes"}}`, "spec.global", api.CodeInvalidField},
		{`{"spec":null,"labels":null}`, "", ""},
		{`{"name":"ok","spec":{"stackId":"st-1","scale":3,"ports":[{"port":80}]}}`, "", ""},
	}
	for _, tc := range cases {
		m, err := decodeBody([]byte(tc.body))
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		_, aerr := decodeInto(kind, m)
		if tc.code == "" {
			if aerr != nil {
				t.Errorf("%s: unexpected error %v", tc.body, aerr)
			}
			continue
		}
		if aerr == nil || aerr.Field != tc.field || aerr.Code != tc.code {
			t.Errorf("%s: got %v, want %s at %s", tc.body, aerr, tc.code, tc.field)
		}
	}
}

func TestDecodeBodySyntaxErrorsSayWhere(t *testing.T) {
	_, err := decodeBody([]byte("{\n  \"name\": \"a\",\n  \"spec\": {\"scale\": 3,,}\n}"))
	if err == nil || !strings.Contains(err.Message, "line 3") {
		t.Fatalf("want an error naming line 3, got %v", err)
	}
	if _, err := decodeBody([]byte(`{"a":`)); err == nil || !strings.Contains(err.Message, "ends") {
		t.Fatalf("truncated body: %v", err)
	}
}

func TestMergePatch(t *testing.T) {
	target := map[string]any{"a": "b", "c": map[string]any{"d": "e", "f": "g"}, "keep": 1}
	patch := map[string]any{"a": "z", "c": map[string]any{"f": nil, "h": "i"}, "new": []any{1}}
	got, err := mergePatch(target, patch)
	want := map[string]any{"a": "z", "c": map[string]any{"d": "e", "h": "i"}, "keep": json.Number("1"), "new": []any{json.Number("1")}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("mergePatch = %v, want %v", got, want)
	}
}

func TestWithRevision(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"a":1}`, `{"revision":7,"a":1}`},
		{`{}`, `{"revision":7}`},
	} {
		got := string(store.WithRevision([]byte(tc.in), 7))
		if got != tc.want {
			t.Errorf("store.WithRevision(%s) = %s, want %s", tc.in, got, tc.want)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(got), &m); err != nil {
			t.Errorf("withRevision produced invalid JSON %s", got)
		}
	}
}

func TestValidateNetworkDefaults(t *testing.T) {
	n := &api.Network{Meta: api.Meta{Name: "default"}}
	normalize("networks", n)
	if err := validate("networks", n); err != nil {
		t.Fatal(err)
	}
	if n.Spec.CIDR != "10.42.0.0/16" || n.Spec.HostSubnetSize != 24 || n.Spec.VNI != 1 {
		t.Fatalf("defaults not applied: %+v", n.Spec)
	}
	n.Spec.HostSubnetSize = 16
	if err := validate("networks", n); err == nil || err.Field != "spec.hostSubnetSize" {
		t.Fatalf("want hostSubnetSize error, got %v", err)
	}
}

// FuzzDecodeObject feeds arbitrary bodies through the same decoding and
// validation a create goes through, for every kind. It must never panic,
// must answer 4xx for what it rejects, and what it accepts must survive an
// encode/decode round trip unchanged.
func FuzzDecodeObject(f *testing.F) {
	seeds := []string{
		`{"name":"web","spec":{"stackId":"st-1","scale":2,"launchConfig":{"image":"nginx","ports":["80:80/tcp"],"environment":{"A":"b"}}}}`,
		`{"name":"h1.example.com","labels":{"io.rancher.host.os":"linux"},"status":{"state":"active","agentIP":"10.0.0.1","subnet":"10.42.1.0/24"}}`,
		`{"name":"n","spec":{"cidr":"10.42.0.0/16","hostSubnetSize":24}}`,
		`{"spec":{"role":"agent","hostId":"h-1"}}`,
		`{"name":"x","spec":{"kind":"kubernetes","namespace":"default","templates":{"a.yaml":"kind: Pod"}}}`,
		`{"spec":{"kind":"kubernetesPod","hostId":"h-1"},"status":{"state":"running","primaryIP":"10.42.0.9","mac":"02:00:00:00:00:01"}}`,
		`{"name":"a","spec":{"sidekicks":[{"name":"log","image":"x"}],"lbConfig":{"portRules":[{"sourcePort":80,"protocol":"http"}]}}}`,
		`{"a":`, `[]`, `null`, `{"spec":{"scale":1e309}}`, `{"labels":{"":""}}`,
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		m, err := decodeBody([]byte(body))
		if err != nil {
			if err.Status != http.StatusBadRequest {
				t.Fatalf("decodeBody: status %d", err.Status)
			}
			return
		}
		for _, kind := range api.Kinds {
			obj, aerr := decodeInto(kind, m)
			if aerr != nil {
				if aerr.Status < 400 || aerr.Status > 499 || aerr.Message == "" {
					t.Fatalf("%s: bad error %+v", kind.Type, aerr)
				}
				continue
			}
			normalize(kind.Collection, obj)
			if verr := validate(kind.Collection, obj); verr != nil {
				if verr.Status != http.StatusUnprocessableEntity || verr.Field == "" {
					t.Fatalf("%s: validation error without 422 and a field: %+v", kind.Type, verr)
				}
				continue
			}
			stored := store.EncodeStored(obj)
			back, derr := store.DecodeStored(kind, stored, 0)
			if derr != nil {
				t.Fatalf("%s: stored form does not decode: %v", kind.Type, derr)
			}
			if again := store.EncodeStored(back); string(again) != string(stored) {
				t.Fatalf("%s: round trip changed the object:\n%s\n%s", kind.Type, stored, again)
			}
		}
	})
}

// A merge patch of any shape onto a stored object either applies or fails
// with a 4xx naming the problem; what applies decodes or is refused with a
// 4xx, never a panic or a 5xx.
func FuzzMergePatch(f *testing.F) {
	for _, s := range []string{`{"spec":{"scale":3}}`, `{"labels":{"a":null}}`, `{"status":{"conditions":[{"type":"A","status":null}]}}`, `{"spec":null}`, `[]`, `{"finalizers":["x"]}`} {
		f.Add(s)
	}
	base := map[string]any{"type": "service", "id": "svc-1", "name": "web", "labels": map[string]any{"a": "b"},
		"spec": map[string]any{"stackId": "st-1", "scale": json.Number("2"), "launchConfig": map[string]any{"image": "nginx"}}}
	kind, _ := api.KindByCollection("services")
	f.Fuzz(func(t *testing.T, body string) {
		p, err := decodeBody([]byte(body))
		if err != nil {
			return
		}
		merged, aerr := mergePatch(base, p)
		if aerr != nil {
			if aerr.Status != http.StatusBadRequest {
				t.Fatalf("mergePatch: %+v", aerr)
			}
			return
		}
		if _, aerr := decodeInto(kind, merged); aerr != nil && (aerr.Status < 400 || aerr.Status > 499) {
			t.Fatalf("decodeInto after patch: %+v", aerr)
		}
	})
}

// A Kubernetes template of any content is either accepted or refused with a
// message, quickly: no panic, no runaway alias expansion.
func FuzzCheckTemplate(f *testing.F) {
	for _, s := range []string{"apiVersion: v1\nkind: Pod\n", "---\n---\napiVersion: v1\nkind: A\n", "a: &a [1,2]\nb: [*a,*a]\n", "- 1\n", ": :"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tpl string) {
		if err := checkTemplate(tpl); err != nil && err.Error() == "" {
			t.Fatal("refused without a reason")
		}
	})
}

// FuzzRegisterBody feeds arbitrary bodies to the registration decoder, which
// runs before any token is checked, so anyone can reach it: never a panic,
// every refusal a 4xx naming what is wrong, every acceptance a valid host
// name and labels.
func FuzzRegisterBody(f *testing.F) {
	for _, s := range []string{
		`{"token":"rt-x.y","name":"node1","agentIP":"10.0.0.1","hostname":"n1","labels":{"zone":"a"}}`,
		`{"name":"Node 1"}`, `{"name":""}`, `{"name":"a","labels":{"a\u200bb":"x"}}`, `{"name":"a","agentIP":"x"}`,
		`{"name":"a","extra":1}`, `{"name":"` + strings.Repeat("a", 70) + `"}`, `{`, `[]`, ``,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		req, aerr := decodeRegister([]byte(body))
		if aerr != nil {
			if aerr.Status < 400 || aerr.Status > 499 || aerr.Message == "" {
				t.Fatalf("decodeRegister(%q): %d %q, want a 4xx with a message", body, aerr.Status, aerr.Message)
			}
			return
		}
		if !validHostName(req.Name) || len(req.Name) > 63 {
			t.Fatalf("decodeRegister(%q) accepted host name %q", body, req.Name)
		}
		for k, v := range req.Labels {
			if validLabel("labels", k, v) != nil {
				t.Fatalf("decodeRegister(%q) accepted label %q=%q", body, k, v)
			}
		}
	})
}
