// Package ingresscontroller serves Kubernetes Ingresses with drover's HAProxy
// load balancers: each Ingress of its IngressClass becomes an LB service in
// the engine stack kubernetes-ingress-lbs (rules, paths, TLS certificates),
// and the LB's public endpoints become the Ingress's status.
//
// informers (Ingress, IngressClass, Service, Secret) and the engine's watch
// cache (the LB services, the certificates) → one work queue of Ingress keys
// → a level-triggered sync that makes the engine match the Ingress. One
// replica leads at a time (an engine lease); the others wait.
package ingresscontroller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/internal/lifecycle"
	"github.com/drover/drover/lb"
)

// frontKey is the work queue's key for the shared LB itself (no Ingress
// key has two slashes).
const frontKey = "//front"

// ControllerName is the IngressClass spec.controller this controller serves.
const ControllerName = "drover.io/ingress-controller"

// DefaultClass is the IngressClass the controller makes when none of its own
// exists (not marked default: an admin decides that).
const DefaultClass = "drover"

// Options configure the controller.
type Options struct {
	Kube     *rest.Config
	Engine   *client.Client
	Logger   *slog.Logger
	Listen   string // /healthz, /readyz, /metrics; "" serves nothing
	Workers  int    // default 4
	Identity string // for leader election (default host name and pid)
	// LeaseDuration: how long a silent leader keeps the lease (15s).
	LeaseDuration time.Duration
	Registry      *prometheus.Registry
	// HTTPPort and HTTPSPort are the shared LB's ports (80, 443); it runs
	// on every host unless FrontScale says how many containers.
	HTTPPort, HTTPSPort int
	FrontScale          int
}

// Run serves Ingresses until ctx ends, leading while it holds the lease.
func Run(ctx context.Context, o Options) error {
	if o.Kube == nil || o.Engine == nil {
		return errors.New("ingress-controller: a Kubernetes config and engine credentials are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Workers == 0 {
		o.Workers = 4
	}
	if o.HTTPPort == 0 {
		o.HTTPPort = 80
	}
	if o.HTTPSPort == 0 {
		o.HTTPSPort = 443
	}
	if o.Identity == "" {
		h, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	kcfg := rest.CopyConfig(o.Kube)
	if kcfg.QPS == 0 {
		kcfg.QPS, kcfg.Burst = 100, 200
	}
	kcfg.UserAgent = "drover-ingress-controller"
	kc, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("ingress-controller: kubernetes client: %w", err)
	}
	m := newMetrics(o.Registry)
	var leading sync.Mutex
	var cur *controller
	if o.Listen != "" {
		ops := &lifecycle.Ops{Listen: o.Listen, Gatherer: o.Registry, Ready: func() error {
			leading.Lock()
			defer leading.Unlock()
			if cur != nil && !cur.synced() {
				return errors.New("leading, caches not synced yet")
			}
			return nil
		}}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("ingress-controller: %w", err)
		}
		defer ops.Stop()
	}
	el := &harness.Election{Engine: o.Engine, Name: "ingress-controller", Identity: o.Identity, Duration: o.LeaseDuration, Log: o.Logger}
	el.Run(ctx, func(ctx context.Context) {
		c := newController(o, kc, m)
		leading.Lock()
		cur = c
		leading.Unlock()
		m.leader.Set(1)
		if err := c.run(ctx); err != nil && ctx.Err() == nil {
			o.Logger.Error("ingress-controller stopped leading", "err", err)
		}
		m.leader.Set(0)
		leading.Lock()
		cur = nil
		leading.Unlock()
	})
	return nil
}

type metrics struct {
	ctrl   *harness.Metrics
	writes *prometheus.CounterVec
	leader prometheus.Gauge
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		ctrl: harness.NewMetrics(reg),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_ingress_controller_writes_total", Help: "Writes made, by side (engine, kubernetes), kind and operation.",
		}, []string{"side", "kind", "op"}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{Name: "drover_ingress_controller_leader", Help: "1 while this replica leads."}),
	}
	reg.MustRegister(m.writes, m.leader)
	return m
}

