package stacks

import (
	"bytes"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

// Rancher 1.x files, read as Rancher read them: Go templates
// (docker-compose.yml.tpl), docker-compose v1 (services at the top level),
// rancher-compose v1 and catalog blocks, and the keys Rancher took that
// compose-go does not. Everything here turns such files into the compose v2
// shape the rest of the package reads, plus settings and warnings.

// Warning is something Rancher accepted that drover reads differently or
// ignores; it does not stop a stack.
type Warning struct {
	File string
	Line int
	Msg  string
}

func (w Warning) String() string {
	if w.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", w.File, w.Line, w.Msg)
	}
	return w.File + ": " + w.Msg
}

// --- Go templates (docker-compose.yml.tpl)

// IsTemplate says whether a compose file is a Go template Rancher rendered
// before reading it.
func IsTemplate(name string) bool { return strings.HasSuffix(name, ".tpl") }

var tplLineRe = regexp.MustCompile(`^template: [^:]*:(\d+):(?:\d+:)?\s*`)

// RenderTemplate renders a docker-compose.yml.tpl as Rancher's catalog did:
// the data is .Values (the answers, as strings) and .Stack (.Stack.Name);
// the functions are sprig's and splitPreserveQuotes. A file that starts with
// "# notemplating" is left as it is. An error names the line.
func RenderTemplate(f File, stackName string, answers map[string]string) (File, error) {
	trimmed := strings.TrimSpace(string(f.Content))
	if strings.HasPrefix(trimmed, "#notemplating") || strings.HasPrefix(trimmed, "# notemplating") {
		return f, nil
	}
	funcs := sprig.HermeticTxtFuncMap()
	funcs["splitPreserveQuotes"] = SplitPreserveQuotes
	boundGenerators(funcs)
	t, err := template.New(f.Name).Funcs(funcs).Option("missingkey=zero").Parse(string(f.Content))
	if err != nil {
		return f, templateError(f.Name, err)
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			dropLegacyArgs(tt.Tree.Root)
		}
	}
	values := map[string]string{}
	for k, v := range answers {
		values[k] = v
	}
	out := &limitedBuffer{max: maxRendered}
	data := map[string]any{"Values": values, "Stack": map[string]string{"Name": stackName}}
	if err := t.Execute(out, data); err != nil {
		if out.over {
			return f, &Error{File: f.Name, Msg: fmt.Sprintf("the rendered template is over %d KiB", maxRendered>>10)}
		}
		return f, templateError(f.Name, err)
	}
	return File{Name: f.Name, Content: out.Bytes()}, nil
}

// limitedBuffer stops a template that writes too much.
type limitedBuffer struct {
	bytes.Buffer
	max  int
	over bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		b.over = true
		return 0, fmt.Errorf("output over %d bytes", b.max)
	}
	return b.Buffer.Write(p)
}

// maxGenerated bounds sprig's list and string generators, which would
// otherwise allocate whatever a template asks before writing a byte.
const maxGenerated = 100000

func boundGenerators(funcs template.FuncMap) {
	until := funcs["until"].(func(int) []int)
	funcs["until"] = func(n int) ([]int, error) {
		if n > maxGenerated {
			return nil, fmt.Errorf("until %d: at most %d", n, maxGenerated)
		}
		return until(n), nil
	}
	untilStep := funcs["untilStep"].(func(int, int, int) []int)
	funcs["untilStep"] = func(start, stop, step int) ([]int, error) {
		if step == 0 || (stop-start)/step > maxGenerated {
			return nil, fmt.Errorf("untilStep %d %d %d: at most %d items", start, stop, step, maxGenerated)
		}
		return untilStep(start, stop, step), nil
	}
	funcs["repeat"] = func(count int, s string) (string, error) {
		if count < 0 || count*len(s) > maxRendered {
			return "", fmt.Errorf("repeat %d: over %d bytes", count, maxRendered)
		}
		return strings.Repeat(s, count), nil
	}
	seq := funcs["seq"].(func(...int) string)
	funcs["seq"] = func(p ...int) (string, error) {
		span := 0
		switch len(p) {
		case 1:
			span = p[0]
		case 2:
			span = p[1] - p[0]
		case 3:
			if p[1] == 0 {
				return "", fmt.Errorf("seq: a step of 0")
			}
			span = (p[2] - p[0]) / p[1]
		}
		if span > maxGenerated || -span > maxGenerated {
			return "", fmt.Errorf("seq: at most %d numbers", maxGenerated)
		}
		return seq(p...), nil
	}
}

