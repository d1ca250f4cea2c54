package kubectld

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/drover/drover/api"
	"github.com/drover/drover/kubectld/manifest"
)

// FieldManager is the server-side apply field manager of every write.
const FieldManager = "drover"

// Verbs of /v1-kubectl.
const (
	VerbCreate  = "create"
	VerbApply   = "apply"
	VerbReplace = "replace"
	VerbDelete  = "delete"
)

var crdGK = schema.GroupKind{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}
var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// Applier writes documents to Kubernetes through the dynamic client and a
// discovery-backed REST mapper: what kubectl create/apply/replace/delete do,
// without kubectl.
type Applier struct {
	dyn      dynamic.Interface
	disco    discovery.CachedDiscoveryInterface
	mapper   *restmapper.DeferredDiscoveryRESTMapper
	short    meta.RESTMapper
	workers  int
	log      *slog.Logger
	crdWait  time.Duration
	resetMu  sync.Mutex
	lastSync time.Time
}

// NewApplier builds an Applier for cfg; workers writes run at once.
func NewApplier(cfg *rest.Config, workers int, log *slog.Logger) (*Applier, error) {
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	if workers <= 0 {
		workers = 8
	}
	disco := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(disco)
	return &Applier{dyn: dyn, disco: disco, mapper: mapper, short: restmapper.NewShortcutExpander(mapper, disco, nil),
		workers: workers, log: log, crdWait: time.Minute}, nil
}

// ApplyOptions tune one request.
type ApplyOptions struct {
	DefaultNamespace string
	// Partial keeps the documents applied before a failing one; by default
	// a request is all or nothing.
	Partial bool
	// Labels are set on every object (a stack's ownership).
	Labels map[string]string
	// Annotations are set on every object.
	Annotations map[string]string
}

// Ref names an object written.
type Ref = api.KubeObject

// DocError is a request's first failing document.
type DocError struct {
	Doc manifest.Document
	Err error
}

func (e *DocError) Error() string { return e.Doc.Where() + ": " + message(e.Err) }
func (e *DocError) Unwrap() error { return e.Err }

// message makes an API error say what a user can act on: the status
// message (it holds the field path for schema errors) or the error.
func message(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		msg := st.Message
		if st.Details != nil && len(st.Details.Causes) > 0 && !strings.Contains(msg, st.Details.Causes[0].Field) {
			var parts []string
			for _, c := range st.Details.Causes {
				parts = append(parts, strings.TrimSpace(c.Field+": "+c.Message))
			}
			msg += " (" + strings.Join(parts, "; ") + ")"
		}
		return msg
	}
	return err.Error()
}

// Result is what a request did, in document order.
type Result struct {
	Lines   []string // "deployment.apps/web created", as kubectl prints
	Applied []Ref
	Err     error // a *DocError, or a request-level error
	// Errors are per-document failures a delete went on past.
	Errors []string
}

// item is one document on its way.
type item struct {
	doc     manifest.Document
	obj     *unstructured.Unstructured
	mapping *meta.RESTMapping
	before  *unstructured.Unstructured // the object before the write (nil: it did not exist)
	after   *unstructured.Unstructured
	line    string // what kubectl would print
	base    string // kind/name, before the verb's word
	fetched bool   // before is what the cluster holds
	noop    bool   // the dry run said applying changes nothing
	done    bool   // the document is applied
	wrote   bool   // and this request wrote it (undo puts it back)
}

func (a *Applier) resource(it *item) dynamic.ResourceInterface {
	r := a.dyn.Resource(it.mapping.Resource)
	if it.mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		return r.Namespace(it.obj.GetNamespace())
	}
	return r
}

// resolve maps a document to its resource and sets its namespace;
// pending means its kind is defined by a CRD of the same request.
func (a *Applier) resolve(it *item, defNS string, crds map[schema.GroupKind]bool) (pending bool, err error) {
	gvk := it.obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil && meta.IsNoMatchError(err) {
		// Discovery may be older than a CRD made since: look again once.
		a.refreshDiscovery(false)
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if err != nil {
		if meta.IsNoMatchError(err) {
			if crds[gvk.GroupKind()] {
				return true, nil
			}
			return false, fmt.Errorf("this cluster has no kind %s in %s (is its CustomResourceDefinition installed?)", gvk.Kind, gvk.GroupVersion())
		}
		return false, err
	}
	it.mapping = m
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		if it.obj.GetNamespace() == "" {
			ns := defNS
			if ns == "" {
				ns = metav1.NamespaceDefault
			}
			it.obj.SetNamespace(ns)
		}
	} else {
		it.obj.SetNamespace("")
	}
	it.base = objectName(m, it.obj)
	it.line = it.base
	return false, nil
}