// controller is one term of leadership: its own informers, caches, queue.
type controller struct {
	o        Options
	log      *slog.Logger
	kube     kubernetes.Interface
	eng      *client.Client
	m        *metrics
	factory  informers.SharedInformerFactory
	ings     netlisters.IngressLister
	classes  netlisters.IngressClassLister
	svcs     corelisters.ServiceLister
	secrets  corelisters.SecretLister
	lbs      *client.Cache[api.Service, *api.Service]
	certs    *client.Cache[api.Certificate, *api.Certificate]
	queue    *harness.Controller
	recorder record.EventRecorder
	bcast    record.EventBroadcaster
	stackID  string

	mu       sync.Mutex
	reported map[string]string // key -> the last error told in an Event
}

func newController(o Options, kc kubernetes.Interface, m *metrics) *controller {
	c := &controller{o: o, log: o.Logger, kube: kc, eng: o.Engine, m: m, reported: map[string]string{}}
	c.queue = &harness.Controller{Name: "ingress-controller", Sync: c.sync, Workers: o.Workers, Log: o.Logger, Metrics: m.ctrl}
	c.factory = informers.NewSharedInformerFactory(kc, 0)
	c.ings = c.factory.Networking().V1().Ingresses().Lister()
	c.classes = c.factory.Networking().V1().IngressClasses().Lister()
	c.svcs = c.factory.Core().V1().Services().Lister()
	c.secrets = c.factory.Core().V1().Secrets().Lister()
	return c
}

func (c *controller) synced() bool {
	return c.lbs != nil && c.lbs.HasSynced() && c.certs.HasSynced()
}

func (c *controller) run(ctx context.Context) error {
	c.bcast = record.NewBroadcaster()
	c.bcast.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events("")})
	defer c.bcast.Shutdown()
	c.recorder = c.bcast.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "drover-ingress-controller"})

	st, err := harness.EnsureStack(ctx, c.eng, Stack, "load balancers of Kubernetes Ingresses (drover ingress-controller)", c.log)
	if err != nil {
		return err
	}
	c.stackID = st.ID
	// The apiserver may not answer yet (drover up starts everything at
	// once): the class is made in the background, retried until it is.
	go func() {
		for !c.ensureClass(ctx) {
			select {
			case <-ctx.Done():
				return
			case <-time.After(2 * time.Second):
			}
		}
	}()

	enqueueIng := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Enqueue(key)
		}
	}
	all := func(any) {
		for _, ing := range c.listIngresses() {
			c.queue.Enqueue(ing.Namespace + "/" + ing.Name)
		}
	}
	handler := func(f func(any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, n any) { f(n) }, DeleteFunc: f}
	}
	inf := c.factory.Networking().V1()
	if _, err := inf.Ingresses().Informer().AddEventHandler(handler(enqueueIng)); err != nil {
		return err
	}
	if _, err := inf.IngressClasses().Informer().AddEventHandler(handler(all)); err != nil {
		return err
	}
	if _, err := c.factory.Core().V1().Services().Informer().AddEventHandler(handler(func(obj any) { c.enqueueReferring(obj, false) })); err != nil {
		return err
	}
	if _, err := c.factory.Core().V1().Secrets().Informer().AddEventHandler(handler(func(obj any) { c.enqueueReferring(obj, true) })); err != nil {
		return err
	}
	// The engine: the LB services of the stack (their public endpoints
	// become the Ingresses' status) and the certificates.
	byOwner := func(s *api.Service) {
		if s.Name == FrontName {
			c.queue.Enqueue(frontKey)
			all(nil) // every shared Ingress's status follows the front's
			return
		}
		if ns, name := s.Labels[LabelNamespace], s.Labels[LabelName]; ns != "" && name != "" {
			c.queue.Enqueue(ns + "/" + name)
		}
	}
	c.lbs = client.NewCache(c.eng.Services(), client.ListOptions{StackID: st.ID}, client.Handlers[api.Service]{
		OnAdd: byOwner, OnUpdate: func(_, n *api.Service) { byOwner(n) }, OnDelete: byOwner,
	}, c.log)
	c.lbs.AddIndex("name", func(s *api.Service) []string { return []string{s.Name} })
	c.certs = client.NewCache(c.eng.Certificates(), client.ListOptions{}, client.Handlers[api.Certificate]{}, c.log)
	c.certs.AddIndex("name", func(s *api.Certificate) []string { return []string{s.Name} })
	c.certs.AddIndex("owner", func(s *api.Certificate) []string {
		if s.Labels[LabelNamespace] == "" {
			return nil
		}
		return []string{s.Labels[LabelNamespace] + "/" + s.Labels[LabelName]}
	})
	var wg sync.WaitGroup
	for _, r := range []interface{ Run(context.Context) }{c.lbs, c.certs} {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	defer wg.Wait()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	for typ, ok := range c.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("ingress-controller: %v informer never synced: %w", typ, ctx.Err())
		}
	}
	c.log.Info("ingress-controller: leading; syncing Ingresses", "workers", c.o.Workers)
	// The shared LB exists from the start, so its containers are placed
	// (and its address known) before the first Ingress comes.
	c.queue.Enqueue(frontKey)
	return c.queue.Run(ctx, c.lbs.WaitForSync, c.certs.WaitForSync)
}

