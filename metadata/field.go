package metadata

import (
	"bytes"
	"encoding/json"
)

// topField returns the raw value of key in the JSON object b without
// decoding the object: a path one step into a rendered object (the most
// common metadata query, such as self/container/primary_ip) costs a scan,
// not a decode of everything around it. b is JSON this package rendered;
// anything else makes it report false, and the caller decodes instead.
func topField(b []byte, key string) ([]byte, bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i++
	if j := skipSpace(b, i); j < len(b) && b[j] == '}' {
		return nil, true
	}
	var found []byte // the last occurrence wins, as in encoding/json
	for {
		i = skipSpace(b, i)
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		end, ok := stringEnd(b, i)
		if !ok {
			return nil, false
		}
		k := b[i+1 : end-1]
		match := string(k) == key
		if bytes.IndexByte(k, '\\') >= 0 {
			var s string
			if json.Unmarshal(b[i:end], &s) != nil {
				return nil, false
			}
			match = s == key
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		vend, ok := valueEnd(b, i)
		if !ok {
			return nil, false
		}
		if match {
			found = b[i:vend]
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return found, true // nil: well formed, no such key
		default:
			return nil, false
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index after the string starting at b[i] == '"'.
func stringEnd(b []byte, i int) (int, bool) {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, true
		}
	}
	return 0, false
}

// valueEnd returns the index after the JSON value starting at b[i].
func valueEnd(b []byte, i int) (int, bool) {
	if i >= len(b) {
		return 0, false
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				e, ok := stringEnd(b, j)
				if !ok {
					return 0, false
				}
				j = e - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, true
				}
			}
		}
		return 0, false
	default: // number, true, false, null
		j := i
		for j < len(b) && !bytes.ContainsRune([]byte(",}] \n\t\r"), rune(b[j])) {
			j++
		}
		return j, j > i
	}
}
