// Package lb runs drover's load balancers: a service whose containers run
// HAProxy configured from the engine (Rancher 1.x's lb_config). Render is a
// pure function from the LB's resolved rules to haproxy.cfg and a crt-list;
// Run (drover lb) watches the engine, checks each new config with haproxy -c
// and hands it to a master-worker HAProxy.
package lb

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/drover/drover/api"
)

// Target is one backend server.
type Target struct {
	Name string // stable: the container's name
	IP   string
	Port int
	Down bool // the engine says it is unhealthy: kept, disabled
}

// Rule is a port rule with its backend resolved.
type Rule struct {
	api.PortRule
	Index   int    // in lb_config.port_rules, for messages
	Backend string // the backend's name
	Targets []Target
	Check   *api.HealthCheck // the target service's health check
}

// Input is everything a config is made from.
type Input struct {
	Rules      []Rule
	Stickiness *api.StickinessPolicy
	// CertDir holds one PEM per certificate (certificate and key): Certs
	// are their file names and SNI names, DefaultCert the default's file.
	CertDir     string
	Certs       []CertFile
	DefaultCert string
	Extra       string // lb_config.config, appended
	SocketPath  string // the runtime API (stats socket)
	HealthPort  int    // answers health checks (default 42, as Rancher's LB)
}

// CertFile is one certificate of the crt-list.
type CertFile struct {
	File  string
	Names []string
}

// Output is a rendered config.
type Output struct {
	Config  string
	CrtList string
}

var nameRe = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)

// BackendName is a rule's backend name when backend_name is not given.
func BackendName(service string, port int) string {
	return nameRe.ReplaceAllString(strings.ReplaceAll(service, "/", "_"), "_") + "_" + strconv.Itoa(port)
}

// kinds of frontend by protocol.
func mode(proto string) string {
	switch proto {
	case "tcp", "tls", "sni":
		return "tcp"
	}
	return "http"
}

// specificity orders rules within a priority as Rancher did: host and path,
// host, wildcard host, path, then the default.
func specificity(r Rule) int {
	wild := strings.HasPrefix(r.Hostname, "*.") || strings.HasSuffix(r.Hostname, ".*")
	switch {
	case r.Hostname != "" && !wild && r.Path != "":
		return 0
	case r.Hostname != "" && !wild:
		return 1
	case wild && r.Path != "":
		return 2
	case wild:
		return 3
	case r.Path != "":
		return 4
	}
	return 5
}

// pathLen: a Prefix path's trailing slash does not count ("/api/" is "/api").
func pathLen(r Rule) int {
	if r.PathType == api.PathPrefix {
		return len(strings.TrimRight(r.Path, "/"))
	}
	return len(r.Path)
}

// Sort puts rules in the order HAProxy must see them.
func Sort(rules []Rule) {
	sort.SliceStable(rules, func(i, j int) bool {
		a, b := rules[i], rules[j]
		if a.SourcePort != b.SourcePort {
			return a.SourcePort < b.SourcePort
		}
		if a.Priority != b.Priority {
			// Rancher: a lower number goes first; 0 means none, last.
			if a.Priority == 0 || b.Priority == 0 {
				return b.Priority == 0
			}
			return a.Priority < b.Priority
		}
		if sa, sb := specificity(a), specificity(b); sa != sb {
			return sa < sb
		}
		// Longer paths first, so /api/v2 wins over /api; at one length an
		// exact path before a prefix.
		if la, lb := pathLen(a), pathLen(b); la != lb {
			return la > lb
		}
		return a.PathType == api.PathExact && b.PathType != api.PathExact
	})
}