// refreshDiscovery forgets cached discovery, at most every 2 s unless forced.
func (a *Applier) refreshDiscovery(force bool) {
	a.resetMu.Lock()
	defer a.resetMu.Unlock()
	if !force && time.Since(a.lastSync) < 2*time.Second {
		return
	}
	a.mapper.Reset()
	a.lastSync = time.Now()
}

func objectName(m *meta.RESTMapping, o *unstructured.Unstructured) string {
	kind := strings.ToLower(m.GroupVersionKind.Kind)
	if g := m.GroupVersionKind.Group; g != "" {
		kind += "." + g
	}
	name := o.GetName()
	if name == "" {
		name = o.GetGenerateName()
	}
	return kind + "/" + name
}

// definedKinds lists the kinds the CRDs among docs define.
func definedKinds(items []*item) map[schema.GroupKind]bool {
	out := map[schema.GroupKind]bool{}
	for _, it := range items {
		if it.obj.GroupVersionKind().GroupKind() != crdGK {
			continue
		}
		g, _, _ := unstructured.NestedString(it.obj.Object, "spec", "group")
		k, _, _ := unstructured.NestedString(it.obj.Object, "spec", "names", "kind")
		out[schema.GroupKind{Group: g, Kind: k}] = true
	}
	return out
}

// phase orders writes: namespaces and CRDs before what lives in them.
func phase(it *item) int {
	gk := it.obj.GroupVersionKind().GroupKind()
	if gk == crdGK || gk == (schema.GroupKind{Kind: "Namespace"}) {
		return 0
	}
	return 1
}

// Run does verb for every document. Unless o.Partial, a create, apply or
// replace first checks every document with a server-side dry run (schema,
// unknown fields, admission), writing nothing if one fails; a failure after
// that (a custom resource whose CRD came in the same request) undoes what
// was written.
func (a *Applier) Run(ctx context.Context, verb string, docs []manifest.Document, o ApplyOptions) *Result {
	res := &Result{}
	items := make([]*item, len(docs))
	for i, d := range docs {
		obj := d.Object.DeepCopy()
		for k, v := range o.Labels {
			l := obj.GetLabels()
			if l == nil {
				l = map[string]string{}
			}
			l[k] = v
			obj.SetLabels(l)
		}
		for k, v := range o.Annotations {
			an := obj.GetAnnotations()
			if an == nil {
				an = map[string]string{}
			}
			an[k] = v
			obj.SetAnnotations(an)
		}
		items[i] = &item{doc: d, obj: obj}
	}
	crds := definedKinds(items)
	var pending []*item
	for _, it := range items {
		p, err := a.resolve(it, o.DefaultNamespace, crds)
		if err != nil {
			res.Err = &DocError{Doc: it.doc, Err: err}
			return res
		}
		if p {
			pending = append(pending, it)
		}
	}
	if verb == VerbDelete {
		a.delete(ctx, items, res)
		return res
	}
	ready := slices.DeleteFunc(slices.Clone(items), func(it *item) bool { return it.mapping == nil })
	a.prefetch(ctx, ready)
	if !o.Partial {
		if err := a.forEach(ctx, ready, func(ctx context.Context, it *item) error { return a.write(ctx, verb, it, true) }); err != nil {
			res.Err = err
			return res
		}
	}
	var err error
	for p := 0; p <= 1 && err == nil; p++ {
		var batch []*item
		for _, it := range ready {
			if phase(it) == p {
				batch = append(batch, it)
			}
		}
		// Partial requests go one document at a time, in order, so what
		// precedes a failing document is exactly what stays written.
		workers := a.workers
		if o.Partial {
			workers = 1
		}
		err = a.forEachN(ctx, workers, batch, func(ctx context.Context, it *item) error { return a.write(ctx, verb, it, false) })
		if err == nil && p == 0 && len(pending) > 0 {
			err = a.resolvePending(ctx, items, pending, verb, o)
			ready = append(ready, pending...)
		}
	}
	if err != nil && !o.Partial {
		a.undo(items)
	}
	for _, it := range items {
		if it.done {
			res.Lines = append(res.Lines, it.line)
			res.Applied = append(res.Applied, Ref{APIVersion: it.obj.GetAPIVersion(), Kind: it.obj.GetKind(), Namespace: it.obj.GetNamespace(), Name: it.after.GetName()})
		}
	}
	res.Err = err
	return res
}

