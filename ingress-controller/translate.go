package ingresscontroller

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"

	"github.com/drover/drover/api"
	"github.com/drover/drover/lb"
)

// Annotations an Ingress may carry; each has Rancher 1.x's spelling too.
const (
	AnnotationScale      = "drover.io/scale"             // Rancher: scale
	AnnotationGlobal     = "drover.io/global"            // Rancher: io.rancher.scheduler.global
	AnnotationHostLabel  = "drover.io/host-label"        // Rancher: io.rancher.scheduler.affinity.host_label
	AnnotationStickiness = "drover.io/stickiness-cookie" // Rancher: io.rancher.stickiness.policy (the cookie's name)
	AnnotationConfig     = "drover.io/haproxy-config"    // Rancher: config
	AnnotationHTTPPort   = "drover.io/http-port"         // Rancher: http.port
	AnnotationHTTPSPort  = "drover.io/https-port"        // Rancher: https.port
)

var rancherSpelling = map[string]string{
	AnnotationScale:      "scale",
	AnnotationGlobal:     "io.rancher.scheduler.global",
	AnnotationHostLabel:  "io.rancher.scheduler.affinity.host_label",
	AnnotationStickiness: "io.rancher.stickiness.policy",
	AnnotationConfig:     "config",
	AnnotationHTTPPort:   "http.port",
	AnnotationHTTPSPort:  "https.port",
}

// annotation reads an annotation by drover's name, else Rancher's; it
// returns the name it was found under, for error messages.
func annotation(ing *networkingv1.Ingress, key string) (string, string) {
	if v, ok := ing.Annotations[key]; ok {
		return v, key
	}
	if r := rancherSpelling[key]; r != "" {
		if v, ok := ing.Annotations[r]; ok {
			return v, r
		}
	}
	return "", key
}

// Labels on the engine objects made for an Ingress: ownership is decided by
// the UID, so an Ingress recreated under the same name replaces them.
const (
	LabelUID       = "io.drover.ingress.uid"
	LabelNamespace = "io.drover.ingress.namespace"
	LabelName      = "io.drover.ingress.name"
)

// Stack is the engine stack that holds the Ingresses' LB services.
const Stack = "kubernetes-ingress-lbs"

// LBImage is the image an LB service names; the agent maps it to drover's
// HAProxy image.
const LBImage = "rancher/lb-service-haproxy"

// ServiceLister finds Kubernetes Services (a lister, or a map in tests).
type ServiceLister interface {
	Get(namespace, name string) (*corev1.Service, error)
}

// SecretLister finds Kubernetes Secrets.
type SecretLister interface {
	Get(namespace, name string) (*corev1.Secret, error)
}

// FieldError is an Ingress that cannot be served: Field is the path of the
// bad field (spec.rules[0].http.paths[1].backend.service.port.name).
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// FrontName is the shared LB service of the stack: its HAProxy (on every
// host, on the controller's HTTP and HTTPS ports) serves every Ingress
// that does not ask for an LB of its own.
const FrontName = "ingress"

// Ports are the shared front's ports.
type Ports struct{ HTTP, HTTPS int }

// Desired is what an Ingress becomes in the engine.
type Desired struct {
	Name string // the LB service's name
	// Front is the shared LB that serves this one's rules ("" when the
	// Ingress has an LB of its own: it set its own ports).
	Front    string
	Warnings []string          // annotations that do not apply, said in an Event
	Labels   map[string]string // ownership
	Scale    int
	Global   bool
	Affinity string // a host label the LB's hosts must carry (k=v)
	LB       api.LBConfig
	// Certs are the TLS secrets to hand over as engine certificates, by
	// engine certificate name (PEM certificate and key).
	Certs map[string]Cert
	// DefaultCert is the engine certificate name for clients that send no
	// name the others match (the first spec.tls entry).
	DefaultCert string
}

// Cert is a TLS secret's content.
type Cert struct {
	Secret   string // namespace/name
	Cert     string
	Key      string
	Revision string // the secret's resourceVersion
}

// LBName is an Ingress's LB service name: <namespace>-<name> as an engine
// name (api.EngineName: a DNS label, distinct for distinct Ingresses).
func LBName(namespace, name string) string {
	return api.EngineName(namespace + "-" + name)
}

// CertName is the engine certificate made from a TLS secret for an LB.
func CertName(lbName, secret string) string {
	return api.EngineName(lbName + "-" + secret)
}

