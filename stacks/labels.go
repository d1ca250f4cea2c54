package stacks

import (
	"fmt"
	"sort"
	"strings"
)

// Label prefixes: drover's own, and Rancher 1.x's spelling of the same keys,
// so Rancher compose files run unchanged.
const (
	PrefixDrover  = "io.drover."
	PrefixRancher = "io.rancher."
)

// Label keys, without prefix.
const (
	KeyGlobal         = "scheduler.global"
	KeyAffinityPrefix = "scheduler.affinity:"
	KeySidekicks      = "sidekicks"
	KeyStartOnce      = "container.start_once"
	KeyPullImage      = "container.pull_image"
	KeyDNS            = "container.dns"
	KeySelector       = "service.selector.container"
	KeyNetwork        = "container.network"
)

// Label reads key under either prefix; drover's spelling wins if both are set.
func Label(labels map[string]string, key string) (string, bool) {
	if v, ok := labels[PrefixDrover+key]; ok {
		return v, true
	}
	v, ok := labels[PrefixRancher+key]
	return v, ok
}

// LabelBool reads a boolean label ("true"/"false", any case).
func LabelBool(labels map[string]string, key string) bool {
	v, _ := Label(labels, key)
	return strings.EqualFold(strings.TrimSpace(v), "true")
}

// Affinity kinds.
const (
	OnHostLabel      = "host_label"
	OnContainerLabel = "container_label"
	OnContainer      = "container"
)

// Rule is one scheduling constraint from a scheduler.affinity label.
type Rule struct {
	On    string // host_label, container_label, container
	Soft  bool   // preference, not requirement
	Not   bool   // _ne: must not (or prefer not)
	Key   string // for label rules
	Value string // label value, or the container name for "container"
	Label string // the label it came from, for messages
}

func (r Rule) String() string {
	op := "="
	if r.Not {
		op = "!="
	}
	kind := "must"
	if r.Soft {
		kind = "should"
	}
	if r.On == OnContainer {
		return fmt.Sprintf("%s: host %s run container %s%q", r.Label, kind, map[bool]string{true: "not ", false: ""}[r.Not], r.Value)
	}
	return fmt.Sprintf("%s: host %s have %s %s%s%s", r.Label, kind, strings.ReplaceAll(r.On, "_", " "), r.Key, op, r.Value)
}

// Affinity parses every scheduler.affinity:* label in labels, under either
// prefix. Unknown affinity kinds and malformed values are errors naming the
// label.
func Affinity(labels map[string]string) ([]Rule, error) {
	var rules []Rule
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, full := range keys {
		var rest string
		switch {
		case strings.HasPrefix(full, PrefixDrover+KeyAffinityPrefix):
			rest = strings.TrimPrefix(full, PrefixDrover+KeyAffinityPrefix)
		case strings.HasPrefix(full, PrefixRancher+KeyAffinityPrefix):
			rest = strings.TrimPrefix(full, PrefixRancher+KeyAffinityPrefix)
		default:
			continue
		}
		base := rest
		soft, not := false, false
		if b, ok := strings.CutSuffix(base, "_ne"); ok {
			base, not = b, true
		}
		if b, ok := strings.CutSuffix(base, "_soft"); ok {
			base, soft = b, true
		}
		switch base {
		case OnHostLabel, OnContainerLabel, OnContainer:
		default:
			return nil, fmt.Errorf("label %s: unknown affinity %q; use host_label, container_label or container, with optional _soft, _ne or _soft_ne", full, rest)
		}
		for _, term := range splitList(labels[full]) {
			r := Rule{On: base, Soft: soft, Not: not, Label: full}
			if base == OnContainer {
				r.Value = term
			} else {
				k, v, ok := strings.Cut(term, "=")
				if !ok || strings.TrimSpace(k) == "" {
					return nil, fmt.Errorf("label %s: %q is not key=value", full, term)
				}
				r.Key, r.Value = strings.TrimSpace(k), strings.TrimSpace(v)
			}
			rules = append(rules, r)
		}
	}
	return rules, nil
}

// Sidekicks lists the sidekick service names a primary names.
func Sidekicks(labels map[string]string) []string {
	v, _ := Label(labels, KeySidekicks)
	return splitList(v)
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
