package apiserver

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/drover/drover/api"
	"github.com/drover/drover/kubectld/manifest"
	"github.com/drover/drover/stacks"
)

// The name checks below run on every write (every label of every object),
// so they are written out rather than regular expressions, which cost a
// tenth of the whole create path. names_test.go holds each to the regular
// expression it stands for (TestNamesMatchExpressions, FuzzNames).

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func isAlnum(c byte) bool      { return isLowerAlnum(c) || c >= 'A' && c <= 'Z' }

// isDNSLabel: ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ (no length bound).
func isDNSLabel(s string) bool {
	if s == "" || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '-' {
			return false
		}
	}
	return true
}

// isDNSSubdomain: DNS labels joined by dots (no length bound).
func isDNSSubdomain(s string) bool {
	for {
		label, rest, more := strings.Cut(s, ".")
		if !isDNSLabel(label) {
			return false
		}
		if !more {
			return true
		}
		s = rest
	}
}

// isLabelKey: an optional DNS subdomain and '/', then a name of letters,
// digits, '-', '_', '.' and ':' starting and ending with a letter or digit.
func isLabelKey(k string) bool {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if !isDNSSubdomain(prefix) {
			return false
		}
		name = rest
	}
	if name == "" || !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
		return false
	}
	for i := 1; i < len(name)-1; i++ {
		if c := name[i]; !isAlnum(c) && c != '-' && c != '_' && c != '.' && c != ':' {
			return false
		}
	}
	return true
}

func invalid(field, format string, args ...any) *api.Error {
	return api.NewError(http.StatusUnprocessableEntity, api.CodeInvalidField, field, field+": "+format, args...)
}

func required(field, what string) *api.Error {
	return api.NewError(http.StatusUnprocessableEntity, api.CodeMissingRequired, field, "%s is required: %s", field, what)
}

// normalize fills defaults, so what is stored is what is meant.
func normalize(coll string, obj api.Object) {
	m := obj.GetMeta()
	if m.Name == "" {
		switch coll {
		case "containers", "apikeys", "registrationtokens":
			m.Name = m.ID
		}
	}
	switch o := obj.(type) {
	case *api.Stack:
		if o.Spec.Kind == "" {
			o.Spec.Kind = api.StackCompose
		}
	case *api.Service:
		if o.Spec.Kind == "" {
			o.Spec.Kind = api.ServiceContainer
		}
	case *api.Container:
		if o.Spec.Kind == "" {
			o.Spec.Kind = api.ContainerKindContainer
		}
		if o.Status.State == "" {
			o.Status.State = api.ContainerPending
		}
	case *api.Host:
		if o.Status.State == "" {
			o.Status.State = api.HostRegistering
		}
	case *api.Network:
		if o.Spec.CIDR == "" {
			o.Spec.CIDR = "10.42.0.0/16"
		}
		if o.Spec.HostSubnetSize == 0 {
			o.Spec.HostSubnetSize = 24
		}
		if o.Spec.MTU == 0 {
			o.Spec.MTU = 1450
		}
		if o.Spec.VNI == 0 {
			o.Spec.VNI = 1
		}
		if o.Spec.VXLANPort == 0 {
			o.Spec.VXLANPort = 4789 // IANA's
		}
	}
}

// validate checks an object completely; the first problem is returned with
// its field path.
func validate(coll string, obj api.Object) *api.Error {
	m := obj.GetMeta()
	if m.Name == "" {
		return required("name", "a lowercase DNS label such as \"web\"")
	}
	if coll == "hosts" {
		if !validHostName(m.Name) {
			return invalid("name", "%q is not a valid host name: use lowercase letters, digits, '-' and '.', at most 253 characters", m.Name)
		}
	} else if len(m.Name) > 63 || !isDNSLabel(m.Name) {
		return invalid("name", "%q is not a DNS label: use lowercase letters, digits and '-', start and end with a letter or digit, at most 63 characters", m.Name)
	}
	for k, v := range m.Labels {
		if err := validLabel("labels", k, v); err != nil {
			return err
		}
	}
	switch o := obj.(type) {
	case *api.Host:
		return validateHost(o)
	case *api.Stack:
		return validateStack(o)
	case *api.Service:
		return validateService(o)
	case *api.Container:
		return validateContainer(o)
	case *api.Network:
		return validateNetwork(o)
	case *api.Certificate:
		return nil // checked with its key in certificateStatus
	case *api.APIKey:
		return validateAPIKey(o)
	case *api.RegistrationToken:
		return validateRegistrationToken(o)
	}
	return nil
}