// dropLegacyArgs keeps only the first word of a command that starts with
// a parenthesised pipeline and has more words after it:
// "if (ne .Values.A "x") and .Values.B" is "if (ne .Values.A "x")". Go
// before 1.14 (which Rancher's catalog ran) evaluated such a command that
// way, ignoring the rest; Go since refuses it (golang/go#31810), and
// catalog templates written against the old behaviour are common.
func dropLegacyArgs(n parse.Node) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			dropLegacyArgs(c)
		}
	case *parse.ActionNode:
		dropLegacyArgs(n.Pipe)
	case *parse.IfNode:
		dropLegacyArgs(n.Pipe)
		dropLegacyArgs(n.List)
		dropLegacyArgs(n.ElseList)
	case *parse.RangeNode:
		dropLegacyArgs(n.Pipe)
		dropLegacyArgs(n.List)
		dropLegacyArgs(n.ElseList)
	case *parse.WithNode:
		dropLegacyArgs(n.Pipe)
		dropLegacyArgs(n.List)
		dropLegacyArgs(n.ElseList)
	case *parse.TemplateNode:
		dropLegacyArgs(n.Pipe)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			if len(c.Args) > 1 {
				if _, ok := c.Args[0].(*parse.PipeNode); ok {
					c.Args = c.Args[:1]
				}
			}
			for _, a := range c.Args {
				dropLegacyArgs(a)
			}
		}
	}
}

// maxRendered bounds what a template may produce (a loop can make a lot).
const maxRendered = 4 << 20

func templateError(file string, err error) error {
	msg := err.Error()
	e := &Error{File: file}
	if m := tplLineRe.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		msg = msg[len(m[0]):]
	}
	e.Msg = "template: " + msg
	return e
}

// SplitPreserveQuotes splits s at spaces outside quotes, keeping the
// quotes (Rancher's catalog template function).
func SplitPreserveQuotes(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	for _, r := range s {
		switch {
		case unicode.In(r, unicode.Quotation_Mark):
			in = !in
			cur.WriteRune(r)
		case unicode.IsSpace(r) && !in:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}

// --- YAML trees

func mapping(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	return n
}

func get(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func keyNode(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i]
		}
	}
	return nil
}

func del(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

func set(m *yaml.Node, key string, v *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content[i+1] = v
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
}

func str(v string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: v} }

// dedupe keeps the last of repeated mapping keys, as PyYAML (and so
// Rancher) did, and says which.
func dedupe(file string, n *yaml.Node, warn func(Warning)) {
	if n == nil {
		return
	}
	if n.Kind == yaml.MappingNode {
		last := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Kind == yaml.ScalarNode {
				last[n.Content[i].Value] = i
			}
		}
		var kept []*yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind == yaml.ScalarNode && last[k.Value] != i {
				warn(Warning{File: file, Line: k.Line, Msg: fmt.Sprintf("key %q is repeated (line %d); the last one counts", k.Value, n.Content[last[k.Value]].Line)})
				continue
			}
			kept = append(kept, k, n.Content[i+1])
		}
		n.Content = kept
	}
	for _, c := range n.Content {
		dedupe(file, c, warn)
	}
}

// isV1 says whether a compose or rancher-compose tree has its services at
// the top level (no services: and no version:).
func isV1(root *yaml.Node) bool {
	m := mapping(root)
	if m == nil {
		return false
	}
	if get(m, "services") != nil {
		return false
	}
	if v := get(m, "version"); v != nil {
		return v.Value == "1"
	}
	return true
}

// --- docker-compose.yml

// extras is what a Rancher docker-compose file says beyond compose: the
// settings of its services and the warnings.
type extras struct {
	settings map[string]*Settings
	warnings []Warning
	lb       map[string]*listeners
	answers  map[string]string // fill ${VAR} in what is read before compose-go
}

// listeners are a Rancher LB service's ports as written.
type listeners struct{ specs []listener }