// Translate turns an Ingress into its LB service: pure, from the Ingress,
// the Services its backends name and the Secrets its TLS entries name.
// Backends are the engine twins of the Services (kubernetes-agent keeps
// their ready endpoints in status.endpoints), by "namespace/name".
//
// An Ingress is served by the shared front on the ports given, unless it
// sets its own (drover.io/http-port, https-port): then it gets an LB of its
// own, which the scale, global and host-label annotations shape.
func Translate(ing *networkingv1.Ingress, svcs ServiceLister, secrets SecretLister, front Ports) (*Desired, error) {
	d := &Desired{
		Name:   LBName(ing.Namespace, ing.Name),
		Labels: map[string]string{LabelUID: string(ing.UID), LabelNamespace: ing.Namespace, LabelName: ing.Name},
		Scale:  1,
		Certs:  map[string]Cert{},
	}
	httpPort, err := portAnnotation(ing, AnnotationHTTPPort, front.HTTP)
	if err != nil {
		return nil, err
	}
	httpsPort, err := portAnnotation(ing, AnnotationHTTPSPort, front.HTTPS)
	if err != nil {
		return nil, err
	}
	p1, _ := annotation(ing, AnnotationHTTPPort)
	p2, _ := annotation(ing, AnnotationHTTPSPort)
	if p1 == "" && p2 == "" {
		d.Front, d.Scale = FrontName, 0
		d.Labels[lb.LabelFront] = FrontName
	}
	if v, name := annotation(ing, AnnotationScale); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			return nil, fieldErr("metadata.annotations["+name+"]", "%q is not a scale (0-100)", v)
		}
		d.Scale = n
	}
	if v, name := annotation(ing, AnnotationGlobal); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fieldErr("metadata.annotations["+name+"]", "%q is not true or false", v)
		}
		d.Global = b
	}
	if v, name := annotation(ing, AnnotationHostLabel); v != "" {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return nil, fieldErr("metadata.annotations["+name+"]", "%q is not key=value", v)
		}
		d.Affinity = v
	}
	if d.Front != "" {
		for _, a := range []string{AnnotationScale, AnnotationGlobal, AnnotationHostLabel, AnnotationStickiness, AnnotationConfig} {
			if v, name := annotation(ing, a); v != "" {
				d.Warnings = append(d.Warnings, fmt.Sprintf("metadata.annotations[%s] is ignored: it shapes an LB of the Ingress's own, which it gets by setting %s or %s; the shared LB serves it", name, AnnotationHTTPPort, AnnotationHTTPSPort))
			}
		}
		d.Scale, d.Global, d.Affinity = 0, false, ""
	}
	if d.Front != "" {
		return translateRules(ing, svcs, secrets, d, httpPort, httpsPort)
	}
	if v, _ := annotation(ing, AnnotationStickiness); v != "" {
		d.LB.StickinessPolicy = &api.StickinessPolicy{Cookie: v, Mode: "insert", Indirect: true, NoCache: true}
	}
	d.LB.Config, _ = annotation(ing, AnnotationConfig)
	return translateRules(ing, svcs, secrets, d, httpPort, httpsPort)
}

