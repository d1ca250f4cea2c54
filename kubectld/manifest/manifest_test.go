package manifest

import (
	"errors"
	"strings"
	"testing"
)

func TestInterpolate(t *testing.T) {
	answers := map[string]string{"IMAGE": "nginx:1.27", "EMPTY": ""}
	cases := []struct{ in, want string }{
		{"image: ${IMAGE}", "image: nginx:1.27"},
		{"a: ${EMPTY:-x} b: ${EMPTY-x} c: ${UNSET-y} d: ${UNSET:-z}", "a: x b:  c: y d: z"},
		{"cmd: echo $HOME $(POD_IP) $$ $", "cmd: echo $HOME $(POD_IP) $$ $"},
		{"literal: $${IMAGE}", "literal: ${IMAGE}"},
	}
	for _, c := range cases {
		got, err := Interpolate("a.yaml", c.in, answers)
		if err != nil || got != c.want {
			t.Errorf("Interpolate(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestInterpolateNamesEveryMissingAnswer(t *testing.T) {
	_, err := Interpolate("app.yaml", "a: ${DB}\nb: ${USER}\nc: ${DB}\nd: ${REQ:?set it}\n", nil)
	var me *MissingError
	if !errors.As(err, &me) {
		t.Fatalf("err = %v, want a MissingError", err)
	}
	want := "app.yaml: no answer for ${DB} (line 1), ${REQ} (line 4), ${USER} (line 2)"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err = %q, want it to start with %q", err, want)
	}
	for _, bad := range []string{"x: ${", "x: ${A B}", "x: ${1A}", "x: ${A\n}"} {
		if _, err := Interpolate("f.yaml", bad, nil); err == nil || !strings.HasPrefix(err.Error(), "f.yaml:") {
			t.Errorf("Interpolate(%q) err = %v, want one naming f.yaml", bad, err)
		}
	}
}

func TestDecode(t *testing.T) {
	in := `# leading comment
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
---   # an empty document
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}
- {apiVersion: v1, kind: Secret, metadata: {name: c}}
---
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "x"}}
`
	docs, err := Decode("app.yaml", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		got = append(got, d.Where())
	}
	want := []string{
		"app.yaml: document 1 (line 1, ConfigMap a)",
		"app.yaml: document 3 (line 7, ConfigMap b)",
		"app.yaml: document 3 (line 7, Secret c)",
		"app.yaml: document 4 (line 13, Deployment d)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("documents:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecodeErrorsNameTheDocument(t *testing.T) {
	cases := []struct{ in, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  name: c\n", "x.yaml: document 2 (line 5): "},
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\nkind: Pod\nmetadata: {name: p}\n", "x.yaml: document 2 (line 5, Pod p): apiVersion is missing"},
		{"- a\n- b\n", "x.yaml: document 1 (line 1): not a mapping"},
		{"apiVersion: v1\nkind: ConfigMap\n", "x.yaml: document 1 (line 1, ConfigMap): metadata.name is missing"},
		{"a: [1,\n", "x.yaml: document 1 (line 1): "},
	}
	for _, c := range cases {
		_, err := Decode("x.yaml", []byte(c.in))
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("Decode(%q) err = %v, want prefix %q", c.in, err, c.want)
		}
	}
	// A YAML error's line is the file's, not the document's.
	_, err := Decode("x.yaml", []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: [\n"))
	if err == nil || !strings.Contains(err.Error(), "line 6") {
		t.Errorf("err = %v, want it to name line 6", err)
	}
}

func TestRender(t *testing.T) {
	files := map[string]string{
		"b.yaml":             "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b}\ndata: {v: \"${V}\"}\n",
		"a.yml":              "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
		"docker-compose.yml": "services: {}\n",
		"README.md":          "${NOT_A_TEMPLATE}",
	}
	docs, err := Render(files, map[string]string{"V": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) != 2 || docs[0].Object.GetName() != "a" || docs[1].Object.GetName() != "b" {
		t.Fatalf("docs = %v", docs)
	}
	if v, _, _ := unstructuredString(docs[1].Object.Object, "data", "v"); v != "1" {
		t.Errorf("data.v = %q, want 1", v)
	}
	files["c.yaml"] = "x: ${W}"
	_, err = Render(files, nil)
	if err == nil || !strings.Contains(err.Error(), "${V}") || !strings.Contains(err.Error(), "${W}") {
		t.Errorf("err = %v, want every missing answer of every file named", err)
	}
}

func unstructuredString(m map[string]any, path ...string) (string, bool, error) {
	for _, p := range path[:len(path)-1] {
		m, _ = m[p].(map[string]any)
	}
	s, ok := m[path[len(path)-1]].(string)
	return s, ok, nil
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Secret, metadata: {name: s}}]\n"))
	f.Add([]byte("{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}"))
	f.Add([]byte("--- \n---\n- 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		docs, err := Decode("f.yaml", b)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, d := range docs {
			if d.Object.GetKind() == "" || d.Object.GetAPIVersion() == "" || d.Line < 1 {
				t.Fatalf("accepted a document without kind, apiVersion or line: %+v", d)
			}
		}
	})
}

func FuzzInterpolate(f *testing.F) {
	f.Add("a: ${A} b: ${B:-x} $${C} ${D?m}")
	f.Add("${")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := Interpolate("f.yaml", s, map[string]string{"A": "1", "B": ""})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.yaml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if !strings.Contains(s, "${") && out != s {
			t.Fatalf("text without ${ changed: %q -> %q", s, out)
		}
	})
}