func validateRegistrationToken(o *api.RegistrationToken) *api.Error {
	if o.Spec.MaxUses < 0 {
		return invalid("spec.maxUses", "must be 0 (no limit) or more, got %d", o.Spec.MaxUses)
	}
	if p := o.Spec.HostNamePattern; p != "" {
		if _, err := path.Match(p, ""); err != nil {
			return invalid("spec.hostNamePattern", "%q is not a shell pattern (use *, ? and [a-z]): %v", p, err)
		}
	}
	return nil
}

// labelKey is a Kubernetes label key widened to Rancher's: an optional
// DNS-subdomain prefix and '/', then letters, digits, '-', '_', '.' and ':'
// (io.rancher.scheduler.affinity:host_label), starting and ending with a
// letter or digit. Anything else — spaces, invisible characters such as a
// zero-width space — would make two keys that look the same differ.

func validLabel(field, k, v string) *api.Error {
	if k == "" || len(k) > 253 || !isLabelKey(k) {
		return invalid(field+"."+k, "label key %q must be 1-253 characters: an optional DNS prefix and '/', then letters, digits, '-', '_', '.' or ':', starting and ending with a letter or digit", k)
	}
	if len(v) > 4096 || strings.IndexFunc(v, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
		return invalid(field+"."+k, "label value must be at most 4096 characters without control or invisible characters")
	}
	return nil
}

// validHostName is a DNS name: labels of at most 63 characters.
func validHostName(name string) bool {
	if len(name) > 253 || !isDNSSubdomain(name) {
		return false
	}
	for _, l := range strings.Split(name, ".") {
		if len(l) > 63 {
			return false
		}
	}
	return true
}

func oneOf(field, v string, allowed ...string) *api.Error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return invalid(field, "%q is not one of %s", v, strings.Join(allowed, ", "))
}

func validIP(field, v string) *api.Error {
	if v != "" && net.ParseIP(v) == nil {
		return invalid(field, "%q is not an IP address", v)
	}
	return nil
}

func validateHost(o *api.Host) *api.Error {
	if err := oneOf("status.state", o.Status.State, api.HostRegistering, api.HostActive, api.HostInactive, api.HostDisconnected); err != nil {
		return err
	}
	if err := validIP("status.agentIP", o.Status.AgentIP); err != nil {
		return err
	}
	if o.Status.Subnet != "" {
		if _, _, err := net.ParseCIDR(o.Status.Subnet); err != nil {
			return invalid("status.subnet", "%q is not a CIDR", o.Status.Subnet)
		}
	}
	if o.Status.VTEPMAC != "" {
		if _, err := net.ParseMAC(o.Status.VTEPMAC); err != nil {
			return invalid("status.vtepMAC", "%q is not a MAC address", o.Status.VTEPMAC)
		}
	}
	for k, v := range o.Status.NodeLabels {
		if err := validLabel("status.nodeLabels", k, v); err != nil {
			return err
		}
	}
	return nil
}

func validateStack(o *api.Stack) *api.Error {
	if err := oneOf("spec.kind", o.Spec.Kind, api.StackCompose, api.StackKubernetes); err != nil {
		return err
	}
	if o.Spec.Kind == api.StackCompose && o.Spec.Compose != "" {
		// A stack that does not parse is refused whole, so nothing of it
		// is half-deployed; the message names file, line and key.
		if _, err := stacks.ParseSpec(context.Background(), o.Name, o.Spec); err != nil {
			return invalid("spec.compose", "%v", err)
		}
	}
	if err := validateTemplates(o.Spec); err != nil {
		return err
	}
	if o.Spec.Namespace != "" && (len(o.Spec.Namespace) > 63 || !isDNSLabel(o.Spec.Namespace)) {
		return invalid("spec.namespace", "%q is not a DNS label", o.Spec.Namespace)
	}
	return nil
}

