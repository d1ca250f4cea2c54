package stacks

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/drover/drover/api"
)

// Settings are a service's drover settings, written in the compose file's
// x-drover extension or, Rancher 1.x style, in rancher-compose.yml. Keys
// follow Rancher's spelling.
type Settings struct {
	Kind            string           `yaml:"kind"`
	Scale           *int             `yaml:"scale"`
	StartOnCreate   *bool            `yaml:"start_on_create"`
	RetainIP        *bool            `yaml:"retain_ip"`
	DrainTimeoutMs  *int             `yaml:"drain_timeout_ms"`
	HealthCheck     *HealthSettings  `yaml:"health_check"`
	UpgradeStrategy *UpgradeSettings `yaml:"upgrade_strategy"`
	LBConfig        *LBSettings      `yaml:"lb_config"`
	ExternalIPs     []string         `yaml:"external_ips"`
	Hostname        string           `yaml:"hostname"`
	Metadata        map[string]any   `yaml:"metadata"`
}

type HealthSettings struct {
	Port                  int    `yaml:"port"`
	RequestLine           string `yaml:"request_line"`
	Interval              int    `yaml:"interval"`
	ResponseTimeout       int    `yaml:"response_timeout"`
	HealthyThreshold      int    `yaml:"healthy_threshold"`
	UnhealthyThreshold    int    `yaml:"unhealthy_threshold"`
	InitializingTimeout   int    `yaml:"initializing_timeout"`
	ReinitializingTimeout int    `yaml:"reinitializing_timeout"`
	Strategy              string `yaml:"strategy"`
	// RecreateOnQuorum is Rancher's recreateOnQuorum strategy's setting.
	RecreateOnQuorum *struct {
		Quorum int `yaml:"quorum"`
	} `yaml:"recreate_on_quorum_strategy_config"`
}

type UpgradeSettings struct {
	BatchSize      int  `yaml:"batch_size"`
	IntervalMillis int  `yaml:"interval_millis"`
	StartFirst     bool `yaml:"start_first"`
}

type LBSettings struct {
	PortRules        []PortRuleSettings  `yaml:"port_rules"`
	Certs            []string            `yaml:"certs"`
	DefaultCert      string              `yaml:"default_cert"`
	Config           string              `yaml:"config"`
	StickinessPolicy *StickinessSettings `yaml:"stickiness_policy"`
}

type StickinessSettings struct {
	Name     string `yaml:"name"`
	Cookie   string `yaml:"cookie"`
	Domain   string `yaml:"domain"`
	Mode     string `yaml:"mode"`
	Indirect bool   `yaml:"indirect"`
	NoCache  bool   `yaml:"nocache"`
	PostOnly bool   `yaml:"postonly"`
}

type PortRuleSettings struct {
	SourcePort  int    `yaml:"source_port"`
	TargetPort  int    `yaml:"target_port"`
	Protocol    string `yaml:"protocol"`
	Hostname    string `yaml:"hostname"`
	Path        string `yaml:"path"`
	Service     string `yaml:"service"`
	Priority    int    `yaml:"priority"`
	BackendName string `yaml:"backend_name"`
	Selector    string `yaml:"selector"`
}

