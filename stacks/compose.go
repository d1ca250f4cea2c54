// Package stacks turns stack files into engine services: compose files
// (parsed by compose-go, with ${VAR} filled from the stack's answers), drover
// settings in the x-drover extension or a Rancher 1.x rancher-compose.yml,
// and the io.drover.* / io.rancher.* labels. Errors name the file, line and
// key, and say what is allowed; a file that fails changes nothing.
package stacks

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v3"

	"github.com/drover/drover/api"
)

// File is one stack file.
type File struct {
	Name    string
	Content []byte
}

// Service is one engine service a stack file declares (spec.stackId unset).
type Service struct {
	Name   string
	Labels map[string]string
	Spec   api.ServiceSpec
}

// Error is a problem in a stack file, with where it is.
type Error struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	return b.String() + ": " + e.Msg
}

// doc is one file's YAML tree, kept to find the line of a key path.
type doc struct {
	name string
	root *yaml.Node
	v1   bool // services at the top level: "services" is not in paths
}

func parseDoc(f File) (*doc, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(f.Content, &root); err != nil {
		return nil, &Error{File: f.Name, Line: yamlErrLine(err), Msg: "not valid YAML: " + cleanYAMLErr(err)}
	}
	return &doc{name: f.Name, root: &root, v1: isV1(&root)}, nil
}

var yamlLineRe = regexp.MustCompile(`line (\d+)`)

func yamlErrLine(err error) int {
	if m := yamlLineRe.FindStringSubmatch(err.Error()); m != nil {
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return 0
}

func cleanYAMLErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	return yamlLineRe.ReplaceAllString(strings.TrimPrefix(s, "unmarshal errors:\n  "), "line $1")
}

// lookup returns the key and value nodes at a path (services, web, ports,
// 0); for a sequence element the key is the element itself.
func (d *doc) lookup(path ...string) (key, val *yaml.Node) {
	if d.v1 && len(path) > 0 && path[0] == "services" {
		path = path[1:]
	}
	n := d.root
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	key = n
	for _, p := range path {
		if n == nil {
			return nil, nil
		}
		switch n.Kind {
		case yaml.MappingNode:
			var k, v *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == p {
					k, v = n.Content[i], n.Content[i+1]
				}
			}
			key, n = k, v
		case yaml.SequenceNode:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil, nil
			}
			key, n = n.Content[i], n.Content[i]
		default:
			return nil, nil
		}
	}
	return key, n
}

// find returns the node whose line best names a path: the key.
func (d *doc) find(path ...string) *yaml.Node {
	k, _ := d.lookup(path...)
	return k
}

// locate finds which file and line a key path is on; later files override
// earlier ones, so the last file holding it is the one to blame.
func locate(docs []*doc, path ...string) (string, int) {
	for i := len(docs) - 1; i >= 0; i-- {
		if n := docs[i].find(path...); n != nil {
			return docs[i].name, n.Line
		}
	}
	if len(docs) > 0 {
		return docs[0].name, 0
	}
	return "", 0
}

var composePathRe = regexp.MustCompile(`services\.[A-Za-z0-9_.-]+`)

var falseSchemaRe = regexp.MustCompile(`(services\.[A-Za-z0-9_.-]+)\.([A-Za-z0-9_-]+) false schema`)

// composeError turns a compose-go error into one with a file and line.
func composeError(docs []*doc, err error) error {
	orig := err.Error()
	msg := orig
	if m := falseSchemaRe.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("unknown key %q in %s; see the Compose specification for the keys a service takes (drover settings go under x-drover)", m[2], m[1])
	}
	msg = strings.TrimPrefix(msg, "validating ")
	if m := composePathRe.FindString(orig); m != "" {
		parts := strings.Split(m, ".")
		for len(parts) > 1 {
			if f, line := locate(docs, parts...); line > 0 {
				return &Error{File: f, Line: line, Key: strings.Join(parts, "."), Msg: msg}
			}
			parts = parts[:len(parts)-1]
		}
	}
	f, _ := locate(docs)
	return &Error{File: f, Msg: msg}
}