func validateService(o *api.Service) *api.Error {
	s := &o.Spec
	if s.StackID == "" {
		return required("spec.stackId", "the id of the stack this service belongs to")
	}
	if err := oneOf("spec.kind", s.Kind, api.ServiceContainer, api.ServiceLoadBalancer, api.ServiceExternal, api.ServiceAlias, api.ServiceKubernetes, api.ServiceKubernetesWorkload); err != nil {
		return err
	}
	if s.Scale != nil && *s.Scale < 0 {
		return invalid("spec.scale", "must be 0 or more, got %d", *s.Scale)
	}
	if s.Global && s.Scale != nil && *s.Scale != 0 {
		return invalid("spec.scale", "a global service runs one container per host; leave scale unset")
	}
	if s.Kind == api.ServiceContainer && (s.LaunchConfig == nil || s.LaunchConfig.Image == "") {
		return required("spec.launchConfig.image", "a container service needs an image")
	}
	if s.LaunchConfig != nil {
		if err := validateLaunchConfig("spec.launchConfig", s.LaunchConfig); err != nil {
			return err
		}
	}
	seen := map[string]bool{}
	for i := range s.Sidekicks {
		f := "spec.sidekicks[" + strconv.Itoa(i) + "]"
		sk := &s.Sidekicks[i]
		if sk.Name == "" || !isDNSLabel(sk.Name) {
			return invalid(f+".name", "a sidekick needs a DNS-label name, got %q", sk.Name)
		}
		if seen[sk.Name] {
			return invalid(f+".name", "sidekick %q is declared twice", sk.Name)
		}
		seen[sk.Name] = true
		if err := validateLaunchConfig(f, sk); err != nil {
			return err
		}
	}
	for i, ip := range s.ExternalIPs {
		if err := validIP("spec.externalIPs["+strconv.Itoa(i)+"]", ip); err != nil {
			return err
		}
	}
	if err := validIP("spec.vip", s.VIP); err != nil {
		return err
	}
	if s.Hostname != "" && !isDNSSubdomain(strings.TrimSuffix(strings.ToLower(s.Hostname), ".")) {
		return invalid("spec.hostname", "%q is not a DNS name", s.Hostname)
	}
	if s.Selector != "" {
		if _, err := api.ParseSelector(s.Selector); err != nil {
			return invalid("spec.selector", "%v", err)
		}
	}
	for i, p := range s.Ports {
		f := "spec.ports[" + strconv.Itoa(i) + "]"
		if p.Port < 1 || p.Port > 65535 {
			return invalid(f+".port", "%d is not a port (1-65535)", p.Port)
		}
		if p.TargetPort < 0 || p.TargetPort > 65535 {
			return invalid(f+".targetPort", "%d is not a port (1-65535)", p.TargetPort)
		}
		if p.NodePort < 0 || p.NodePort > 65535 {
			return invalid(f+".nodePort", "%d is not a port (1-65535)", p.NodePort)
		}
		if p.Protocol != "" {
			if err := oneOf(f+".protocol", strings.ToLower(p.Protocol), "tcp", "udp", "sctp"); err != nil {
				return err
			}
		}
	}
	if lb := s.LBConfig; lb != nil {
		for i, r := range lb.PortRules {
			f := "spec.lbConfig.portRules[" + strconv.Itoa(i) + "]"
			if r.SourcePort < 1 || r.SourcePort > 65535 {
				return invalid(f+".sourcePort", "%d is not a port (1-65535)", r.SourcePort)
			}
			if r.TargetPort < 0 || r.TargetPort > 65535 {
				return invalid(f+".targetPort", "%d is not a port (1-65535)", r.TargetPort)
			}
			if r.Protocol != "" {
				if err := oneOf(f+".protocol", r.Protocol, "http", "https", "tcp", "tls", "sni", "udp"); err != nil {
					return err
				}
			}
			for j, a := range r.Addresses {
				if net.ParseIP(a) == nil {
					return invalid(f+".addresses["+strconv.Itoa(j)+"]", "%q is not an IP address", a)
				}
			}
			if len(r.Addresses) > 0 && (r.ServiceID != "" || r.Selector != "" || r.TargetPort == 0) {
				return invalid(f+".addresses", "a rule with addresses names no service or selector, and needs a targetPort")
			}
			if r.PathType != "" {
				if err := oneOf(f+".pathType", r.PathType, api.PathExact, api.PathPrefix); err != nil {
					return err
				}
			}
			if r.Path != "" && (!strings.HasPrefix(r.Path, "/") || strings.ContainsAny(r.Path, " \t\r\n{}#\\")) {
				return invalid(f+".path", "%q: a path starts with / and holds no spaces, braces, # or backslashes", r.Path)
			}
		}
	}
	for i, ep := range o.Status.Endpoints {
		if net.ParseIP(ep.IP) == nil {
			return invalid("status.endpoints["+strconv.Itoa(i)+"].ip", "%q is not an IP address", ep.IP)
		}
	}
	if u := s.Upgrade; u != nil && (u.BatchSize < 0 || u.IntervalMs < 0) {
		return invalid("spec.upgrade", "batchSize and intervalMs must not be negative")
	}
	return nil
}