// checkKeys walks a YAML node against the Go type it fills and reports the
// first unknown key at its exact line (decoding re-marshalled YAML would
// lose comments and blank lines, and so the line).
func checkKeys(file string, n *yaml.Node, t reflect.Type, path string) *Error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n == nil {
		return nil
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return nil // the decoder reports wrong types
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
			fields[name] = t.Field(i).Type
			names = append(names, name)
		}
		sort.Strings(names)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			ft, ok := fields[k.Value]
			if !ok {
				return &Error{File: file, Line: k.Line, Key: path + "." + k.Value, Msg: fmt.Sprintf("unknown key %q; allowed: %s", k.Value, strings.Join(names, ", "))}
			}
			if err := checkKeys(file, n.Content[i+1], ft, path+"."+k.Value); err != nil {
				return err
			}
		}
	case reflect.Slice:
		if n.Kind == yaml.SequenceNode {
			for i, c := range n.Content {
				if err := checkKeys(file, c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func settingsKeys() []string {
	var out []string
	t := reflect.TypeOf(Settings{})
	for i := 0; i < t.NumField(); i++ {
		out = append(out, strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0])
	}
	sort.Strings(out)
	return out
}

// apply puts the settings into a service spec.
func (s *Settings) apply(spec *api.ServiceSpec) error {
	if s.Kind != "" {
		switch s.Kind {
		case api.ServiceContainer, api.ServiceLoadBalancer, api.ServiceExternal, api.ServiceAlias:
			spec.Kind = s.Kind
		default:
			return fmt.Errorf("kind %q: use container, loadBalancer, external or alias", s.Kind)
		}
	}
	if len(s.Metadata) > 0 {
		spec.Metadata = jsonSafe(s.Metadata).(map[string]any)
	}
	if s.Scale != nil {
		if *s.Scale < 0 {
			return fmt.Errorf("scale %d: must be 0 or more", *s.Scale)
		}
		if spec.Global {
			return fmt.Errorf("scale: the service is global (one container per host); remove scale or the global label")
		}
		n := *s.Scale
		spec.Scale = &n
	}
	if h := s.HealthCheck; h != nil {
		if h.Port < 0 || h.Port > 65535 {
			return fmt.Errorf("health_check.port %d: not a port", h.Port)
		}
		spec.HealthCheck = &api.HealthCheck{
			Port: h.Port, RequestLine: h.RequestLine, Interval: h.Interval, ResponseTimeout: h.ResponseTimeout,
			HealthyThreshold: h.HealthyThreshold, UnhealthyThreshold: h.UnhealthyThreshold,
			InitializingTimeout: h.InitializingTimeout, Strategy: h.Strategy,
		}
		if q := h.RecreateOnQuorum; q != nil {
			spec.HealthCheck.Quorum = q.Quorum
		}
	}
	if u := s.UpgradeStrategy; u != nil {
		if u.BatchSize < 0 || u.IntervalMillis < 0 {
			return fmt.Errorf("upgrade_strategy: batch_size and interval_millis must not be negative")
		}
		spec.Upgrade = &api.UpgradeConfig{BatchSize: u.BatchSize, IntervalMs: u.IntervalMillis, StartFirst: u.StartFirst}
	}
	if lb := s.LBConfig; lb != nil {
		spec.Kind = api.ServiceLoadBalancer
		cfg := &api.LBConfig{Config: lb.Config, CertificateIDs: lb.Certs, DefaultCertificateID: lb.DefaultCert}
		var legacy []api.PortRule
		if spec.LBConfig != nil {
			// Rules from a Rancher LB's ports and links come after
			// lb_config's, as Rancher added them.
			legacy = spec.LBConfig.PortRules
		}
		if sp := lb.StickinessPolicy; sp != nil {
			switch sp.Mode {
			case "", "insert", "rewrite", "prefix":
			default:
				return fmt.Errorf("lb_config.stickiness_policy.mode %q: insert, rewrite or prefix", sp.Mode)
			}
			cfg.StickinessPolicy = &api.StickinessPolicy{Name: sp.Name, Cookie: sp.Cookie, Domain: sp.Domain, Mode: sp.Mode, Indirect: sp.Indirect, NoCache: sp.NoCache, PostOnly: sp.PostOnly}
		}
		for i, r := range lb.PortRules {
			if r.SourcePort < 1 || r.SourcePort > 65535 {
				return fmt.Errorf("lb_config.port_rules[%d].source_port %d: not a port", i, r.SourcePort)
			}
			cfg.PortRules = append(cfg.PortRules, api.PortRule{SourcePort: r.SourcePort, TargetPort: r.TargetPort, Protocol: r.Protocol,
				Hostname: r.Hostname, Path: r.Path, ServiceID: r.Service, Priority: r.Priority, BackendName: r.BackendName, Selector: r.Selector})
		}
		// ... on the ports lb_config does not already serve.
		served := map[int]bool{}
		for _, r := range cfg.PortRules {
			served[r.SourcePort] = true
		}
		for _, r := range legacy {
			if !served[r.SourcePort] {
				cfg.PortRules = append(cfg.PortRules, r)
			}
		}
		spec.LBConfig = cfg
	}
	if len(s.ExternalIPs) > 0 {
		spec.ExternalIPs = s.ExternalIPs
	}
	if s.Hostname != "" {
		spec.Hostname = s.Hostname
	}
	return nil
}

// jsonSafe turns what YAML decoded (maps with any keys) into what JSON
// encodes: map[string]any all the way down.
func jsonSafe(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = jsonSafe(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[fmt.Sprint(k)] = jsonSafe(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = jsonSafe(x)
		}
		return out
	}
	return v
}