func (c *controller) listIngresses() []*networkingv1.Ingress {
	list, _ := c.ings.List(labels.Everything())
	return list
}

// enqueueReferring enqueues the Ingresses of obj's namespace that name it
// (a Service as a backend, a Secret in spec.tls).
func (c *controller) enqueueReferring(obj any, secret bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	ings, _ := c.ings.Ingresses(m.GetNamespace()).List(labels.Everything())
	for _, ing := range ings {
		if refers(ing, m.GetName(), secret) {
			c.queue.Enqueue(ing.Namespace + "/" + ing.Name)
		}
	}
}

func refers(ing *networkingv1.Ingress, name string, secret bool) bool {
	if secret {
		for _, t := range ing.Spec.TLS {
			if t.SecretName == name {
				return true
			}
		}
		return false
	}
	is := func(be *networkingv1.IngressBackend) bool {
		return be != nil && be.Service != nil && be.Service.Name == name
	}
	if is(ing.Spec.DefaultBackend) {
		return true
	}
	for _, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			continue
		}
		for _, p := range r.HTTP.Paths {
			if is(&p.Backend) {
				return true
			}
		}
	}
	return false
}

// ensureClass makes the IngressClass "drover" when no class of ours exists,
// so `ingressClassName: drover` works out of the box.
func (c *controller) ensureClass(ctx context.Context) bool {
	list, err := c.kube.NetworkingV1().IngressClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		c.log.Warn("ingress-controller: listing IngressClasses (retrying)", "err", err)
		return false
	}
	for _, ic := range list.Items {
		if ic.Spec.Controller == ControllerName {
			return true
		}
	}
	ic := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: DefaultClass}, Spec: networkingv1.IngressClassSpec{Controller: ControllerName}}
	if _, err := c.kube.NetworkingV1().IngressClasses().Create(ctx, ic, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		c.log.Warn("ingress-controller: creating IngressClass (retrying)", "name", DefaultClass, "err", err)
		return false
	}
	c.m.writes.WithLabelValues("kubernetes", "ingressclass", "create").Inc()
	return true
}

// Ours says whether an Ingress is this controller's: its class names an
// IngressClass of ours; or, with no class, the legacy annotation says
// drover or rancher; or, with neither, the default IngressClass is ours.
func Ours(ing *networkingv1.Ingress, classes []*networkingv1.IngressClass) bool {
	if n := ing.Spec.IngressClassName; n != nil && *n != "" {
		for _, ic := range classes {
			if ic.Name == *n {
				return ic.Spec.Controller == ControllerName
			}
		}
		return false
	}
	if v, ok := ing.Annotations["kubernetes.io/ingress.class"]; ok {
		return v == "drover" || v == "rancher"
	}
	for _, ic := range classes {
		if ic.Annotations[networkingv1.AnnotationIsDefaultIngressClass] == "true" {
			return ic.Spec.Controller == ControllerName
		}
	}
	return false
}