func init() {
	// compose-go warns through the global logrus logger (obsolete "version",
	// unset variables); drover reports problems as errors instead.
	logrus.SetLevel(logrus.ErrorLevel)
}

// Parse reads a stack: one or more compose files (later ones override
// earlier ones, as with docker-compose -f a -f b), an optional
// rancher-compose.yml, and the answers that fill ${VAR}.
func Parse(ctx context.Context, stackName string, compose []File, rancher *File, answers map[string]string) ([]Service, error) {
	r, err := ParseFull(ctx, stackName, compose, rancher, answers)
	if err != nil {
		return nil, err
	}
	return r.Services, nil
}

// Result is a parsed stack: its services, what Rancher accepted that drover
// reads differently (warnings), the catalog block, and the answers used
// (given ones and question defaults).
type Result struct {
	Services []Service
	Warnings []Warning
	Catalog  *Catalog
	Answers  map[string]string
}

// ParseFull is Parse, with warnings, catalog and answers. Compose files
// may be Rancher 1.x ones: docker-compose.yml.tpl Go templates (rendered
// first), compose v1, rancher-compose v1 with a catalog block.
func ParseFull(ctx context.Context, stackName string, compose []File, rancher *File, answers map[string]string) (*Result, error) {
	if len(compose) == 0 {
		return nil, errors.New("stacks: no compose file given")
	}
	x := &extras{}
	res := &Result{}
	var rtop *yaml.Node
	if rancher != nil {
		var err error
		if rtop, res.Catalog, err = readRancherCompose(*rancher, x.warn); err != nil {
			return nil, err
		}
		if answers, err = res.Catalog.Answers(rancher.Name, answers); err != nil {
			return nil, err
		}
	}
	res.Answers = answers
	x.answers = answers
	var docs []*doc
	var cfs []types.ConfigFile
	for _, f := range compose {
		if IsTemplate(f.Name) {
			var err error
			if f, err = RenderTemplate(f, stackName, answers); err != nil {
				return nil, err
			}
		}
		d, err := parseDoc(f)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
		nf, err := normalizeCompose(f, x)
		if err != nil {
			return nil, err
		}
		warnUnset(f, nf.Content, answers, x)
		cfs = append(cfs, types.ConfigFile{Filename: f.Name, Content: nf.Content})
	}
	env := types.Mapping{}
	for k, v := range answers {
		env[k] = v
	}
	project, err := loader.LoadWithContext(ctx, types.ConfigDetails{WorkingDir: "/", ConfigFiles: cfs, Environment: env}, func(o *loader.Options) {
		o.SetProjectName(stackName, true)
		o.ResolvePaths = false
		o.SkipResolveEnvironment = false
	})
	if err != nil {
		return nil, composeError(docs, err)
	}
	var rdoc *doc
	var rancherSettings map[string]*Settings
	if rancher != nil {
		if rdoc, err = parseDoc(*rancher); err != nil {
			return nil, err
		}
		// Rancher looked settings up by service name: an entry naming no
		// service of the compose file did nothing.
		if svcs := get(rtop, "services"); svcs != nil && svcs.Kind == yaml.MappingNode {
			var kept []*yaml.Node
			for i := 0; i+1 < len(svcs.Content); i += 2 {
				k := svcs.Content[i]
				if _, ok := project.Services[k.Value]; !ok {
					x.warn(Warning{File: rancher.Name, Line: k.Line, Msg: fmt.Sprintf("service %q is not in the compose file; its settings are ignored", k.Value)})
					continue
				}
				kept = append(kept, k, svcs.Content[i+1])
			}
			svcs.Content = kept
		}
		if rancherSettings, err = rancherServices(rancher.Name, rtop, answers); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(project.Services))
	for n := range project.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	built := map[string]*Service{}
	for _, name := range names {
		sc := project.Services[name]
		svc, err := buildService(docs, name, sc, project.Volumes, x)
		if err != nil {
			return nil, err
		}
		settings, err := extensionSettings(docs, name, answers)
		if err != nil {
			return nil, err
		}
		if rs := rancherSettings[name]; rs != nil {
			if settings != nil {
				f, line := locate(docs, "services", name, "x-drover")
				return nil, &Error{File: f, Line: line, Key: "services." + name + ".x-drover", Msg: "service has settings here and in " + rancher.Name + "; keep one"}
			}
			settings = rs
		}
		// Rancher's keys in docker-compose.yml count where rancher-compose
		// says nothing.
		if xs := x.settings[name]; xs != nil {
			merged := *xs
			if settings != nil {
				merged.merge(settings)
			}
			settings = &merged
		}
		if settings != nil && settings.Scale != nil && svc.Spec.Global {
			f, line := locate(docs, "services", name)
			x.warn(Warning{File: f, Line: line, Msg: fmt.Sprintf("service %s is global (one container per host): its scale is ignored", name)})
			settings.Scale = nil
		}
		if settings != nil {
			if err := settings.apply(&svc.Spec); err != nil {
				f, line := locate(docs, "services", name)
				if rancherSettings[name] != nil {
					f, line = rancher.Name, rdoc.find("services", name).Line
				}
				return nil, &Error{File: f, Line: line, Key: "services." + name, Msg: err.Error()}
			}
		}
		expandNames(svc.Labels, stackName, name)
		expandNames(svc.Spec.LaunchConfig.Labels, stackName, name)
		built[name] = svc
	}
	// A load balancer's rules name services of this stack (or stack/name,
	// or a Kubernetes service, which the LB resolves when it runs).
	for _, name := range names {
		lb := built[name].Spec.LBConfig
		if lb == nil {
			continue
		}
		for i, r := range lb.PortRules {
			if r.ServiceID == "" && r.Selector == "" {
				return nil, lbRuleError(docs, rancher, rdoc, rancherSettings, name, i, "service", "a port rule needs a service or a selector")
			}
			if r.Selector != "" {
				if _, err := api.ParseSelector(r.Selector); err != nil {
					return nil, lbRuleError(docs, rancher, rdoc, rancherSettings, name, i, "selector", err.Error())
				}
			}
			if r.ServiceID != "" && !strings.Contains(r.ServiceID, "/") && built[r.ServiceID] == nil {
				return nil, lbRuleError(docs, rancher, rdoc, rancherSettings, name, i, "service", fmt.Sprintf("no service %q in stack %q", r.ServiceID, stackName))
			}
			if r.ServiceID == name {
				return nil, lbRuleError(docs, rancher, rdoc, rancherSettings, name, i, "service", "a load balancer cannot balance to itself")
			}
		}
	}
	// Sidekicks fold into their primary, which names them in a label.
	owner := map[string]string{}
	for _, name := range names {
		svc := built[name]
		for _, sk := range Sidekicks(svc.Spec.LaunchConfig.Labels) {
			f, line := locate(docs, "services", name, "labels")
			where := &Error{File: f, Line: line, Key: "services." + name + ".labels"}
			side, ok := built[sk]
			switch {
			case !ok:
				where.Msg = fmt.Sprintf("sidekick %q is not a service of this file", sk)
				return nil, where
			case sk == name:
				where.Msg = "a service cannot be its own sidekick"
				return nil, where
			case owner[sk] != "":
				where.Msg = fmt.Sprintf("sidekick %q already belongs to %q", sk, owner[sk])
				return nil, where
			case len(Sidekicks(side.Spec.LaunchConfig.Labels)) > 0:
				where.Msg = fmt.Sprintf("sidekick %q has sidekicks of its own; sidekicks do not nest", sk)
				return nil, where
			case owner[name] != "":
				where.Msg = fmt.Sprintf("%q is a sidekick of %q and cannot have sidekicks; sidekicks do not nest", name, owner[name])
				return nil, where
			}
			owner[sk] = name
			lc := *side.Spec.LaunchConfig
			lc.Name = sk
			svc.Spec.Sidekicks = append(svc.Spec.Sidekicks, lc)
		}
	}
	for _, name := range names {
		if owner[name] == "" {
			res.Services = append(res.Services, *built[name])
		}
	}
	res.Warnings = x.warnings
	return res, nil
}

