// Package manifest reads Kubernetes YAML as kubectld takes it: ${VAR}
// filled from a stack's answers, documents split with their file, number
// and line, and a template folder told apart from a Helm chart. It is pure
// (no client), so the engine's validation, the CLI and kubectld agree.
package manifest

import (
	"fmt"
	"sort"
	"strings"
)

// MissingError names every ${VAR} without an answer.
type MissingError struct {
	File  string
	Names []string // sorted, each once
	Lines map[string]int
}

func (e *MissingError) Error() string {
	parts := make([]string, len(e.Names))
	for i, n := range e.Names {
		parts[i] = fmt.Sprintf("${%s} (line %d)", n, e.Lines[n])
	}
	return fmt.Sprintf("%s: no answer for %s: add them to the answers file", e.File, strings.Join(parts, ", "))
}

// Interpolate fills ${VAR} in text from answers, as compose files do:
// ${VAR}, ${VAR:-default} (default when unset or empty), ${VAR-default}
// (default when unset), ${VAR:?message} / ${VAR?message} (required), and
// $${ for a literal ${. A bare $VAR or $(VAR) is left alone: in Kubernetes
// YAML those belong to shells and to the kubelet's env expansion. Every
// missing variable is named in one error.
func Interpolate(file, text string, answers map[string]string) (string, error) {
	if !strings.Contains(text, "${") {
		return text, nil
	}
	var b strings.Builder
	missing := &MissingError{File: file, Lines: map[string]int{}}
	line := 1
	for i := 0; i < len(text); {
		c := text[i]
		if c == '\n' {
			line++
		}
		if c != '$' || i+1 >= len(text) {
			b.WriteByte(c)
			i++
			continue
		}
		if strings.HasPrefix(text[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if text[i+1] != '{' {
			b.WriteByte(c)
			i++
			continue
		}
		end := strings.IndexByte(text[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("%s:%d: ${ is not closed by }", file, line)
		}
		expr := text[i+2 : i+2+end]
		if strings.ContainsAny(expr, "\n") {
			return "", fmt.Errorf("%s:%d: ${ is not closed by } on the same line", file, line)
		}
		val, err := expand(expr, answers)
		if err != nil {
			var me *missingVar
			if asMissing(err, &me) {
				if _, seen := missing.Lines[me.name]; !seen {
					missing.Names = append(missing.Names, me.name)
					missing.Lines[me.name] = line
				}
			} else {
				return "", fmt.Errorf("%s:%d: %v", file, line, err)
			}
		}
		b.WriteString(val)
		i += 2 + end + 1
	}
	if len(missing.Names) > 0 {
		sort.Strings(missing.Names)
		return "", missing
	}
	return b.String(), nil
}

type missingVar struct{ name, msg string }

func (m *missingVar) Error() string { return "no answer for ${" + m.name + "}" }

func asMissing(err error, out **missingVar) bool {
	m, ok := err.(*missingVar)
	if ok {
		*out = m
	}
	return ok
}

func expand(expr string, answers map[string]string) (string, error) {
	n := 0
	for n < len(expr) && (expr[n] == '_' || expr[n] >= 'a' && expr[n] <= 'z' || expr[n] >= 'A' && expr[n] <= 'Z' || n > 0 && expr[n] >= '0' && expr[n] <= '9') {
		n++
	}
	name, rest := expr[:n], expr[n:]
	op, arg := "", ""
	for _, o := range []string{":-", ":?", "-", "?"} {
		if strings.HasPrefix(rest, o) {
			op, arg = o, rest[len(o):]
			break
		}
	}
	if !validName(name) || (op == "" && rest != "") {
		return "", fmt.Errorf("${%s} is not a variable (want ${NAME}, ${NAME:-default} or ${NAME:?message})", expr)
	}
	v, set := answers[name]
	switch op {
	case "":
		if !set {
			return "", &missingVar{name: name}
		}
	case ":-":
		if v == "" {
			v = arg
		}
	case "-":
		if !set {
			v = arg
		}
	case ":?", "?":
		if !set || (op == ":?" && v == "") {
			return "", &missingVar{name: name, msg: arg}
		}
	}
	return v, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
