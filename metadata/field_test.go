package metadata

import (
	"encoding/json"
	"testing"
)

func TestTopFieldAgreesWithDecoding(t *testing.T) {
	doc := `{"name":"web-1","primary_ip":"10.42.0.5","labels":{"a":"b \"q\" }"},"ports":["80/tcp",{"x":[1,2]}],"n":-1.5e3,"ok":true,"none":null,"esc\u0061ped":"yes"}`
	var full map[string]json.RawMessage
	if err := json.Unmarshal([]byte(doc), &full); err != nil {
		t.Fatal(err)
	}
	for k, want := range full {
		got, ok := topField([]byte(doc), k)
		if !ok || string(got) != string(want) {
			t.Errorf("%s: got %s %v, want %s", k, got, ok, want)
		}
	}
	if got, ok := topField([]byte(doc), "missing"); !ok || got != nil {
		t.Errorf("missing key: %s %v; want nil, true", got, ok)
	}
	for _, bad := range []string{``, `[]`, `{"a":`, `{"a" 1}`, `{"a":"x`, `{"a":{"b":1}`} {
		if v, ok := topField([]byte(bad), "zz"); ok && v != nil {
			t.Errorf("%q: found %s", bad, v)
		}
	}
}

func FuzzTopField(f *testing.F) {
	f.Add(`{"a":1,"b":{"c":[1,"]"]}}`, "b")
	f.Add(`{"a\"b":2}`, `a"b`)
	f.Fuzz(func(t *testing.T, doc, key string) {
		v, ok := topField([]byte(doc), key)
		var full map[string]json.RawMessage
		if json.Unmarshal([]byte(doc), &full) != nil {
			return // not an object: anything topField says is unused
		}
		want, has := full[key]
		if ok && v != nil && has && !json.Valid(v) {
			t.Fatalf("%q[%q] = %q: not JSON", doc, key, v)
		}
		if ok && v != nil && has {
			var a, b any
			json.Unmarshal(v, &a)
			json.Unmarshal(want, &b)
			if ja, _ := json.Marshal(a); string(ja) != func() string { jb, _ := json.Marshal(b); return string(jb) }() {
				t.Fatalf("%q[%q] = %s, want %s", doc, key, v, want)
			}
		}
	})
}
