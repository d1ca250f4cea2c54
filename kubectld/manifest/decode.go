package manifest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Limits on what one request or stack may hold.
const (
	MaxDocuments = 5000
	MaxBytes     = 8 << 20
)

// Document is one Kubernetes object of a manifest, with where it came from
// so errors can name it.
type Document struct {
	File   string
	Number int // 1-based, within File
	Line   int // first line of the document in File
	Object *unstructured.Unstructured
}

// Where names the document for errors: "app.yaml: document 2 (line 14, Deployment web)".
func (d Document) Where() string {
	s := fmt.Sprintf("%s: document %d (line %d", d.File, d.Number, d.Line)
	if d.Object != nil && d.Object.GetKind() != "" {
		s += ", " + d.Object.GetKind()
		if n := d.Object.GetName(); n != "" {
			s += " " + n
		}
	}
	return s + ")"
}

// Decode splits a YAML or JSON stream into Kubernetes objects. Empty
// documents are skipped; a `kind: List` gives its items. Duplicate keys, a
// document that is not a mapping, or one without apiVersion, kind or
// metadata.name (generateName is accepted) are errors naming the document.
func Decode(file string, data []byte) ([]Document, error) {
	if len(data) > MaxBytes {
		return nil, fmt.Errorf("%s: %d KiB; at most %d KiB", file, len(data)>>10, MaxBytes>>10)
	}
	var out []Document
	for _, ch := range split(data) {
		if isBlank(ch.text) {
			continue
		}
		d := Document{File: file, Number: ch.number, Line: ch.line}
		js, err := yaml.YAMLToJSONStrict(ch.text)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", d.Where(), shiftLines(err.Error(), ch.line-1))
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			return nil, fmt.Errorf("%s: not a mapping: a Kubernetes object has apiVersion, kind and metadata", d.Where())
		}
		u := &unstructured.Unstructured{Object: m}
		d.Object = u
		if err := check(u); err != nil {
			return nil, fmt.Errorf("%s: %v", d.Where(), err)
		}
		if u.IsList() {
			items, _, _ := unstructured.NestedSlice(m, "items")
			for i, it := range items {
				im, ok := it.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("%s: items[%d] is not an object", d.Where(), i)
				}
				iu := &unstructured.Unstructured{Object: im}
				di := d
				di.Object = iu
				if err := check(iu); err != nil {
					return nil, fmt.Errorf("%s: items[%d]: %v", di.Where(), i, err)
				}
				out = append(out, di)
			}
			continue
		}
		out = append(out, d)
		if len(out) > MaxDocuments {
			return nil, fmt.Errorf("%s: more than %d objects", file, MaxDocuments)
		}
	}
	return out, nil
}

func check(u *unstructured.Unstructured) error {
	if u.GetAPIVersion() == "" {
		return fmt.Errorf("apiVersion is missing")
	}
	if u.GetKind() == "" {
		return fmt.Errorf("kind is missing")
	}
	if u.IsList() {
		return nil
	}
	if u.GetName() == "" && u.GetGenerateName() == "" {
		return fmt.Errorf("metadata.name is missing")
	}
	return nil
}

type chunk struct {
	text         []byte
	number, line int
}

// split cuts a stream at lines that are "---" (maybe followed by a comment
// or spaces), keeping each document's first line number.
func split(data []byte) []chunk {
	var out []chunk
	cur := chunk{number: 1, line: 1}
	var buf bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), MaxBytes+1)
	n := 0
	for sc.Scan() {
		n++
		l := sc.Text()
		if l == "---" || strings.HasPrefix(l, "--- ") || strings.HasPrefix(l, "---\t") {
			cur.text = append([]byte(nil), buf.Bytes()...)
			out = append(out, cur)
			buf.Reset()
			cur = chunk{number: cur.number + 1, line: n + 1}
			continue
		}
		buf.WriteString(l)
		buf.WriteByte('\n')
	}
	cur.text = buf.Bytes()
	return append(out, cur)
}

func isBlank(b []byte) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		l = bytes.TrimSpace(l)
		if len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

// shiftLines turns "line N" in a YAML error into the file's line number.
func shiftLines(msg string, by int) string {
	if by == 0 {
		return msg
	}
	var b strings.Builder
	for {
		i := strings.Index(msg, "line ")
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		j := i + 5
		k := j
		for k < len(msg) && msg[k] >= '0' && msg[k] <= '9' {
			k++
		}
		b.WriteString(msg[:j])
		if k > j {
			var v int
			fmt.Sscanf(msg[j:k], "%d", &v)
			fmt.Fprintf(&b, "%d", v+by)
		}
		msg = msg[k:]
	}
}

// IsChart says whether a template folder is a Helm chart (it holds Chart.yaml).
func IsChart(files map[string]string) bool {
	_, ok := files["Chart.yaml"]
	return ok
}

// IsManifest says whether a file of a template folder holds objects:
// .yaml, .yml and .json files, except the compose files Rancher's
// catalog folders carry beside them.
func IsManifest(name string) bool {
	switch path.Base(name) {
	case "docker-compose.yml", "docker-compose.yaml", "rancher-compose.yml", "rancher-compose.yaml":
		return false
	}
	switch path.Ext(name) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// Render fills a manifest folder's ${VAR} from answers and decodes every
// object, files in name order. A chart is not rendered here (see kubectld).
func Render(files map[string]string, answers map[string]string) ([]Document, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		if IsManifest(n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []Document
	var missing *MissingError
	for _, n := range names {
		text, err := Interpolate(n, files[n], answers)
		if me, ok := err.(*MissingError); ok {
			// Name every missing answer of every file at once.
			if missing == nil {
				missing = &MissingError{File: n, Lines: map[string]int{}}
			} else {
				missing.File += ", " + n
			}
			for _, v := range me.Names {
				if _, seen := missing.Lines[v]; !seen {
					missing.Names = append(missing.Names, v)
					missing.Lines[v] = me.Lines[v]
				}
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		docs, err := Decode(n, []byte(text))
		if err != nil {
			return nil, err
		}
		out = append(out, docs...)
		if len(out) > MaxDocuments {
			return nil, fmt.Errorf("more than %d objects", MaxDocuments)
		}
	}
	if missing != nil {
		sort.Strings(missing.Names)
		return nil, missing
	}
	return out, nil
}