// ParseSpec parses a stack object's files (as the engine stores them).
func ParseSpec(ctx context.Context, stackName string, spec api.StackSpec) ([]Service, error) {
	var rc *File
	if spec.RancherCompose != "" {
		rc = &File{Name: "rancher-compose.yml", Content: []byte(spec.RancherCompose)}
	}
	r, err := ParseFull(ctx, stackName, SpecFiles(spec), rc, spec.Answers)
	if err != nil {
		return nil, err
	}
	return r.Services, nil
}

// SpecFiles are a stack object's compose files, named as they were given.
func SpecFiles(spec api.StackSpec) []File {
	name := spec.ComposeName
	if name == "" {
		name = "docker-compose.yml"
	}
	files := []File{{Name: name, Content: []byte(spec.Compose)}}
	for i, o := range spec.Overrides {
		files = append(files, File{Name: fmt.Sprintf("override-%d.yml", i+1), Content: []byte(o)})
	}
	return files
}

// Rancher's well-known images stood for service kinds.
var kindByImage = map[string]string{
	"rancher/external-service":      api.ServiceExternal,
	"rancher/dns-service":           api.ServiceAlias,
	"rancher/lb-service-haproxy":    api.ServiceLoadBalancer,
	"rancher/load-balancer-service": api.ServiceLoadBalancer,
}