// resolvePending waits for the request's CRDs to be served, then maps and
// (unless partial) dry-runs the documents of their kinds.
func (a *Applier) resolvePending(ctx context.Context, items, pending []*item, verb string, o ApplyOptions) error {
	for _, it := range items {
		if it.done && it.obj.GroupVersionKind().GroupKind() == crdGK {
			if err := a.waitEstablished(ctx, it.obj.GetName()); err != nil {
				return &DocError{Doc: it.doc, Err: err}
			}
		}
	}
	a.refreshDiscovery(true)
	for _, it := range pending {
		if _, err := a.resolve(it, o.DefaultNamespace, nil); err != nil {
			return &DocError{Doc: it.doc, Err: err}
		}
	}
	a.prefetch(ctx, pending)
	if o.Partial {
		return nil
	}
	return a.forEach(ctx, pending, func(ctx context.Context, it *item) error { return a.write(ctx, verb, it, true) })
}

func (a *Applier) waitEstablished(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, a.crdWait)
	defer cancel()
	for {
		crd, err := a.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
			for _, c := range conds {
				cm, _ := c.(map[string]any)
				if cm["type"] == "Established" && cm["status"] == "True" {
					return nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CustomResourceDefinition %s not established after %s", name, a.crdWait)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// forEach runs f over items with a.workers at once; the error returned is
// that of the first failing document in document order.
func (a *Applier) forEach(ctx context.Context, items []*item, f func(context.Context, *item) error) error {
	return a.forEachN(ctx, a.workers, items, f)
}

func (a *Applier) forEachN(ctx context.Context, workers int, items []*item, f func(context.Context, *item) error) error {
	errs := make([]error, len(items))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, it := range items {
		sem <- struct{}{}
		if ctx.Err() != nil {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, it); err != nil {
				errs[i] = &DocError{Doc: it.doc, Err: err}
				cancel()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// write does verb for one document (dry: server-side dry run only).
func (a *Applier) write(ctx context.Context, verb string, it *item, dry bool) error {
	r := a.resource(it)
	var dryRun []string
	if dry {
		dryRun = []string{metav1.DryRunAll}
	}
	name := it.obj.GetName()
	if name != "" && !it.fetched {
		cur, err := r.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			it.before = nil
		case err != nil:
			return err
		default:
			it.before = cur
		}
		it.fetched = true
	}
	if !dry && it.noop {
		// The dry run returned the object as it is: applying would
		// change nothing, so nothing is sent.
		it.line = it.base + " unchanged"
		it.after, it.done = it.before, true
		return nil
	}
	var out *unstructured.Unstructured
	var err error
	switch verb {
	case VerbCreate:
		out, err = r.Create(ctx, it.obj, metav1.CreateOptions{FieldManager: FieldManager, DryRun: dryRun, FieldValidation: "Strict"})
		if err == nil {
			it.line += " created"
		}
	case VerbApply:
		if name == "" {
			return errors.New("apply needs metadata.name (generateName is for create)")
		}
		body, jerr := it.obj.MarshalJSON()
		if jerr != nil {
			return jerr
		}
		force := true
		out, err = r.Patch(ctx, name, types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: FieldManager, Force: &force, DryRun: dryRun, FieldValidation: "Strict"})
		if err == nil && dry {
			it.noop = it.before != nil && sameObject(out, it.before)
		}
		if err == nil {
			switch {
			case it.before == nil:
				it.line += " created"
			case sameContent(it.before, out):
				it.line += " unchanged"
			default:
				it.line += " configured"
			}
		}
	case VerbReplace:
		if name == "" {
			return errors.New("replace needs metadata.name")
		}
		obj := it.obj.DeepCopy()
		if obj.GetResourceVersion() == "" {
			cur := it.before
			if cur == nil {
				return apierrors.NewNotFound(it.mapping.Resource.GroupResource(), name)
			}
			obj.SetResourceVersion(cur.GetResourceVersion())
		}
		out, err = r.Update(ctx, obj, metav1.UpdateOptions{FieldManager: FieldManager, DryRun: dryRun, FieldValidation: "Strict"})
		if err == nil {
			it.line += " replaced"
		}
	default:
		return fmt.Errorf("unknown verb %q", verb)
	}
	if err != nil {
		if !dry {
			it.line = it.base
		}
		return err
	}
	if dry {
		it.line = it.base
	} else {
		it.after, it.done, it.wrote = out, true, true
	}
	return nil
}

// sameObject says whether two reads of an object are the same, field for
// field (managedFields too: a change of ownership is a change).
func sameObject(a, b *unstructured.Unstructured) bool {
	strip := func(u *unstructured.Unstructured) map[string]any {
		c := u.DeepCopy()
		delete(c.Object, "apiVersion")
		delete(c.Object, "kind")
		return c.Object
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}

// prefetch reads, one list per resource and namespace, the objects the
// documents name, so each document costs one request less; small groups
// are read one by one when written.
func (a *Applier) prefetch(ctx context.Context, items []*item) {
	type key struct {
		gvr schema.GroupVersionResource
		ns  string
	}
	groups := map[key][]*item{}
	for _, it := range items {
		if it.mapping == nil || it.obj.GetName() == "" || it.fetched {
			continue
		}
		k := key{it.mapping.Resource, it.obj.GetNamespace()}
		groups[k] = append(groups[k], it)
	}
	for k, g := range groups {
		if len(g) < 4 {
			continue
		}
		var l *unstructured.UnstructuredList
		var err error
		if k.ns != "" {
			l, err = a.dyn.Resource(k.gvr).Namespace(k.ns).List(ctx, metav1.ListOptions{})
		} else {
			l, err = a.dyn.Resource(k.gvr).List(ctx, metav1.ListOptions{})
		}
		if err != nil {
			continue // read one by one (no list permission, say)
		}
		byName := make(map[string]*unstructured.Unstructured, len(l.Items))
		for i := range l.Items {
			byName[l.Items[i].GetName()] = &l.Items[i]
		}
		for _, it := range g {
			it.before, it.fetched = byName[it.obj.GetName()], true
		}
	}
}

// undo puts back what a failed request wrote, newest first: objects it
// made are deleted, objects it changed get their previous spec back.
func (a *Applier) undo(items []*item) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		if !it.wrote {
			continue
		}
		r := a.resource(it)
		var err error
		if it.before == nil {
			err = r.Delete(ctx, it.after.GetName(), metav1.DeleteOptions{})
		} else {
			prev := it.before.DeepCopy()
			prev.SetManagedFields(nil)
			var cur *unstructured.Unstructured
			if cur, err = r.Get(ctx, prev.GetName(), metav1.GetOptions{}); err == nil {
				prev.SetResourceVersion(cur.GetResourceVersion())
				_, err = r.Update(ctx, prev, metav1.UpdateOptions{FieldManager: FieldManager})
			}
		}
		if err != nil && !apierrors.IsNotFound(err) {
			a.log.Error("undoing a failed request", "object", it.line, "err", err)
		}
		it.done = false
	}
}

// delete removes every document's object, going on past the missing ones
// (kubectl delete -f does the same); objects in the request's namespaces
// and CRDs go before those.
func (a *Applier) delete(ctx context.Context, items []*item, res *Result) {
	lines := make([]string, len(items))
	errs := make([]string, len(items))
	for p := 1; p >= 0; p-- {
		var batch []*item
		idx := map[*item]int{}
		for i, it := range items {
			if phase(it) == p {
				batch = append(batch, it)
				idx[it] = i
			}
		}
		var mu sync.Mutex
		_ = a.forEach(ctx, batch, func(ctx context.Context, it *item) error {
			bg := metav1.DeletePropagationBackground
			err := a.resource(it).Delete(ctx, it.obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &bg})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs[idx[it]] = fmt.Sprintf("%s: %s", it.doc.Where(), message(err))
				return nil
			}
			lines[idx[it]] = it.line + " deleted"
			return nil
		})
	}
	for i := range items {
		if lines[i] != "" {
			res.Lines = append(res.Lines, lines[i])
		}
		if errs[i] != "" {
			res.Errors = append(res.Errors, errs[i])
		}
	}
}

// sameContent says whether an apply left an object as it was, but for
// the bookkeeping (resourceVersion, managedFields) a first apply by our
// field manager adds.
func sameContent(a, b *unstructured.Unstructured) bool {
	if a.GetResourceVersion() == b.GetResourceVersion() {
		return true
	}
	strip := func(u *unstructured.Unstructured) map[string]any {
		c := u.DeepCopy()
		unstructured.RemoveNestedField(c.Object, "metadata", "managedFields")
		unstructured.RemoveNestedField(c.Object, "metadata", "resourceVersion")
		return c.Object
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}