type listener struct {
	source, target int
	protocol       string // "" when the file names none
}

func (l *listeners) add(spec string) {
	s := spec
	proto := ""
	if i := strings.LastIndex(s, "/"); i >= 0 {
		proto, s = strings.ToLower(s[i+1:]), s[:i]
	}
	parts := strings.Split(s, ":")
	var nums []int
	for _, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil {
			nums = nil // an address or a range: not a listener Rancher took
			break
		}
		nums = append(nums, n)
	}
	switch {
	case len(nums) == 1:
		l.specs = append(l.specs, listener{nums[0], nums[0], proto})
	case len(nums) >= 2:
		l.specs = append(l.specs, listener{nums[len(nums)-2], nums[len(nums)-1], proto})
	case len(parts) == 3: // ip:source:target
		a, e1 := strconv.Atoi(parts[1])
		b, e2 := strconv.Atoi(parts[2])
		if e1 == nil && e2 == nil {
			l.specs = append(l.specs, listener{a, b, proto})
		}
	}
}

func (x *extras) lbListeners(svc string) *listeners {
	if x.lb == nil {
		x.lb = map[string]*listeners{}
	}
	if x.lb[svc] == nil {
		x.lb[svc] = &listeners{}
	}
	return x.lb[svc]
}

func isLBImage(image string) bool {
	name, _, _ := strings.Cut(image, ":")
	return name == "rancher/load-balancer-service" || name == "rancher/lb-service-haproxy"
}

func (x *extras) warn(w Warning) { x.warnings = append(x.warnings, w) }

func (x *extras) settingsOf(svc string) *Settings {
	if x.settings == nil {
		x.settings = map[string]*Settings{}
	}
	s := x.settings[svc]
	if s == nil {
		s = &Settings{}
		x.settings[svc] = s
	}
	return s
}

// ignoredServiceKeys are service keys Rancher took whose job drover does
// another way; they are dropped with a warning.
var ignoredServiceKeys = map[string]string{
	"network_driver":  "drover's overlay network (drover net) replaces Rancher network drivers",
	"storage_driver":  "storage drivers are not part of drover; volumes use Docker's drivers",
	"system":          "system stacks are not a separate kind in drover",
	"scale_policy":    "scale policies are not supported; scale is fixed",
	"description":     "",
	"service_schemas": "",
	"vm":              "virtual machines are not supported",
	"disks":           "virtual machines are not supported",
	"memory_mb":       "virtual machines are not supported",
}

// settingKeys are Settings keys Rancher also took in docker-compose.yml.
var settingKeys = []string{"lb_config", "retain_ip", "start_on_create", "drain_timeout_ms", "upgrade_strategy", "external_ips", "kind"}