// explicitDeps lists the depends_on a service's own text names (a list or
// a mapping), in any of the files.
func explicitDeps(docs []*doc, name string) map[string]bool {
	out := map[string]bool{}
	for _, d := range docs {
		_, n := d.lookup("services", name, "depends_on")
		if n == nil {
			continue
		}
		switch n.Kind {
		case yaml.SequenceNode:
			for _, c := range n.Content {
				out[c.Value] = true
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				out[n.Content[i].Value] = true
			}
		}
	}
	return out
}

// lbV1Rules turns a Rancher 1.x load-balancer-service into port rules:
// every published or exposed port, to every linked service, at the same
// target port; io.rancher.loadbalancer.target.SERVICE labels
// ("host:port/path=targetPort", comma separated) narrow a service's
// rules to hosts and paths. io.rancher.loadbalancer.ssl.ports marks ports
// served with TLS.
func lbV1Rules(sc types.ServiceConfig, lc *api.LaunchConfig, written *listeners) (*api.LBConfig, error) {
	var ports []listener
	if written != nil {
		ports = written.specs
	}
	ssl := map[int]bool{}
	if v, ok := Label(lc.Labels, "loadbalancer.ssl.ports"); ok {
		for _, p := range splitList(v) {
			n, _ := strconv.Atoi(p)
			ssl[n] = true
		}
	}
	var services []string
	for _, l := range sc.Links {
		svc, _, _ := strings.Cut(l, ":")
		services = append(services, svc)
	}
	for _, l := range sc.ExternalLinks {
		svc, _, _ := strings.Cut(l, ":")
		services = append(services, svc)
	}
	sort.Strings(services)
	lbc := &api.LBConfig{}
	for _, svc := range services {
		targets, _ := Label(lc.Labels, "loadbalancer.target."+svc)
		for _, p := range ports {
			proto := "http"
			switch {
			case ssl[p.source]:
				proto = "https"
			case p.protocol != "":
				proto = p.protocol
			}
			if targets == "" {
				lbc.PortRules = append(lbc.PortRules, api.PortRule{SourcePort: p.source, TargetPort: p.target, Protocol: proto, ServiceID: svc})
				continue
			}
			for _, t := range splitList(targets) {
				r := api.PortRule{SourcePort: p.source, TargetPort: p.target, Protocol: proto, ServiceID: svc}
				left, target, hasTarget := strings.Cut(t, "=")
				if hasTarget {
					n, err := strconv.Atoi(target)
					if err != nil {
						return nil, fmt.Errorf("io.rancher.loadbalancer.target.%s: %q: the target port after = is not a number", svc, t)
					}
					r.TargetPort = n
				}
				hostPort, path, hasPath := strings.Cut(left, "/")
				if hasPath {
					r.Path = "/" + path
				}
				host, sport, hasPort := strings.Cut(hostPort, ":")
				if hasPort {
					n, err := strconv.Atoi(sport)
					if err != nil {
						return nil, fmt.Errorf("io.rancher.loadbalancer.target.%s: %q: the port after : is not a number", svc, t)
					}
					if n != p.source {
						continue // a rule for another listening port
					}
				}
				r.Hostname = host
				lbc.PortRules = append(lbc.PortRules, r)
			}
		}
	}
	return lbc, nil
}