// sync makes the engine match one Ingress: its LB service and certificates
// when it is ours, nothing when it is gone or not ours; then its status.
func (c *controller) sync(ctx context.Context, key string) error {
	if key == frontKey {
		return c.ensureFront(ctx)
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	ing, err := c.ings.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return c.cleanup(ctx, ns, name, "")
	} else if err != nil {
		return err
	}
	classes, _ := c.classes.List(labels.Everything())
	if !Ours(ing, classes) {
		return c.cleanup(ctx, ns, name, "")
	}
	if err := c.ensureFront(ctx); err != nil {
		return err
	}
	d, err := Translate(ing, serviceGetter{c.svcs}, secretGetter{c.secrets}, Ports{HTTP: c.o.HTTPPort, HTTPS: c.o.HTTPSPort})
	var fe *FieldError
	if errors.As(err, &fe) {
		// The last good LB keeps serving; a change to the Ingress, or
		// to a Service or Secret it names, brings it back here.
		c.report(ing, err)
		return c.writeStatus(ctx, ing)
	} else if err != nil {
		return err
	}
	c.report(ing, nil)
	c.warn(ing, d.Warnings)
	if err := c.ensureCerts(ctx, ing, d); err != nil {
		return err
	}
	if err := c.ensureLB(ctx, d); err != nil {
		return err
	}
	if err := c.cleanup(ctx, ns, name, string(ing.UID), d.SortedCertNames()...); err != nil {
		return err
	}
	return c.writeStatus(ctx, ing)
}

// report tells a bad Ingress in an Event (once per distinct error).
func (c *controller) report(ing *networkingv1.Ingress, err error) {
	key := ing.Namespace + "/" + ing.Name
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		delete(c.reported, key)
		return
	}
	if c.reported[key] == err.Error() {
		return
	}
	c.reported[key] = err.Error()
	c.recorder.Eventf(ing, corev1.EventTypeWarning, "InvalidIngress", "not served (the last good load balancer, if any, keeps serving): %v", err)
	c.log.Warn("ingress not served", "ingress", key, "err", err)
}

// warn tells annotations that do not apply in an Event (once each).
func (c *controller) warn(ing *networkingv1.Ingress, warnings []string) {
	key := "warn:" + ing.Namespace + "/" + ing.Name
	text := strings.Join(warnings, "; ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reported[key] == text {
		return
	}
	c.reported[key] = text
	if text != "" {
		c.recorder.Event(ing, corev1.EventTypeWarning, "AnnotationIgnored", text)
	}
}

// ensureFront keeps the shared LB service: every host (or FrontScale
// containers), publishing the HTTP and HTTPS ports, its rules those of
// the LB services that name it as their front.
func (c *controller) ensureFront(ctx context.Context) error {
	scale := c.o.FrontScale
	lc := &api.LaunchConfig{Image: LBImage, Ports: []string{fmt.Sprintf("%d:%d/tcp", c.o.HTTPPort, c.o.HTTPPort), fmt.Sprintf("%d:%d/tcp", c.o.HTTPSPort, c.o.HTTPSPort)}}
	spec := api.ServiceSpec{StackID: c.stackID, Kind: api.ServiceLoadBalancer, LaunchConfig: lc, Scale: &scale, Global: scale == 0, LBConfig: &api.LBConfig{}}
	have := c.lbs.ByIndex("name", FrontName)
	if len(have) == 0 {
		_, err := c.eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: FrontName, Annotations: map[string]string{"description": "the shared load balancer of Kubernetes Ingresses"}}, Spec: spec})
		if err != nil && !api.IsConflict(err) {
			return fmt.Errorf("the shared LB service %s: %w", FrontName, err)
		}
		c.m.writes.WithLabelValues("engine", "service", "create").Inc()
		return nil
	}
	cur := have[0]
	if sameJSON(api.ServiceSpec{StackID: cur.Spec.StackID, Kind: cur.Spec.Kind, LaunchConfig: cur.Spec.LaunchConfig, Scale: cur.Spec.Scale, Global: cur.Spec.Global}, api.ServiceSpec{StackID: spec.StackID, Kind: spec.Kind, LaunchConfig: spec.LaunchConfig, Scale: spec.Scale, Global: spec.Global}) {
		return nil
	}
	if _, err := c.eng.Services().Patch(ctx, cur.ID, map[string]any{"spec": map[string]any{"launchConfig": lc, "scale": scale, "global": spec.Global}}); err != nil {
		return fmt.Errorf("the shared LB service %s: %w", FrontName, err)
	}
	c.m.writes.WithLabelValues("engine", "service", "update").Inc()
	return nil
}

type serviceGetter struct{ l corelisters.ServiceLister }

func (g serviceGetter) Get(ns, name string) (*corev1.Service, error) {
	return g.l.Services(ns).Get(name)
}

type secretGetter struct{ l corelisters.SecretLister }

func (g secretGetter) Get(ns, name string) (*corev1.Secret, error) {
	return g.l.Secrets(ns).Get(name)
}

