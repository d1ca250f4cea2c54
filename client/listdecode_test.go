package client

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/drover/drover/api"
)

func TestDecodeListMatchesEncodingJSON(t *testing.T) {
	var items []string
	for i := 0; i < 2500; i++ {
		// Strings with the characters the splitter must not be fooled by.
		items = append(items, fmt.Sprintf(`{"revision":%d,"type":"stack","id":"st-%d","name":"s%d","labels":{"k":"a,b]}{[\"\\\\"},"spec":{"compose":"x: [1, {2}]"},"status":{}}`, i+1, i, i))
	}
	body := `{"type":"collection","resourceType":"stack","data":[` + strings.Join(items, ",") + `],"revision":9999}`
	got, err := decodeList[api.Stack]([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	var want api.List[api.Stack]
	if err := json.Unmarshal([]byte(body), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parallel decode differs from encoding/json")
	}
	if got.Revision != 9999 || len(got.Data) != 2500 || got.Data[7].Labels["k"] != `a,b]}{["\\` {
		t.Fatalf("decoded %+v", got.Data[7])
	}
}

func FuzzSplitData(f *testing.F) {
	f.Add(`{"type":"collection","data":[{"a":"],"},{"b":[1,2]}],"revision":3}`)
	f.Add(`{"type":"collection","data":[],"revision":1}`)
	f.Add(`{"data":[1,2,"x\"]"]}`)
	f.Fuzz(func(t *testing.T, body string) {
		items, rest, err := splitData([]byte(body))
		if err != nil {
			return
		}
		// Whenever the splitter accepts valid JSON, it must agree with encoding/json.
		var whole struct {
			Data []json.RawMessage `json:"data"`
		}
		if json.Unmarshal([]byte(body), &whole) != nil {
			return
		}
		if len(whole.Data) != len(items) {
			t.Fatalf("split %d items, encoding/json %d", len(items), len(whole.Data))
		}
		for i := range items {
			var a, b any
			if json.Unmarshal(items[i], &a) != nil || json.Unmarshal(whole.Data[i], &b) != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("item %d differs: %s vs %s", i, items[i], whole.Data[i])
			}
		}
		_ = rest
	})
}