// lbRuleError names a port rule's key in whichever file holds it.
func lbRuleError(docs []*doc, rancher *File, rdoc *doc, rs map[string]*Settings, svc string, i int, key, msg string) *Error {
	path := []string{"services", svc, "lb_config", "port_rules", strconv.Itoa(i), key}
	e := &Error{Key: fmt.Sprintf("lb_config.port_rules[%d].%s", i, key), Msg: msg}
	if rs[svc] != nil && rdoc != nil {
		e.File = rancher.Name
		if n := rdoc.find(path...); n != nil {
			e.Line = n.Line
		} else if n := rdoc.find(path[:5]...); n != nil {
			e.Line = n.Line
		}
		return e
	}
	xpath := append([]string{"services", svc, "x-drover"}, path[2:]...)
	e.File, e.Line = locate(docs, xpath...)
	return e
}

func buildService(docs []*doc, name string, sc types.ServiceConfig, volumes types.Volumes, x *extras) (*Service, error) {
	at := func(msg string, path ...string) error {
		f, line := locate(docs, append([]string{"services", name}, path...)...)
		return &Error{File: f, Line: line, Key: strings.Join(append([]string{"services", name}, path...), "."), Msg: msg}
	}
	if sc.Build != nil && sc.Image == "" {
		return nil, at("build is not supported (no registry is involved): build the image on each host and name it in image:", "build")
	}
	if sc.Image != "" {
		// An answer left unset can leave "app:" behind; Docker would
		// refuse it on every host.
		if _, err := reference.ParseNormalizedNamed(sc.Image); err != nil {
			return nil, at(fmt.Sprintf("%q is not an image reference (%v); is a ${VAR} in it unset?", sc.Image, err), "image")
		}
	}
	kind := api.ServiceContainer
	image, _, _ := strings.Cut(sc.Image, ":")
	if k, ok := kindByImage[image]; ok {
		kind = k
	}
	lc := &api.LaunchConfig{
		Image: sc.Image, Command: sc.Command, Entrypoint: sc.Entrypoint,
		NetworkMode: sc.NetworkMode, Pid: sc.Pid, Privileged: sc.Privileged, CapAdd: sc.CapAdd, CapDrop: sc.CapDrop,
		Restart: sc.Restart, DNS: sc.DNS, DNSSearch: sc.DNSSearch, Hostname: sc.Hostname, WorkingDir: sc.WorkingDir,
		User: sc.User, Tty: sc.Tty, StdinOpen: sc.StdinOpen, Expose: sc.Expose, VolumesFrom: sc.VolumesFrom,
		Labels: map[string]string(sc.Labels),
	}
	if len(sc.Environment) > 0 {
		lc.Environment = map[string]string{}
		for k, v := range sc.Environment {
			if v != nil {
				lc.Environment[k] = *v
			}
		}
	}
	for i, p := range sc.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = "tcp"
		}
		spec := fmt.Sprintf("%d/%s", p.Target, proto)
		if p.Published != "" {
			spec = p.Published + ":" + spec
			if p.HostIP != "" {
				spec = p.HostIP + ":" + spec
			}
		}
		if p.Target == 0 {
			return nil, at("a port needs a container port", "ports", strconv.Itoa(i))
		}
		lc.Ports = append(lc.Ports, spec)
	}
	for _, v := range sc.Volumes {
		spec := v.Target
		if v.Source != "" {
			spec = v.Source + ":" + v.Target
		}
		var opts []string
		if v.ReadOnly {
			opts = append(opts, "ro")
		}
		if v.Bind != nil && v.Bind.Propagation != "" {
			opts = append(opts, v.Bind.Propagation)
		}
		if len(opts) > 0 {
			spec += ":" + strings.Join(opts, ",")
		}
		lc.Volumes = append(lc.Volumes, spec)
	}
	if sc.MemLimit > 0 {
		lc.MemoryBytes = int64(sc.MemLimit)
	}
	if l := sc.Logging; l != nil {
		lc.LogDriver = l.Driver
		if len(l.Options) > 0 {
			lc.LogOptions = map[string]string(l.Options)
		}
	}
	for _, n := range sortedKeys(sc.Ulimits) {
		u := sc.Ulimits[n]
		soft, hard := u.Soft, u.Hard
		if u.Single != 0 {
			soft, hard = u.Single, u.Single
		}
		lc.Ulimits = append(lc.Ulimits, api.Ulimit{Name: n, Soft: int64(soft), Hard: int64(hard)})
	}
	if len(sc.ExtraHosts) > 0 {
		lc.ExtraHosts = sc.ExtraHosts.AsList(":")
		sort.Strings(lc.ExtraHosts)
	}
	for _, d := range sc.Devices {
		spec := d.Source + ":" + d.Target
		if d.Permissions != "" {
			spec += ":" + d.Permissions
		}
		lc.Devices = append(lc.Devices, spec)
	}
	if len(sc.Sysctls) > 0 {
		lc.Sysctls = map[string]string(sc.Sysctls)
	}
	lc.ShmSize = int64(sc.ShmSize)
	lc.SecurityOpt = sc.SecurityOpt
	if sc.MemSwappiness != 0 || hasKey(docs, name, "mem_swappiness") {
		v := int64(sc.MemSwappiness)
		lc.MemSwappiness = &v
	}
	lc.StopSignal = sc.StopSignal
	lc.VolumeDriver = volumeDriver(sc, volumes)
	if sc.CPUS > 0 {
		lc.MilliCPU = int64(sc.CPUS * 1000)
	}
	if hc := sc.HealthCheck; hc != nil && !hc.Disable && len(hc.Test) > 0 && hc.Test[0] != "NONE" {
		h := &api.HealthCheck{Interval: durMs(hc.Interval, 30*time.Second), ResponseTimeout: durMs(hc.Timeout, 30*time.Second), HealthyThreshold: 1, UnhealthyThreshold: 3}
		if hc.Retries != nil {
			h.UnhealthyThreshold = int(*hc.Retries)
		}
		if hc.StartPeriod != nil {
			h.InitializingTimeout = durMs(hc.StartPeriod, 0)
		}
		switch hc.Test[0] {
		case "CMD":
			h.Command = hc.Test[1:]
		case "CMD-SHELL":
			h.Command = []string{"/bin/sh", "-c", strings.Join(hc.Test[1:], " ")}
		default:
			h.Command = hc.Test
		}
		lc.HealthCheck = h
	}
	if _, err := Affinity(lc.Labels); err != nil {
		return nil, at(err.Error(), "labels")
	}
	if v, ok := Label(lc.Labels, KeyPullImage); ok && v != "always" && v != "never" && v != "" {
		return nil, at(fmt.Sprintf("%s%s is %q; use always or never", PrefixRancher, KeyPullImage, v), "labels")
	}
	if lc.StartOnce = LabelBool(lc.Labels, KeyStartOnce); lc.StartOnce {
		lc.Restart = "no"
	}
	lc.PullImage, _ = Label(lc.Labels, KeyPullImage)
	svc := &Service{Name: name, Labels: map[string]string{}, Spec: api.ServiceSpec{Kind: kind, LaunchConfig: lc, Global: LabelBool(lc.Labels, KeyGlobal)}}
	for k, v := range sc.Labels {
		svc.Labels[k] = v
	}
	if isLBImage(sc.Image) && (len(sc.Links) > 0 || len(sc.ExternalLinks) > 0) {
		// Rancher 1.x's first LB (and a 1.2+ LB that still has links):
		// its ports balanced to every linked service, refined by target
		// labels.
		lbc, err := lbV1Rules(sc, lc, x.lb[name])
		if err != nil {
			return nil, at(err.Error(), "labels")
		}
		svc.Spec.LBConfig = lbc
	}
	if kind != api.ServiceContainer {
		// Rancher's placeholder images are not run.
		svc.Spec.LaunchConfig = &api.LaunchConfig{Labels: lc.Labels}
	}
	if !svc.Spec.Global && (kind == api.ServiceContainer || kind == api.ServiceLoadBalancer) {
		one := 1
		svc.Spec.Scale = &one
		if sc.Scale != nil {
			n := *sc.Scale
			svc.Spec.Scale = &n
		}
	}
	svc.Spec.Links = append(svc.Spec.Links, sc.Links...)
	svc.Spec.Links = append(svc.Spec.Links, sc.ExternalLinks...)
	// Only the depends_on the file writes: compose-go adds the services
	// of volumes_from and network_mode: service:X, which are not links.
	explicit := explicitDeps(docs, name)
	for dep := range sc.DependsOn {
		if explicit[dep] {
			svc.Spec.Links = append(svc.Spec.Links, dep)
		}
	}
	if kind == api.ServiceLoadBalancer && isLBImage(sc.Image) {
		svc.Spec.Links = nil // they became the port rules
	}
	sort.Strings(svc.Spec.Links)
	return svc, nil
}