// normalizeCompose rewrites a Rancher docker-compose file (v1 or v2) into
// compose v2: v1's top-level services under services:, v1-only keys in
// their v2 spelling, named volumes declared, Rancher's keys moved into
// settings.
func normalizeCompose(f File, x *extras) (File, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(f.Content, &root); err != nil {
		return f, &Error{File: f.Name, Line: yamlErrLine(err), Msg: "not valid YAML: " + cleanYAMLErr(err)}
	}
	top := mapping(&root)
	if top == nil {
		if root.Kind == 0 || (root.Kind == yaml.DocumentNode && len(root.Content) == 0) {
			return f, &Error{File: f.Name, Msg: "empty file: want services"}
		}
		return f, &Error{File: f.Name, Line: 1, Msg: "not a mapping of services"}
	}
	dedupe(f.Name, top, x.warn)
	services := get(top, "services")
	if isV1(&root) {
		services = &yaml.Node{Kind: yaml.MappingNode, Content: top.Content}
		top = &yaml.Node{Kind: yaml.MappingNode}
		set(top, "version", str("2"))
		set(top, "services", services)
	}
	if services == nil || services.Kind != yaml.MappingNode {
		return f, nil // compose-go reports what is wrong
	}
	volumes := get(top, "volumes")
	if volumes != nil && volumes.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(volumes.Content); i += 2 {
			if v := volumes.Content[i+1]; v.Kind == yaml.MappingNode {
				if k := keyNode(v, "per_container"); k != nil {
					x.warn(Warning{File: f.Name, Line: k.Line, Msg: fmt.Sprintf("volume %s: per_container is Rancher's; drover gives each container of the service the same named volume on its host", volumes.Content[i].Value)})
					del(v, "per_container")
				}
			}
		}
	}
	for _, section := range []string{"volumes", "networks"} {
		if m := get(top, section); m != nil && m.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(m.Content); i += 2 {
				if v := m.Content[i+1]; v.Kind == yaml.MappingNode {
					dropNulls(f.Name, section+"."+m.Content[i].Value, v, x.warn)
				}
			}
		}
	}
	declared := map[string]bool{}
	if volumes != nil {
		for i := 0; i+1 < len(volumes.Content); i += 2 {
			declared[volumes.Content[i].Value] = true
		}
	}
	implicit := map[string]string{} // volume -> driver
	var implicitOrder []string
	for i := 0; i+1 < len(services.Content); i += 2 {
		name, svc := services.Content[i].Value, services.Content[i+1]
		if svc.Kind != yaml.MappingNode {
			continue
		}
		dropNulls(f.Name, "services."+name, svc, x.warn)
		if err := normalizeService(f.Name, name, svc, x); err != nil {
			return f, err
		}
		driver := ""
		if d := get(svc, "volume_driver"); d != nil {
			driver = d.Value
			del(svc, "volume_driver")
		}
		if vs := get(svc, "volumes"); vs != nil && vs.Kind == yaml.SequenceNode {
			for _, v := range vs.Content {
				src := ""
				if v.Kind == yaml.ScalarNode {
					src, _, _ = strings.Cut(v.Value, ":")
					if !strings.Contains(v.Value, ":") {
						src = ""
					}
				} else if s := get(v, "source"); s != nil && (get(v, "type") == nil || get(v, "type").Value == "volume") {
					src = s.Value
				}
				if isNamedVolume(src) && !declared[src] {
					if _, seen := implicit[src]; !seen {
						implicitOrder = append(implicitOrder, src)
					}
					if implicit[src] == "" {
						implicit[src] = driver
					}
				}
			}
		}
	}
	if len(implicitOrder) > 0 {
		if volumes == nil || volumes.Kind != yaml.MappingNode {
			volumes = &yaml.Node{Kind: yaml.MappingNode}
			set(top, "volumes", volumes)
		}
		for _, v := range implicitOrder {
			spec := &yaml.Node{Kind: yaml.MappingNode}
			if d := implicit[v]; d != "" && d != "local" {
				set(spec, "driver", str(d))
			}
			set(volumes, v, spec)
		}
	}
	out, err := yaml.Marshal(top)
	if err != nil {
		return f, &Error{File: f.Name, Msg: err.Error()}
	}
	return File{Name: f.Name, Content: out}, nil
}

func isNamedVolume(src string) bool {
	return isPlainName(src) && (unicode.IsLetter(rune(src[0])) || unicode.IsDigit(rune(src[0])))
}

func isPlainName(s string) bool {
	if s == "" || strings.HasPrefix(s, ".") || strings.HasPrefix(s, "~") || strings.HasPrefix(s, "/") {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r == '-' || r == '.' || unicode.IsLetter(r) || unicode.IsDigit(r)) {
			return false
		}
	}
	return true
}