// Render makes haproxy.cfg. Rules on one source port must agree on their
// protocol; UDP is refused (HAProxy does not balance UDP).
func Render(in Input) (Output, error) {
	rules := append([]Rule(nil), in.Rules...)
	Sort(rules)
	var b strings.Builder
	sock := in.SocketPath
	if sock == "" {
		sock = "/run/drover-lb/haproxy.sock"
	}
	fmt.Fprintf(&b, `# Written by drover lb from the engine; changes are overwritten.
global
    stats socket %s mode 600 level admin expose-fd listeners
    stats timeout 30s
    log stdout format raw local0 notice

defaults
    log global
    option dontlognull
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    retries 3
    option redispatch
`, sock)
	// Port 42 answers health checks, as Rancher's LB image did (catalog
	// files give LBs health_check port 42).
	hp := in.HealthPort
	if hp == 0 {
		hp = 42
	}
	fmt.Fprintf(&b, "\nfrontend drover_health\n    bind :%d\n    mode http\n    monitor-uri /\n", hp)
	type frontend struct {
		port  int
		proto string
		rules []Rule
	}
	var fronts []*frontend
	byPort := map[int]*frontend{}
	backends := map[string]Rule{}
	var order []string
	for _, r := range rules {
		proto := strings.ToLower(r.Protocol)
		if proto == "" {
			proto = "http"
		}
		if proto == "udp" {
			return Output{}, fmt.Errorf("lb_config.port_rules[%d].protocol: udp is not HAProxy's (it balances TCP and HTTP only): drover lb balances UDP rules itself (UDPRules splits them off)", r.Index)
		}
		f := byPort[r.SourcePort]
		if f == nil {
			f = &frontend{port: r.SourcePort, proto: proto}
			byPort[r.SourcePort] = f
			fronts = append(fronts, f)
		} else if mode(f.proto) != mode(proto) || (f.proto == "https") != (proto == "https") || (f.proto == "tls") != (proto == "tls") {
			return Output{}, fmt.Errorf("lb_config.port_rules[%d].protocol: %s on port %d, where another rule says %s", r.Index, proto, r.SourcePort, f.proto)
		}
		f.rules = append(f.rules, r)
		if prev, ok := backends[r.Backend]; ok {
			if mode(strings.ToLower(prev.Protocol)) != mode(proto) {
				return Output{}, fmt.Errorf("lb_config.port_rules[%d].backend_name %q: used by an HTTP and a TCP rule", r.Index, r.Backend)
			}
			continue
		}
		r.Protocol = proto
		backends[r.Backend] = r
		order = append(order, r.Backend)
	}
	crt := ""
	for _, f := range fronts {
		fmt.Fprintf(&b, "\nfrontend port_%d\n", f.port)
		bind := fmt.Sprintf("    bind :%d", f.port)
		if f.proto == "https" || f.proto == "tls" {
			if len(in.Certs) == 0 && in.DefaultCert == "" {
				return Output{}, fmt.Errorf("lb_config.port_rules[%d]: protocol %s needs a certificate (lb_config.certs or default_cert)", f.rules[0].Index, f.proto)
			}
			bind += " ssl crt-list " + in.CertDir + "/crt-list"
			crt = "x"
		}
		b.WriteString(bind + "\n")
		fmt.Fprintf(&b, "    mode %s\n", mode(f.proto))
		if mode(f.proto) == "http" {
			b.WriteString("    option forwardfor\n")
			b.WriteString("    http-request set-header X-Forwarded-Port %[dst_port]\n")
			if f.proto == "https" {
				b.WriteString("    http-request set-header X-Forwarded-Proto https\n")
			} else {
				b.WriteString("    http-request set-header X-Forwarded-Proto http\n")
			}
		}
		if f.proto == "sni" {
			b.WriteString("    tcp-request inspect-delay 5s\n    tcp-request content accept if { req_ssl_hello_type 1 }\n")
		}
		var def string
		for _, r := range f.rules {
			conds := conditions(f.proto, r)
			if len(conds) == 0 {
				if def == "" {
					def = r.Backend
				}
				continue
			}
			fmt.Fprintf(&b, "    use_backend %s if %s\n", r.Backend, strings.Join(conds, " "))
		}
		if def != "" {
			fmt.Fprintf(&b, "    default_backend %s\n", def)
		}
	}
	for _, name := range order {
		r := backends[name]
		fmt.Fprintf(&b, "\nbackend %s\n    mode %s\n    balance roundrobin\n", name, mode(r.Protocol))
		check := ""
		if hc := r.Check; hc != nil && hc.Port != 0 {
			if hc.RequestLine != "" && mode(r.Protocol) == "http" {
				fmt.Fprintf(&b, "    option httpchk %s\n", strings.TrimSpace(hc.RequestLine))
			}
			check = fmt.Sprintf(" check port %d inter %d rise %d fall %d", hc.Port, max(hc.Interval, 100), max(hc.HealthyThreshold, 1), max(hc.UnhealthyThreshold, 1))
		}
		cookie := ""
		if sp := in.Stickiness; sp != nil && mode(r.Protocol) == "http" {
			name := sp.Cookie
			if name == "" {
				name = sp.Name
			}
			if name == "" {
				name = "DROVERLB"
			}
			m := sp.Mode
			if m == "" {
				m = "insert"
			}
			line := "    cookie " + name + " " + m
			if sp.Indirect {
				line += " indirect"
			}
			if sp.NoCache {
				line += " nocache"
			}
			if sp.PostOnly {
				line += " postonly"
			}
			if sp.Domain != "" {
				line += " domain " + sp.Domain
			}
			b.WriteString(line + "\n")
			cookie = "x"
		}
		targets := append([]Target(nil), r.Targets...)
		sort.Slice(targets, func(i, j int) bool { return targets[i].Name < targets[j].Name })
		for _, t := range targets {
			line := fmt.Sprintf("    server %s %s:%d%s", nameRe.ReplaceAllString(t.Name, "_"), t.IP, t.Port, check)
			if cookie != "" {
				line += " cookie " + nameRe.ReplaceAllString(t.Name, "_")
			}
			if t.Down {
				line += " disabled"
			}
			b.WriteString(line + "\n")
		}
	}
	if strings.TrimSpace(in.Extra) != "" {
		b.WriteString("\n# lb_config.config\n" + strings.TrimSpace(in.Extra) + "\n")
	}
	out := Output{Config: b.String()}
	if crt != "" {
		var c strings.Builder
		if in.DefaultCert != "" {
			fmt.Fprintf(&c, "%s/%s\n", in.CertDir, in.DefaultCert)
		}
		for _, cf := range in.Certs {
			if cf.File == in.DefaultCert {
				continue
			}
			fmt.Fprintf(&c, "%s/%s", in.CertDir, cf.File)
			if len(cf.Names) > 0 {
				fmt.Fprintf(&c, " [] %s", strings.Join(cf.Names, " "))
			}
			c.WriteString("\n")
		}
		out.CrtList = c.String()
	}
	return out, nil
}