func durMs(d *types.Duration, def time.Duration) int {
	if d == nil {
		return int(def / time.Millisecond)
	}
	return int(time.Duration(*d) / time.Millisecond)
}

// extensionSettings decodes a service's x-drover block strictly.
func extensionSettings(docs []*doc, name string, answers map[string]string) (*Settings, error) {
	for i := len(docs) - 1; i >= 0; i-- {
		_, val := docs[i].lookup("services", name, "x-drover")
		if val == nil {
			continue
		}
		if err := checkKeys(docs[i].name, val, reflect.TypeOf(Settings{}), "services."+name+".x-drover"); err != nil {
			return nil, err
		}
		raw, _ := yaml.Marshal(val)
		content, err := substitute(string(raw), answers)
		if err != nil {
			return nil, &Error{File: docs[i].name, Line: val.Line, Key: "services." + name + ".x-drover", Msg: err.Error()}
		}
		var s Settings
		dec := yaml.NewDecoder(strings.NewReader(content))
		dec.KnownFields(true)
		if err := dec.Decode(&s); err != nil {
			line := val.Line + yamlErrLine(err) - 1
			return nil, &Error{File: docs[i].name, Line: line, Key: "services." + name + ".x-drover", Msg: settingsError(err)}
		}
		return &s, nil
	}
	return nil, nil
}