func normalizeService(file, name string, svc *yaml.Node, x *extras) error {
	warnKey := func(key, why string) {
		if k := keyNode(svc, key); k != nil {
			msg := fmt.Sprintf("services.%s.%s is ignored", name, key)
			if why != "" {
				msg += ": " + why
			}
			x.warn(Warning{File: file, Line: k.Line, Msg: msg})
		}
	}
	// v1 spellings.
	if n := get(svc, "net"); n != nil {
		if get(svc, "network_mode") == nil {
			set(svc, "network_mode", n)
		}
		del(svc, "net")
	}
	logDriver, logOpt := get(svc, "log_driver"), get(svc, "log_opt")
	if logDriver != nil || logOpt != nil {
		logging := &yaml.Node{Kind: yaml.MappingNode}
		if logDriver != nil {
			set(logging, "driver", logDriver)
		}
		if logOpt != nil {
			set(logging, "options", logOpt)
		}
		if get(svc, "logging") == nil {
			set(svc, "logging", logging)
		}
		del(svc, "log_driver")
		del(svc, "log_opt")
	}
	if d := get(svc, "dockerfile"); d != nil {
		if b := get(svc, "build"); b != nil && b.Kind == yaml.ScalarNode {
			build := &yaml.Node{Kind: yaml.MappingNode}
			set(build, "context", b)
			set(build, "dockerfile", d)
			set(svc, "build", build)
		}
		del(svc, "dockerfile")
	}
	// A Rancher LB's ports and exposed ports are its listeners, as
	// written ("3306:3307/tcp": listen on 3306, to 3307, TCP).
	if img := get(svc, "image"); img != nil && isLBImage(img.Value) {
		for _, key := range []string{"ports", "expose"} {
			if e := get(svc, key); e != nil && e.Kind == yaml.SequenceNode {
				for _, p := range e.Content {
					if p.Kind == yaml.ScalarNode {
						spec, err := substitute(p.Value, x.answers)
						if err != nil {
							return &Error{File: file, Line: p.Line, Key: "services." + name + "." + key, Msg: err.Error()}
						}
						x.lbListeners(name).add(spec)
					}
				}
			}
		}
	}
	// expose took "host:container" in Rancher's files; only the container
	// port means anything.
	if e := get(svc, "expose"); e != nil && e.Kind == yaml.SequenceNode {
		for _, p := range e.Content {
			if i := strings.LastIndex(p.Value, ":"); i >= 0 {
				p.Value = p.Value[i+1:]
				p.Tag = "!!str"
			}
		}
	}
	// Rancher's keys in docker-compose.yml.
	if hc := get(svc, "health_check"); hc != nil {
		var h HealthSettings
		if err := decodeStrict(file, hc, &h, "services."+name+".health_check"); err != nil {
			return err
		}
		x.settingsOf(name).HealthCheck = &h
		del(svc, "health_check")
	}
	if lbc := get(svc, "load_balancer_config"); lbc != nil {
		if err := loadBalancerConfig(file, name, lbc, x.settingsOf(name)); err != nil {
			return err
		}
		del(svc, "load_balancer_config")
	}
	if m := get(svc, "metadata"); m != nil {
		var md map[string]any
		if err := m.Decode(&md); err != nil {
			return &Error{File: file, Line: m.Line, Key: "services." + name + ".metadata", Msg: err.Error()}
		}
		x.settingsOf(name).Metadata = md
		del(svc, "metadata")
	}
	var moved *yaml.Node
	for _, k := range settingKeys {
		if v := get(svc, k); v != nil {
			if moved == nil {
				moved = &yaml.Node{Kind: yaml.MappingNode, Line: keyNode(svc, k).Line}
			}
			set(moved, k, v)
			del(svc, k)
		}
	}
	if moved != nil {
		if err := checkKeys(file, moved, reflect.TypeOf(Settings{}), "services."+name); err != nil {
			return err
		}
		var st Settings
		if err := decodeStrict(file, moved, &st, "services."+name); err != nil {
			return err
		}
		x.settingsOf(name).merge(&st)
	}
	keys := make([]string, 0, len(ignoredServiceKeys))
	for k := range ignoredServiceKeys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if get(svc, k) != nil {
			why := ignoredServiceKeys[k]
			if why == "" {
				why = "it belongs in rancher-compose.yml"
			}
			warnKey(k, why)
			del(svc, k)
		}
	}
	return nil
}