// conditions are the ACL expressions of a rule (none: the default).
func conditions(proto string, r Rule) []string {
	var c []string
	h := strings.ToLower(r.Hostname)
	if proto == "sni" || proto == "tls" && h != "" {
		if h == "" {
			return nil
		}
		if proto == "tls" {
			return []string{"{ ssl_fc_sni -i " + h + " }"}
		}
		switch {
		case strings.HasPrefix(h, "*."):
			return []string{"{ req_ssl_sni -m end -i " + h[1:] + " }"}
		case strings.HasSuffix(h, ".*"):
			return []string{"{ req_ssl_sni -m beg -i " + h[:len(h)-1] + " }"}
		}
		return []string{"{ req_ssl_sni -i " + h + " }"}
	}
	if mode(proto) != "http" {
		return nil
	}
	switch {
	case h == "":
	case strings.HasPrefix(h, "*."):
		c = append(c, "{ hdr(host),field(1,:) -m end -i "+h[1:]+" }")
	case strings.HasSuffix(h, ".*"):
		c = append(c, "{ hdr(host),field(1,:) -m beg -i "+h[:len(h)-1]+" }")
	default:
		c = append(c, "{ hdr(host),field(1,:) -i "+h+" }")
	}
	switch {
	case r.Path == "":
	case r.PathType == api.PathExact:
		c = append(c, "{ path "+r.Path+" }")
	case r.PathType == api.PathPrefix:
		// By path element; a trailing slash is ignored ("/foo/" is "/foo"),
		// and "/" matches every path.
		if p := strings.TrimRight(r.Path, "/"); p != "" {
			c = append(c, "{ path_reg ^"+regexp.QuoteMeta(p)+"(/|$) }")
		}
	default:
		c = append(c, "{ path_beg "+r.Path+" }")
	}
	return c
}