const labelSecretVersion = "io.drover.ingress.secret-version"

func (c *controller) ensureCerts(ctx context.Context, ing *networkingv1.Ingress, d *Desired) error {
	for name, want := range d.Certs {
		lbls := map[string]string{}
		for k, v := range d.Labels {
			lbls[k] = v
		}
		lbls[labelSecretVersion] = want.Revision
		have := c.certs.ByIndex("name", name)
		if len(have) == 0 {
			_, err := c.eng.Certificates().Create(ctx, &api.Certificate{Meta: api.Meta{Name: name, Labels: lbls,
				Annotations: map[string]string{"description": "TLS secret " + want.Secret + " of Ingress " + ing.Namespace + "/" + ing.Name}},
				Spec: api.CertificateSpec{Cert: want.Cert, Key: want.Key}})
			if err != nil && !api.IsConflict(err) {
				return fmt.Errorf("certificate %s: %w", name, err)
			}
			c.m.writes.WithLabelValues("engine", "certificate", "create").Inc()
			continue
		}
		cur := have[0]
		if cur.Labels[labelSecretVersion] == want.Revision && cur.Labels[LabelUID] == d.Labels[LabelUID] {
			continue
		}
		if _, err := c.eng.Certificates().Patch(ctx, cur.ID, map[string]any{"labels": lbls, "spec": map[string]any{"cert": want.Cert, "key": want.Key}}); err != nil {
			return fmt.Errorf("certificate %s: %w", name, err)
		}
		c.m.writes.WithLabelValues("engine", "certificate", "update").Inc()
	}
	return nil
}

// lbSpec is the part of an LB service this controller owns.
func (c *controller) lbSpec(d *Desired) api.ServiceSpec {
	lb := d.LB
	names := d.SortedCertNames()
	if len(names) > 0 {
		lb.DefaultCertificateID = names[0]
		lb.CertificateIDs = names[1:]
	}
	lc := &api.LaunchConfig{Image: LBImage}
	if d.Front != "" {
		// Served by the front; its containers are the front's.
		zero := 0
		return api.ServiceSpec{StackID: c.stackID, Kind: api.ServiceLoadBalancer, LaunchConfig: lc, Scale: &zero, LBConfig: &lb}
	}
	if d.Affinity != "" {
		lc.Labels = map[string]string{"io.rancher.scheduler.affinity:host_label": d.Affinity}
	}
	scale := d.Scale
	return api.ServiceSpec{StackID: c.stackID, Kind: api.ServiceLoadBalancer, LaunchConfig: lc, Scale: &scale, Global: d.Global, LBConfig: &lb}
}

func (c *controller) ensureLB(ctx context.Context, d *Desired) error {
	spec := c.lbSpec(d)
	have := c.lbs.ByIndex("name", d.Name)
	if len(have) == 0 {
		_, err := c.eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: d.Name, Labels: d.Labels}, Spec: spec})
		if err != nil && !api.IsConflict(err) {
			return fmt.Errorf("LB service %s: %w", d.Name, err)
		}
		c.m.writes.WithLabelValues("engine", "service", "create").Inc()
		return nil
	}
	cur := have[0]
	curSpec := api.ServiceSpec{StackID: cur.Spec.StackID, Kind: cur.Spec.Kind, LaunchConfig: cur.Spec.LaunchConfig, Scale: cur.Spec.Scale, Global: cur.Spec.Global, LBConfig: cur.Spec.LBConfig}
	if sameJSON(curSpec, spec) && sameJSON(cur.Labels, d.Labels) {
		return nil
	}
	patch := map[string]any{"labels": d.Labels, "spec": map[string]any{
		"kind": spec.Kind, "launchConfig": spec.LaunchConfig, "scale": spec.Scale, "global": spec.Global, "lbConfig": spec.LBConfig,
	}}
	if _, err := c.eng.Services().Patch(ctx, cur.ID, patch); err != nil {
		return fmt.Errorf("LB service %s: %w", d.Name, err)
	}
	c.m.writes.WithLabelValues("engine", "service", "update").Inc()
	return nil
}

func sameJSON(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	// Empty and missing maps and slices are the same here.
	var va, vb any
	json.Unmarshal(ja, &va)
	json.Unmarshal(jb, &vb)
	return reflect.DeepEqual(prune(va), prune(vb))
}