// loadBalancerConfig reads Rancher 1.1's load_balancer_config (HAProxy's
// global and defaults sections) into lb_config.config.
func loadBalancerConfig(file, svc string, n *yaml.Node, s *Settings) error {
	var lbc struct {
		Name          string `yaml:"name"`
		Description   string `yaml:"description"`
		HAProxyConfig *struct {
			Global   string `yaml:"global"`
			Defaults string `yaml:"defaults"`
		} `yaml:"haproxy_config"`
		LBCookieStickinessPolicy  *StickinessSettings `yaml:"lb_cookie_stickiness_policy"`
		AppCookieStickinessPolicy *StickinessSettings `yaml:"app_cookie_stickiness_policy"`
	}
	if err := decodeStrict(file, n, &lbc, "services."+svc+".load_balancer_config"); err != nil {
		return err
	}
	if s.LBConfig == nil {
		s.LBConfig = &LBSettings{}
	}
	if h := lbc.HAProxyConfig; h != nil {
		var b strings.Builder
		if strings.TrimSpace(h.Global) != "" {
			b.WriteString("global\n" + indent(h.Global))
		}
		if strings.TrimSpace(h.Defaults) != "" {
			b.WriteString("defaults\n" + indent(h.Defaults))
		}
		s.LBConfig.Config = b.String()
	}
	if p := lbc.LBCookieStickinessPolicy; p != nil {
		s.LBConfig.StickinessPolicy = p
	} else if p := lbc.AppCookieStickinessPolicy; p != nil {
		s.LBConfig.StickinessPolicy = p
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + strings.TrimSpace(l) + "\n")
	}
	return b.String()
}

func decodeStrict(file string, n *yaml.Node, out any, path string) error {
	raw, _ := yaml.Marshal(n)
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		return &Error{File: file, Line: n.Line + yamlErrLine(err) - 1, Key: path, Msg: cleanYAMLErr(err)}
	}
	return nil
}

// merge sets what o sets.
func (s *Settings) merge(o *Settings) {
	dst, src := reflect.ValueOf(s).Elem(), reflect.ValueOf(o).Elem()
	for i := 0; i < src.NumField(); i++ {
		if !src.Field(i).IsZero() {
			dst.Field(i).Set(src.Field(i))
		}
	}
}

// --- rancher-compose.yml and catalog blocks

// Catalog is a rancher-compose.yml's .catalog (or catalog) block.
type Catalog struct {
	Name                  string     `yaml:"name" json:"name,omitempty"`
	Version               string     `yaml:"version" json:"version,omitempty"`
	Description           string     `yaml:"description" json:"description,omitempty"`
	UUID                  string     `yaml:"uuid" json:"uuid,omitempty"`
	MinimumRancherVersion string     `yaml:"minimum_rancher_version" json:"minimumRancherVersion,omitempty"`
	MaximumRancherVersion string     `yaml:"maximum_rancher_version" json:"maximumRancherVersion,omitempty"`
	UpgradeFrom           string     `yaml:"upgrade_from" json:"upgradeFrom,omitempty"`
	Questions             []Question `yaml:"questions" json:"questions,omitempty"`
}

// Question is one answer a catalog template asks for.
type Question struct {
	Variable     string `yaml:"variable" json:"variable"`
	Label        string `yaml:"label" json:"label,omitempty"`
	Description  string `yaml:"description" json:"description,omitempty"`
	Type         string `yaml:"type" json:"type,omitempty"`
	Required     bool   `yaml:"required" json:"required,omitempty"`
	Default      any    `yaml:"default" json:"default,omitempty"`
	Options      []any  `yaml:"options" json:"options,omitempty"`
	Group        string `yaml:"group" json:"group,omitempty"`
	Min          *int   `yaml:"min" json:"min,omitempty"`
	Max          *int   `yaml:"max" json:"max,omitempty"`
	MinLength    *int   `yaml:"minLength" json:"minLength,omitempty"`
	MaxLength    *int   `yaml:"maxLength" json:"maxLength,omitempty"`
	ValidChars   string `yaml:"validChars" json:"validChars,omitempty"`
	InvalidChars string `yaml:"invalidChars" json:"invalidChars,omitempty"`
}