// substitute fills ${VAR} (with compose's defaults and errors syntax) from
// the stack's answers, as compose-go does for the compose file itself.
func substitute(content string, answers map[string]string) (string, error) {
	return template.Substitute(content, func(k string) (string, bool) {
		v, ok := answers[k]
		return v, ok
	})
}

func settingsError(err error) string {
	msg := cleanYAMLErr(err)
	msg = yamlLineRe.ReplaceAllString(msg, "")
	msg = strings.ReplaceAll(msg, "in type stacks.Settings", "")
	return strings.TrimSpace(msg) + "; allowed: " + strings.Join(settingsKeys(), ", ")
}

// rancherServices reads the settings of a rancher-compose tree (as
// readRancherCompose left it), with ${VAR} filled in its values.
func rancherServices(file string, top *yaml.Node, answers map[string]string) (map[string]*Settings, error) {
	services := get(top, "services")
	if services == nil {
		for i := 0; i+1 < len(top.Content); i += 2 {
			k := top.Content[i]
			return nil, &Error{File: file, Line: k.Line, Key: k.Value, Msg: "unknown key; a rancher-compose.yml holds services (and a catalog block)"}
		}
		return nil, nil
	}
	if services.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Line: services.Line, Key: "services", Msg: "want a mapping of service names to settings"}
	}
	out := map[string]*Settings{}
	for i := 0; i+1 < len(services.Content); i += 2 {
		name, n := services.Content[i].Value, services.Content[i+1]
		path := "services." + name
		if n.Kind == yaml.ScalarNode && n.Value == "" {
			continue // "web:" with nothing under it
		}
		if err := checkKeys(file, n, reflect.TypeOf(Settings{}), path); err != nil {
			return nil, err
		}
		if err := substituteNodes(file, n, answers); err != nil {
			return nil, err
		}
		var st Settings
		if err := decodeStrict(file, n, &st, path); err != nil {
			e := err.(*Error)
			e.Msg = settingsError(errors.New(e.Msg))
			return nil, e
		}
		out[name] = &st
	}
	return out, nil
}