func prune(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, x := range t {
			x = prune(x)
			if x == nil || x == false || x == "" || x == float64(0) {
				continue
			}
			if m, ok := x.(map[string]any); ok && len(m) == 0 {
				continue
			}
			if s, ok := x.([]any); ok && len(s) == 0 {
				continue
			}
			out[k] = x
		}
		return out
	case []any:
		for i := range t {
			t[i] = prune(t[i])
		}
	}
	return v
}

// cleanup deletes what this controller made for namespace/name and no
// longer wants: everything when uid is "" (the Ingress is gone or not
// ours), else the LB of another uid and the certificates not in keep.
func (c *controller) cleanup(ctx context.Context, ns, name, uid string, keep ...string) error {
	lbName := LBName(ns, name)
	for _, s := range c.lbs.ByIndex("name", lbName) {
		if s.Labels[LabelNamespace] != ns || s.Labels[LabelName] != name || (uid != "" && s.Labels[LabelUID] == uid) {
			continue
		}
		if _, err := c.eng.Services().Delete(ctx, s.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("LB service %s: %w", s.Name, err)
		}
		c.m.writes.WithLabelValues("engine", "service", "delete").Inc()
	}
	for _, cert := range c.certs.ByIndex("owner", ns+"/"+name) {
		if uid != "" && contains(keep, cert.Name) {
			continue
		}
		if _, err := c.eng.Certificates().Delete(ctx, cert.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("certificate %s: %w", cert.Name, err)
		}
		c.m.writes.WithLabelValues("engine", "certificate", "delete").Inc()
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// writeStatus sets status.loadBalancer.ingress from the LB's public
// endpoints: one entry per address, with the ports it listens on.
func (c *controller) writeStatus(ctx context.Context, ing *networkingv1.Ingress) error {
	var want []networkingv1.IngressLoadBalancerIngress
	for _, s := range c.lbs.ByIndex("name", LBName(ing.Namespace, ing.Name)) {
		if s.Labels[LabelUID] != string(ing.UID) {
			continue
		}
		eps := s.Status.PublicEndpoints
		if s.Labels[lb.LabelFront] != "" {
			// Served by the front: its addresses, on the ports this
			// Ingress uses there.
			eps = nil
			for _, f := range c.lbs.ByIndex("name", s.Labels[lb.LabelFront]) {
				for _, ep := range f.Status.PublicEndpoints {
					if ep.Port == c.o.HTTPPort || (ep.Port == c.o.HTTPSPort && len(ing.Spec.TLS) > 0) {
						eps = append(eps, ep)
					}
				}
			}
		}
		want = LoadBalancerStatus(eps)
	}
	if reflect.DeepEqual(normalize(ing.Status.LoadBalancer.Ingress), normalize(want)) {
		return nil
	}
	cp := ing.DeepCopy()
	cp.Status.LoadBalancer.Ingress = want
	_, err := c.kube.NetworkingV1().Ingresses(ing.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("status of ingress %s/%s: %w", ing.Namespace, ing.Name, err)
	}
	c.m.writes.WithLabelValues("kubernetes", "ingress", "status").Inc()
	return nil
}

// LoadBalancerStatus turns public endpoints into Ingress status entries.
func LoadBalancerStatus(eps []api.PublicEndpoint) []networkingv1.IngressLoadBalancerIngress {
	ports := map[string]map[int32]bool{}
	for _, ep := range eps {
		if ep.IP == "" {
			continue
		}
		if ports[ep.IP] == nil {
			ports[ep.IP] = map[int32]bool{}
		}
		ports[ep.IP][int32(ep.Port)] = true
	}
	var out []networkingv1.IngressLoadBalancerIngress
	for ip, ps := range ports {
		e := networkingv1.IngressLoadBalancerIngress{IP: ip}
		for p := range ps {
			e.Ports = append(e.Ports, networkingv1.IngressPortStatus{Port: p, Protocol: corev1.ProtocolTCP})
		}
		sort.Slice(e.Ports, func(i, j int) bool { return e.Ports[i].Port < e.Ports[j].Port })
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP < out[j].IP })
	return out
}

func normalize(in []networkingv1.IngressLoadBalancerIngress) string {
	if len(in) == 0 {
		return ""
	}
	b, _ := json.Marshal(in)
	return strings.TrimSpace(string(b))
}