func translateRules(ing *networkingv1.Ingress, svcs ServiceLister, secrets SecretLister, d *Desired, httpPort, httpsPort int) (*Desired, error) {

	// TLS: every entry's secret becomes an engine certificate; its hosts
	// are served on the HTTPS port (SNI picks the certificate).
	tlsHosts := map[string]bool{}
	anyTLS := false
	for i, t := range ing.Spec.TLS {
		f := fmt.Sprintf("spec.tls[%d]", i)
		if t.SecretName == "" {
			return nil, fieldErr(f+".secretName", "empty: drover serves TLS with a certificate from a Secret of type kubernetes.io/tls")
		}
		sec, err := secrets.Get(ing.Namespace, t.SecretName)
		if err != nil {
			return nil, fieldErr(f+".secretName", "secret %s/%s: %v", ing.Namespace, t.SecretName, err)
		}
		crt, key := string(sec.Data[corev1.TLSCertKey]), string(sec.Data[corev1.TLSPrivateKeyKey])
		if !strings.Contains(crt, "BEGIN CERTIFICATE") || !strings.Contains(key, "PRIVATE KEY") {
			return nil, fieldErr(f+".secretName", "secret %s/%s has no PEM tls.crt and tls.key", ing.Namespace, t.SecretName)
		}
		name := CertName(d.Name, t.SecretName)
		d.Certs[name] = Cert{Secret: ing.Namespace + "/" + t.SecretName, Cert: crt, Key: key, Revision: sec.ResourceVersion}
		if d.DefaultCert == "" {
			d.DefaultCert = name
		}
		anyTLS = true
		for _, h := range t.Hosts {
			tlsHosts[h] = true
		}
	}

	var rules []api.PortRule
	add := func(host, path, pathType string, be networkingv1.IngressBackend, f string) error {
		target, err := backend(ing.Namespace, be, svcs, f)
		if err != nil {
			return err
		}
		r := target
		r.Hostname, r.Path, r.PathType = host, path, pathType
		r.SourcePort, r.Protocol = httpPort, "http"
		rules = append(rules, r)
		if anyTLS && (host == "" || tlsHosts[host]) {
			r.SourcePort, r.Protocol = httpsPort, "https"
			rules = append(rules, r)
		}
		return nil
	}
	for i, rule := range ing.Spec.Rules {
		f := fmt.Sprintf("spec.rules[%d]", i)
		if rule.HTTP == nil {
			continue
		}
		for j, p := range rule.HTTP.Paths {
			pf := fmt.Sprintf("%s.http.paths[%d]", f, j)
			pt := api.PathPrefix
			if p.PathType != nil && *p.PathType == networkingv1.PathTypeExact {
				pt = api.PathExact
			}
			path := p.Path
			if path == "" {
				path = "/"
			}
			if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n{}#\\") {
				return nil, fieldErr(pf+".path", "%q: a path starts with / and holds no spaces, braces, # or backslashes", p.Path)
			}
			if err := add(rule.Host, path, pt, p.Backend, pf+".backend"); err != nil {
				return nil, err
			}
		}
	}
	if be := ing.Spec.DefaultBackend; be != nil {
		if err := add("", "", "", *be, "spec.defaultBackend"); err != nil {
			return nil, err
		}
	}
	if len(rules) == 0 {
		return nil, fieldErr("spec", "no rules with paths and no defaultBackend: nothing to serve")
	}
	d.LB.PortRules = rules
	return d, nil
}

func portAnnotation(ing *networkingv1.Ingress, key string, def int) (int, error) {
	v, name := annotation(ing, key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 65535 {
		return 0, fieldErr("metadata.annotations["+name+"]", "%q is not a port (1-65535)", v)
	}
	return n, nil
}

// backend resolves an Ingress backend to a port rule's target: the engine
// twin of the Service, and the endpoints' port that the Service port
// (by number or by name) leads to.
func backend(ns string, be networkingv1.IngressBackend, svcs ServiceLister, f string) (api.PortRule, error) {
	if be.Resource != nil {
		return api.PortRule{}, fieldErr(f+".resource", "resource backends are not supported; use a service")
	}
	if be.Service == nil {
		return api.PortRule{}, fieldErr(f+".service", "missing")
	}
	s, err := svcs.Get(ns, be.Service.Name)
	if err != nil {
		return api.PortRule{}, fieldErr(f+".service.name", "service %s/%s: %v", ns, be.Service.Name, err)
	}
	var sp *corev1.ServicePort
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if (be.Service.Port.Name != "" && p.Name == be.Service.Port.Name) || (be.Service.Port.Name == "" && p.Port == be.Service.Port.Number) {
			sp = p
		}
	}
	if sp == nil {
		if be.Service.Port.Name != "" {
			return api.PortRule{}, fieldErr(f+".service.port.name", "service %s/%s has no port named %q", ns, s.Name, be.Service.Port.Name)
		}
		return api.PortRule{}, fieldErr(f+".service.port.number", "service %s/%s has no port %d", ns, s.Name, be.Service.Port.Number)
	}
	if sp.Protocol != "" && sp.Protocol != corev1.ProtocolTCP {
		return api.PortRule{}, fieldErr(f+".service.port", "port %d of service %s/%s is %s; HTTP needs TCP", sp.Port, ns, s.Name, sp.Protocol)
	}
	r := api.PortRule{ServiceID: ns + "/" + s.Name}
	switch {
	case sp.TargetPort.StrVal != "":
		// A named container port: each endpoint's port of the Service
		// port's name holds the number on that pod. (A Service of one
		// unnamed port: its endpoints have that one port; no filter.)
		r.TargetPortName = sp.Name
	case sp.TargetPort.IntVal != 0:
		r.TargetPort = int(sp.TargetPort.IntVal)
	default:
		r.TargetPort = int(sp.Port)
	}
	return r, nil
}

// SortedCertNames lists a Desired's certificate names, the default first.
func (d *Desired) SortedCertNames() []string {
	var names []string
	for n := range d.Certs {
		if n != d.DefaultCert {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	if d.DefaultCert != "" {
		names = append([]string{d.DefaultCert}, names...)
	}
	return names
}