func scalarString(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	case bool:
		return strconv.FormatBool(t)
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

// Answers fills what the questions give defaults for and checks every
// answer against its question: required ones present, ints, floats and
// booleans that parse, enums among their options. Every problem is named.
func (c *Catalog) Answers(file string, given map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range given {
		out[k] = v
	}
	if c == nil {
		return out, nil
	}
	var problems []string
	for _, q := range c.Questions {
		if q.Variable == "" {
			continue
		}
		v, ok := out[q.Variable]
		if !ok && q.Default != nil {
			v, ok = scalarString(q.Default), true
			out[q.Variable] = v
		}
		label := q.Variable
		if q.Label != "" {
			label += fmt.Sprintf(" (%q)", q.Label)
		}
		if !ok || (v == "" && q.Required) {
			if q.Required {
				problems = append(problems, "no answer for required question "+label)
			}
			continue
		}
		if v == "" {
			continue
		}
		switch q.Type {
		case "int":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %q is not an int", label, v))
			} else if (q.Min != nil && n < *q.Min) || (q.Max != nil && n > *q.Max) {
				problems = append(problems, fmt.Sprintf("%s: %d is out of range", label, n))
			}
		case "float":
			if _, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %q is not a number", label, v))
			}
		case "boolean":
			if _, err := strconv.ParseBool(v); err != nil {
				problems = append(problems, fmt.Sprintf("%s: %q is not true or false", label, v))
			}
		case "enum":
			var opts []string
			found := false
			for _, o := range q.Options {
				os := scalarString(o)
				opts = append(opts, os)
				found = found || os == v
			}
			if len(opts) > 0 && !found {
				problems = append(problems, fmt.Sprintf("%s: %q is not one of %s", label, v, strings.Join(opts, ", ")))
			}
		}
		if q.MaxLength != nil && len(v) > *q.MaxLength {
			problems = append(problems, fmt.Sprintf("%s: longer than %d", label, *q.MaxLength))
		}
		if q.MinLength != nil && len(v) < *q.MinLength {
			problems = append(problems, fmt.Sprintf("%s: shorter than %d", label, *q.MinLength))
		}
	}
	if len(problems) > 0 {
		return nil, &Error{File: file, Key: "questions", Msg: strings.Join(problems, "; ")}
	}
	return out, nil
}

// ignoredRancherKeys are rancher-compose service keys drover takes and
// does nothing with (with a warning).
var ignoredRancherKeys = map[string]string{
	"scale_policy":                    "scale policies are not supported; scale is fixed",
	"description":                     "",
	"network_driver":                  "drover's overlay network (drover net) replaces Rancher network drivers",
	"storage_driver":                  "volumes use Docker's drivers",
	"service_schemas":                 "",
	"system":                          "",
	"vm":                              "virtual machines are not supported",
	"disks":                           "virtual machines are not supported",
	"memory_mb":                       "virtual machines are not supported",
	"assign_service_ip_address":       "every drover service has a virtual IP",
	"lb_target_config":                "",
	"disable_auto_recreate":           "",
	"io.rancher.container.pull_image": "use the label in docker-compose.yml",
}