// expandNames fills the names Rancher filled in labels: ${stack_name} and
// ${service_name} (written $${...} in a compose file, so compose leaves
// them), as in io.rancher.scheduler.affinity:container_label_ne:
// io.rancher.stack_service.name=$${stack_name}/$${service_name}.
func expandNames(labels map[string]string, stack, service string) {
	for k, v := range labels {
		if strings.Contains(v, "${") {
			v = strings.ReplaceAll(v, "${stack_name}", stack)
			labels[k] = strings.ReplaceAll(v, "${service_name}", service)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func hasKey(docs []*doc, name, key string) bool {
	for _, d := range docs {
		if k, _ := d.lookup("services", name, key); k != nil {
			return true
		}
	}
	return false
}

// volumeDriver is the driver of a service's named volumes (Docker takes
// one per container); local is Docker's default and says nothing.
func volumeDriver(sc types.ServiceConfig, volumes types.Volumes) string {
	driver := ""
	for _, v := range sc.Volumes {
		if v.Type != types.VolumeTypeVolume || v.Source == "" {
			continue
		}
		if d := volumes[v.Source].Driver; d != "" && d != "local" {
			driver = d
		}
	}
	return driver
}

// warnUnset names each ${VAR} a compose file uses with no answer and no
// default: compose makes it an empty string, which is rarely meant.
func warnUnset(orig File, normalized []byte, answers map[string]string, x *extras) {
	var dict map[string]any
	if yaml.Unmarshal(normalized, &dict) != nil {
		return
	}
	vars := template.ExtractVariables(dict, nil)
	names := sortedKeys(vars)
	lines := strings.Split(string(orig.Content), "\n")
	for _, n := range names {
		v := vars[n]
		if _, ok := answers[n]; ok || v.DefaultValue != "" || v.Required || v.PresenceValue != "" {
			continue
		}
		line := 0
		for i, l := range lines {
			if strings.Contains(l, "${"+n) || strings.Contains(l, "$"+n) {
				line = i + 1
				break
			}
		}
		x.warn(Warning{File: orig.Name, Line: line, Msg: fmt.Sprintf("${%s} is not set (no answer, no default): it is an empty string", n)})
	}
}
