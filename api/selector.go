package api

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a parsed label selector in Kubernetes syntax: comma-separated
// requirements `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`
// (exists) and `!k` (absent). The zero Selector selects everything.
//
// The syntax and meaning are k8s.io/apimachinery/pkg/labels', but not its
// value rules: that parser accepts only Kubernetes label values (at most 63
// characters, no '/'), and engine labels carry Rancher values such as
// io.rancher.stack_service.name=shop/web and names longer than 63
// characters. TestSelectorAgreesWithApimachinery holds the two to the same
// answers on everything both accept.
type Selector struct{ reqs []Requirement }

// Requirement is one term of a selector.
type Requirement struct {
	Key    string
	Op     string // "=", "!=", "in", "notin", "exists", "!exists"
	Values []string
}

// ParseSelector parses s; an empty string selects everything.
func ParseSelector(s string) (Selector, error) {
	var out Selector
	terms, err := splitTerms(s)
	if err != nil {
		return Selector{}, fmt.Errorf("label selector %q: %w", s, err)
	}
	for i, term := range terms {
		r, err := parseTerm(term)
		if err != nil {
			return Selector{}, fmt.Errorf("label selector %q: term %d (%q): %w", s, i+1, term, err)
		}
		out.reqs = append(out.reqs, r)
	}
	return out, nil
}

// splitTerms splits on commas outside parentheses.
func splitTerms(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var terms []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			if depth++; depth > 1 {
				return nil, fmt.Errorf("nested parentheses at byte %d", i)
			}
		case ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ')' at byte %d", i)
			}
		case ',':
			if depth == 0 {
				terms = append(terms, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unclosed '('")
	}
	return append(terms, strings.TrimSpace(s[start:])), nil
}

func parseTerm(term string) (Requirement, error) {
	var r Requirement
	switch {
	case term == "":
		return r, fmt.Errorf("empty")
	case strings.Contains(term, "("):
		open := strings.IndexByte(term, '(')
		if !strings.HasSuffix(term, ")") {
			return r, fmt.Errorf("want k in (a,b) or k notin (a,b)")
		}
		head := strings.Fields(term[:open])
		if len(head) != 2 || (head[1] != "in" && head[1] != "notin") {
			return r, fmt.Errorf("want k in (a,b) or k notin (a,b)")
		}
		r = Requirement{Key: head[0], Op: head[1]}
		for _, v := range strings.Split(term[open+1:len(term)-1], ",") {
			r.Values = append(r.Values, strings.TrimSpace(v))
		}
	case strings.Contains(term, "!="):
		k, v, _ := strings.Cut(term, "!=")
		r = Requirement{Key: strings.TrimSpace(k), Op: "!=", Values: []string{strings.TrimSpace(v)}}
	case strings.Contains(term, "=="):
		k, v, _ := strings.Cut(term, "==")
		r = Requirement{Key: strings.TrimSpace(k), Op: "=", Values: []string{strings.TrimSpace(v)}}
	case strings.Contains(term, "="):
		k, v, _ := strings.Cut(term, "=")
		r = Requirement{Key: strings.TrimSpace(k), Op: "=", Values: []string{strings.TrimSpace(v)}}
	case strings.HasPrefix(term, "!"):
		r = Requirement{Key: strings.TrimSpace(term[1:]), Op: "!exists"}
	default:
		r = Requirement{Key: term, Op: "exists"}
	}
	if r.Key == "" || strings.ContainsAny(r.Key, "=!() \t") {
		return r, fmt.Errorf("bad key %q", r.Key)
	}
	for _, v := range r.Values {
		if strings.ContainsAny(v, "=!(), \t") {
			return r, fmt.Errorf("bad value %q", v)
		}
	}
	return r, nil
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := labels[r.Key]
		switch r.Op {
		case "=":
			if !ok || v != r.Values[0] {
				return false
			}
		case "!=":
			if ok && v == r.Values[0] {
				return false
			}
		case "in":
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case "notin":
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case "exists":
			if !ok {
				return false
			}
		case "!exists":
			if ok {
				return false
			}
		}
	}
	return true
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// String renders the selector back to its text form.
func (s Selector) String() string {
	parts := make([]string, len(s.reqs))
	for i, r := range s.reqs {
		switch r.Op {
		case "exists":
			parts[i] = r.Key
		case "!exists":
			parts[i] = "!" + r.Key
		case "in", "notin":
			parts[i] = r.Key + " " + r.Op + " (" + strings.Join(r.Values, ",") + ")"
		default:
			parts[i] = r.Key + r.Op + r.Values[0]
		}
	}
	return strings.Join(parts, ",")
}