func validateLaunchConfig(f string, lc *api.LaunchConfig) *api.Error {
	for k, v := range lc.Labels {
		if err := validLabel(f+".labels", k, v); err != nil {
			return err
		}
	}
	if lc.MemoryBytes < 0 || lc.MilliCPU < 0 {
		return invalid(f, "memoryBytes and milliCPU must not be negative")
	}
	if lc.Pid != "" && lc.Pid != "host" {
		return invalid(f+".pid", "must be empty or \"host\"")
	}
	if lc.Restart != "" {
		r, _, _ := strings.Cut(lc.Restart, ":")
		if err := oneOf(f+".restart", r, "no", "always", "on-failure", "unless-stopped"); err != nil {
			return err
		}
	}
	return nil
}

func validateContainer(o *api.Container) *api.Error {
	if err := oneOf("spec.kind", o.Spec.Kind, api.ContainerKindContainer, api.ContainerKindPod); err != nil {
		return err
	}
	if err := oneOf("status.state", o.Status.State, api.ContainerPending, api.ContainerStarting, api.ContainerRunning, api.ContainerStopped, api.ContainerError); err != nil {
		return err
	}
	if o.Status.Health != "" {
		if err := oneOf("status.health", o.Status.Health, "healthy", "unhealthy", "initializing", "reinitializing"); err != nil {
			return err
		}
	}
	if err := validIP("status.primaryIP", o.Status.PrimaryIP); err != nil {
		return err
	}
	if o.Status.MAC != "" {
		if _, err := net.ParseMAC(o.Status.MAC); err != nil {
			return invalid("status.mac", "%q is not a MAC address", o.Status.MAC)
		}
	}
	if o.Spec.ServiceIndex < 0 {
		return invalid("spec.serviceIndex", "must not be negative")
	}
	if o.Spec.LaunchConfig != nil {
		return validateLaunchConfig("spec.launchConfig", o.Spec.LaunchConfig)
	}
	return nil
}

func validateNetwork(o *api.Network) *api.Error {
	ip, n, err := net.ParseCIDR(o.Spec.CIDR)
	if err != nil || ip.To4() == nil {
		return invalid("spec.cidr", "%q is not an IPv4 CIDR such as 10.42.0.0/16", o.Spec.CIDR)
	}
	ones, _ := n.Mask.Size()
	if o.Spec.HostSubnetSize <= ones || o.Spec.HostSubnetSize > 30 {
		return invalid("spec.hostSubnetSize", "must be longer than the network's /%d and at most 30, got %d", ones, o.Spec.HostSubnetSize)
	}
	if o.Spec.MTU < 576 || o.Spec.MTU > 9000 {
		return invalid("spec.mtu", "must be between 576 and 9000, got %d", o.Spec.MTU)
	}
	if o.Spec.VNI < 1 || o.Spec.VNI > 1<<24-1 {
		return invalid("spec.vni", "must be between 1 and 16777215, got %d", o.Spec.VNI)
	}
	if o.Spec.VXLANPort < 1 || o.Spec.VXLANPort > 65535 {
		return invalid("spec.vxlanPort", "must be a UDP port, got %d", o.Spec.VXLANPort)
	}
	return nil
}

func validateAPIKey(o *api.APIKey) *api.Error {
	if err := oneOf("spec.Role", o.Spec.Role, api.RoleAdmin, api.RoleAgent, api.RoleService); err != nil {
		return err
	}
	if o.Spec.Role == api.RoleAgent && o.Spec.HostID == "" {
		return required("spec.hostId", "an agent key is scoped to one host")
	}
	if o.Spec.Role != api.RoleAgent && o.Spec.HostID != "" {
		return invalid("spec.hostId", "only agent keys are scoped to a host")
	}
	return nil
}