// readRancherCompose reads a rancher-compose.yml (v1 or v2, with or
// without a catalog block): its catalog, and the file in v2 shape with
// Rancher's extra keys dealt with.
func readRancherCompose(f File, warn func(Warning)) (*yaml.Node, *Catalog, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(f.Content, &root); err != nil {
		return nil, nil, &Error{File: f.Name, Line: yamlErrLine(err), Msg: "not valid YAML: " + cleanYAMLErr(err)}
	}
	top := mapping(&root)
	if top == nil {
		return &yaml.Node{Kind: yaml.MappingNode}, nil, nil // empty: no settings
	}
	dedupe(f.Name, top, warn)
	var cat *Catalog
	for _, k := range []string{".catalog", "catalog"} {
		if n := get(top, k); n != nil {
			cat = &Catalog{}
			if err := n.Decode(cat); err != nil {
				return nil, nil, &Error{File: f.Name, Line: n.Line, Key: k, Msg: cleanYAMLErr(err)}
			}
			for i, q := range cat.Questions {
				if q.Variable == "" {
					return nil, nil, &Error{File: f.Name, Line: n.Line, Key: fmt.Sprintf("%s.questions[%d]", k, i), Msg: "a question needs a variable"}
				}
			}
			del(top, k)
		}
	}
	// Other dot-prefixed blocks (.stack, ...) are Rancher UI data.
	for i := 0; i+1 < len(top.Content); {
		if k := top.Content[i]; strings.HasPrefix(k.Value, ".") {
			warn(Warning{File: f.Name, Line: k.Line, Msg: fmt.Sprintf("%s is ignored (Rancher UI data)", k.Value)})
			top.Content = append(top.Content[:i], top.Content[i+2:]...)
			continue
		}
		i += 2
	}
	services := get(top, "services")
	if isV1(&root) {
		services = &yaml.Node{Kind: yaml.MappingNode, Content: top.Content}
		top = &yaml.Node{Kind: yaml.MappingNode}
		set(top, "services", services)
	} else if services == nil {
		// version: '2' and no services: (Rancher's loaders read the
		// v1 shape anyway).
		services = &yaml.Node{Kind: yaml.MappingNode}
		for i := 0; i+1 < len(top.Content); i += 2 {
			if k := top.Content[i]; k.Value != "version" {
				services.Content = append(services.Content, k, top.Content[i+1])
			}
		}
		top = &yaml.Node{Kind: yaml.MappingNode}
		set(top, "services", services)
	} else if services.Kind == yaml.MappingNode {
		// A v1-style entry beside services: (Rancher's loaders read
		// either shape): one more service's settings.
		for i := 0; i+1 < len(top.Content); i += 2 {
			k := top.Content[i]
			if k.Value != "services" && k.Value != "version" && get(services, k.Value) == nil {
				services.Content = append(services.Content, k, top.Content[i+1])
			}
		}
	}
	if services != nil && services.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(services.Content); i += 2 {
			name, svc := services.Content[i].Value, services.Content[i+1]
			if svc.Kind != yaml.MappingNode {
				continue
			}
			if lbc := get(svc, "load_balancer_config"); lbc != nil {
				var st Settings
				if err := loadBalancerConfig(f.Name, name, lbc, &st); err != nil {
					return nil, nil, err
				}
				lb := get(svc, "lb_config")
				if lb == nil {
					lb = &yaml.Node{Kind: yaml.MappingNode}
					set(svc, "lb_config", lb)
				}
				if st.LBConfig.Config != "" && get(lb, "config") == nil {
					set(lb, "config", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: st.LBConfig.Config, Style: yaml.LiteralStyle})
				}
				if sp := st.LBConfig.StickinessPolicy; sp != nil && get(lb, "stickiness_policy") == nil {
					var n yaml.Node
					n.Encode(sp)
					set(lb, "stickiness_policy", &n)
				}
				del(svc, "load_balancer_config")
			}
			// Rancher 1.1 kept an LB's certificates beside lb_config.
			for _, k := range []string{"default_cert", "certs"} {
				if v := get(svc, k); v != nil {
					lb := get(svc, "lb_config")
					if lb == nil {
						lb = &yaml.Node{Kind: yaml.MappingNode}
						set(svc, "lb_config", lb)
					}
					if get(lb, k) == nil {
						set(lb, k, v)
					}
					del(svc, k)
				}
			}
			keys := make([]string, 0, len(ignoredRancherKeys))
			for k := range ignoredRancherKeys {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				if kn := keyNode(svc, k); kn != nil {
					msg := fmt.Sprintf("services.%s.%s is ignored", name, k)
					if why := ignoredRancherKeys[k]; why != "" {
						msg += ": " + why
					}
					warn(Warning{File: f.Name, Line: kn.Line, Msg: msg})
					del(svc, k)
				}
			}
		}
	}
	del(top, "version")
	return top, cat, nil
}

// substituteNodes fills ${VAR} in every string of a tree, as Rancher did
// on parsed values (so a multi-line answer stays inside its block). A
// plain scalar is re-typed after ("scale: ${n}" becomes a number).
func substituteNodes(file string, n *yaml.Node, answers map[string]string) error {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "$") {
		v, err := substitute(n.Value, answers)
		if err != nil {
			return &Error{File: file, Line: n.Line, Msg: err.Error()}
		}
		if v != n.Value {
			n.Value = v
			if n.Style == 0 || n.Style == yaml.TaggedStyle {
				n.Tag = ""
			}
		}
	}
	for _, c := range n.Content {
		if err := substituteNodes(file, c, answers); err != nil {
			return err
		}
	}
	return nil
}

// dropNulls removes keys with nothing under them ("environment:" alone, or
// a template that rendered to nothing), which Rancher read as unset and
// compose-go refuses.
func dropNulls(file, path string, m *yaml.Node, warn func(Warning)) {
	var kept []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null" {
			warn(Warning{File: file, Line: k.Line, Msg: fmt.Sprintf("%s.%s has no value; it is left unset", path, k.Value)})
			continue
		}
		kept = append(kept, k, v)
	}
	m.Content = kept
}