// certificateStatus parses a certificate and its key and describes it.
func certificateStatus(certPEM, keyPEM string) (api.CertificateStatus, *api.Error) {
	var st api.CertificateStatus
	pair, err := tls.X509KeyPair([]byte(certPEM), []byte(keyPEM))
	if err != nil {
		if b, _ := pem.Decode([]byte(certPEM)); b == nil {
			return st, invalid("spec.cert", "not a PEM certificate")
		}
		return st, invalid("spec.key", "does not match spec.cert or is not a PEM private key: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return st, invalid("spec.cert", "parsing certificate: %v", err)
	}
	sum := sha256.Sum256(leaf.Raw)
	st.CN = leaf.Subject.CommonName
	st.SANs = append(st.SANs, leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		st.SANs = append(st.SANs, ip.String())
	}
	st.NotAfter = leaf.NotAfter.UTC()
	st.Fingerprint = hex.EncodeToString(sum[:])
	return st, nil
}

// Limits on a Kubernetes template, checked before it is stored.
const (
	maxTemplateBytes     = 256 << 10
	maxTemplateDocuments = 1000
)

// checkTemplate parses a Kubernetes template (YAML documents) with limits:
// yaml.v3 refuses documents whose aliases expand without bound (a "billion
// laughs" file), and each document must be a mapping with apiVersion and
// kind, as kubectl expects.
// validateTemplates checks a Kubernetes-template stack's files: a Helm
// chart's Chart.yaml must read; manifests must have every ${VAR} answered
// and hold Kubernetes objects once filled.
func validateTemplates(spec api.StackSpec) *api.Error {
	if len(spec.Templates) > 0 && spec.Kind != api.StackKubernetes {
		return invalid("spec.templates", "templates are for stacks of kind kubernetes (this one is %s)", spec.Kind)
	}
	chart := manifest.IsChart(spec.Templates)
	var missing []string
	for name, tpl := range spec.Templates {
		if len(tpl) > maxTemplateBytes {
			return invalid("spec.templates."+name, "is %d KiB; at most %d KiB", len(tpl)>>10, maxTemplateBytes>>10)
		}
		if chart {
			continue
		}
		filled, err := manifest.Interpolate(name, tpl, spec.Answers)
		var me *manifest.MissingError
		if errors.As(err, &me) {
			missing = append(missing, me.Error())
			continue
		}
		if err != nil {
			return invalid("spec.templates."+name, "%v", err)
		}
		if !manifest.IsManifest(name) {
			continue
		}
		if err := checkTemplate(filled); err != nil {
			return invalid("spec.templates."+name, "%v", err)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return invalid("spec.answers", "%s", strings.Join(missing, "; "))
	}
	if chart {
		var meta struct {
			APIVersion string `yaml:"apiVersion"`
			Name       string `yaml:"name"`
			Version    string `yaml:"version"`
		}
		if err := yaml.Unmarshal([]byte(spec.Templates["Chart.yaml"]), &meta); err != nil {
			return invalid("spec.templates.Chart.yaml", "%v", err)
		}
		if meta.Name == "" || meta.Version == "" || meta.APIVersion == "" {
			return invalid("spec.templates.Chart.yaml", "a chart needs apiVersion, name and version")
		}
	}
	return nil
}

func checkTemplate(tpl string) error {
	if len(tpl) > maxTemplateBytes {
		return fmt.Errorf("is %d KiB; at most %d KiB", len(tpl)>>10, maxTemplateBytes>>10)
	}
	dec := yaml.NewDecoder(strings.NewReader(tpl))
	for n := 1; ; n++ {
		if n > maxTemplateDocuments {
			return fmt.Errorf("has more than %d documents", maxTemplateDocuments)
		}
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("document %d: %v", n, err)
		}
		if doc == nil {
			continue // an empty document between separators
		}
		m, ok := doc.(map[string]any)
		if !ok {
			return fmt.Errorf("document %d is not a mapping (want a Kubernetes object with apiVersion and kind)", n)
		}
		for _, k := range []string{"apiVersion", "kind"} {
			if v, _ := m[k].(string); v == "" {
				return fmt.Errorf("document %d has no %s", n, k)
			}
		}
	}
}
