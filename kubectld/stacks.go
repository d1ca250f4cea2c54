package kubectld

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/kubectld/manifest"
)

// What kubectld marks in Kubernetes and in the engine.
const (
	// LabelStack is on every object a stack applied: the engine stack id.
	// Pruning and removal touch only objects that carry it.
	LabelStack = "drover.io/stack"
	// AnnotationCreatedBy is on a namespace a stack made: removing that
	// stack removes the namespace too.
	AnnotationCreatedBy = "drover.io/created-by-stack"
	// Finalizer holds a template stack until its objects are gone.
	Finalizer = "drover.io/kubectld"
)

// Stack phases (status.state).
const (
	PhaseApplying = "applying"
	PhaseActive   = "active"
	PhaseError    = "error"
	PhaseRemoving = "removing"
)

// stackController keeps each stack of kind kubernetes with templates in
// step with them. It owns status.state, health, message, lastError,
// objects, release, releaseRevision and observedGeneration of those stacks,
// and their finalizer; nothing of the namespace mirrors kubernetes-agent
// keeps (kind kubernetes, no templates).
type stackController struct {
	eng     *client.Client
	kube    kubernetes.Interface
	applier *Applier
	helm    *helmRunner
	log     *slog.Logger
	ctrl    *harness.Controller
	stacks  *client.Cache[api.Stack, *api.Stack]
	writes  *prometheus.CounterVec
}

func newStackController(eng *client.Client, kube kubernetes.Interface, ap *Applier, helm *helmRunner, log *slog.Logger, m *harness.Metrics, writes *prometheus.CounterVec) *stackController {
	c := &stackController{eng: eng, kube: kube, applier: ap, helm: helm, log: log, writes: writes}
	c.ctrl = &harness.Controller{Name: "kubectld-stacks", Workers: 2, Log: log, Metrics: m, Sync: c.sync}
	enq := func(st *api.Stack) {
		if isTemplateStack(st) {
			c.ctrl.Enqueue(st.ID)
		}
	}
	c.stacks = client.NewCache(eng.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: enq, OnUpdate: func(_, n *api.Stack) { enq(n) },
	}, log)
	return c
}

// isTemplateStack: a stack kubectld keeps, or one whose objects it must
// still remove (its finalizer is on it).
func isTemplateStack(st *api.Stack) bool {
	return st.HasTemplates() || slices.Contains(st.Finalizers, Finalizer)
}

func (c *stackController) run(ctx context.Context) error {
	go c.stacks.Run(ctx)
	return c.ctrl.Run(ctx, c.stacks.WaitForSync)
}

func (c *stackController) synced() bool { return c.stacks.HasSynced() }

// namespaceOf is where a stack's namespaced objects go.
func namespaceOf(st *api.Stack) string {
	if st.Spec.Namespace != "" {
		return st.Spec.Namespace
	}
	return metav1.NamespaceDefault
}

func (c *stackController) sync(ctx context.Context, id string) error {
	cached, ok := c.stacks.Get(id)
	if !ok || !isTemplateStack(cached) {
		return nil
	}
	st := *cached
	if st.Deleting() {
		return c.remove(ctx, &st)
	}
	if !slices.Contains(st.Finalizers, Finalizer) {
		next := st
		next.Finalizers = append(slices.Clone(st.Finalizers), Finalizer)
		if _, err := c.eng.Stacks().Update(ctx, st.ID, &next); err != nil {
			return fmt.Errorf("adding the finalizer to stack %s: %w", st.Name, err)
		}
		c.writes.WithLabelValues("engine", "stack", "update").Inc()
		return nil // the update comes back through the cache
	}
	if st.Status.ObservedGeneration == st.Generation && st.Status.State == PhaseActive {
		return nil
	}
	status := st.Status
	status.ObservedGeneration = st.Generation
	objects, rel, err := c.apply(ctx, &st)
	if err != nil {
		status.State, status.Health, status.LastError = PhaseError, "unhealthy", err.Error()
		status.Message = "not applied: " + err.Error()
		if werr := c.writeStatus(ctx, &st, status); werr != nil {
			return werr
		}
		return err
	}
	status.State, status.Health, status.LastError = PhaseActive, "healthy", ""
	status.Objects = objects
	status.Message = fmt.Sprintf("%d objects applied in namespace %s", len(objects), namespaceOf(&st))
	if rel != nil {
		status.Release, status.ReleaseRevision = rel.name, rel.revision
		status.Message = fmt.Sprintf("Helm release %s revision %d: %d objects in namespace %s", rel.name, rel.revision, len(objects), namespaceOf(&st))
	}
	return c.writeStatus(ctx, &st, status)
}

func (c *stackController) writeStatus(ctx context.Context, st *api.Stack, status api.StackStatus) error {
	a, _ := json.Marshal(st.Status)
	b, _ := json.Marshal(status)
	if string(a) == string(b) {
		return nil
	}
	next := *st
	next.Status = status
	_, err := c.eng.Stacks().UpdateStatus(ctx, st.ID, &next)
	c.writes.WithLabelValues("engine", "stack", "status").Inc()
	if err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("writing the status of stack %s: %w", st.Name, err)
	}
	return nil
}

type releaseInfo struct {
	name     string
	revision int
	changed  bool
}

// apply makes the cluster hold what the stack's templates say, and prunes
// what the previous templates applied and these no longer hold.
func (c *stackController) apply(ctx context.Context, st *api.Stack) ([]api.KubeObject, *releaseInfo, error) {
	ns := namespaceOf(st)
	if err := c.ensureNamespace(ctx, st, ns); err != nil {
		return nil, nil, err
	}
	if manifest.IsChart(st.Spec.Templates) {
		objs, rel, err := c.helm.sync(ctx, st, ns)
		if rel != nil && rel.changed {
			c.writes.WithLabelValues("kubernetes", "release", "write").Inc()
		}
		return objs, rel, err
	}
	docs, err := manifest.Render(st.Spec.Templates, st.Spec.Answers)
	if err != nil {
		return nil, nil, err
	}
	res := c.applier.Run(ctx, VerbApply, docs, ApplyOptions{DefaultNamespace: ns, Labels: map[string]string{LabelStack: st.ID}})
	c.writes.WithLabelValues("kubernetes", "object", "apply").Add(float64(len(res.Lines)))
	if res.Err != nil {
		return nil, nil, res.Err
	}
	objects := res.Applied
	sortObjects(objects)
	if err := c.prune(ctx, st, st.Status.Objects, objects); err != nil {
		return nil, nil, err
	}
	return objects, nil, nil
}

func sortObjects(objs []api.KubeObject) {
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.Kind != b.Kind {
			return a.Kind < b.Kind
		}
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		return a.Name < b.Name
	})
}

func (c *stackController) ensureNamespace(ctx context.Context, st *api.Stack, ns string) error {
	_, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil {
		return nil
	}
	if !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	_, err = c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Annotations: map[string]string{AnnotationCreatedBy: st.ID},
	}}, metav1.CreateOptions{FieldManager: FieldManager})
	c.writes.WithLabelValues("kubernetes", "namespace", "create").Inc()
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	return nil
}

// prune deletes the objects of old that want lacks, when they still carry
// this stack's label: an object someone else took over stays.
func (c *stackController) prune(ctx context.Context, st *api.Stack, old, want []api.KubeObject) error {
	keep := map[api.KubeObject]bool{}
	for _, o := range want {
		keep[o] = true
	}
	for _, o := range old {
		if keep[o] {
			continue
		}
		if err := c.deleteOwned(ctx, st, o); err != nil {
			return err
		}
	}
	return nil
}

func (c *stackController) deleteOwned(ctx context.Context, st *api.Stack, o api.KubeObject) error {
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil {
		return nil
	}
	m, err := c.applier.mapper.RESTMapping(schema.GroupKind{Group: gv.Group, Kind: o.Kind}, gv.Version)
	if err != nil {
		c.log.Info("not pruning an object of a kind the cluster no longer has", "stack", st.Name, "object", o.String())
		return nil
	}
	r := c.applier.dyn.Resource(m.Resource)
	var ri interface {
		Delete(context.Context, string, metav1.DeleteOptions, ...string) error
	} = r
	getter := r.Get
	if o.Namespace != "" {
		ri, getter = r.Namespace(o.Namespace), r.Namespace(o.Namespace).Get
	}
	cur, err := getter(ctx, o.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", o.String(), err)
	}
	if cur.GetLabels()[LabelStack] != st.ID {
		c.log.Info("leaving an object another owner took over", "stack", st.Name, "object", o.String())
		return nil
	}
	bg := metav1.DeletePropagationBackground
	c.writes.WithLabelValues("kubernetes", "object", "delete").Inc()
	if err := ri.Delete(ctx, o.Name, metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: metav1.NewUIDPreconditions(string(cur.GetUID()))}); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("deleting %s: %w", o.String(), err)
	}
	c.log.Info("pruned", "stack", st.Name, "object", o.String())
	return nil
}

// remove deletes what the stack applied (and its namespace, when the stack
// made it), then lets the stack go.
func (c *stackController) remove(ctx context.Context, st *api.Stack) error {
	if !slices.Contains(st.Finalizers, Finalizer) {
		return nil
	}
	if st.Status.State != PhaseRemoving {
		status := st.Status
		status.State, status.Message = PhaseRemoving, "deleting the stack's Kubernetes objects"
		if err := c.writeStatus(ctx, st, status); err != nil {
			return err
		}
	}
	ns := namespaceOf(st)
	if manifest.IsChart(st.Spec.Templates) || st.Status.Release != "" {
		if err := c.helm.uninstall(ctx, st, ns); err != nil {
			return err
		}
	} else {
		for _, o := range st.Status.Objects {
			if err := c.deleteOwned(ctx, st, o); err != nil {
				return err
			}
		}
	}
	nsObj, err := c.kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err == nil && nsObj.Annotations[AnnotationCreatedBy] == st.ID && nsObj.DeletionTimestamp == nil {
		c.writes.WithLabelValues("kubernetes", "namespace", "delete").Inc()
		if err := c.kube.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(nsObj.UID))}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting namespace %s: %w", ns, err)
		}
	} else if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("reading namespace %s: %w", ns, err)
	}
	cur, err := c.eng.Stacks().Get(ctx, st.ID)
	if api.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	cur.Finalizers = slices.DeleteFunc(cur.Finalizers, func(f string) bool { return f == Finalizer })
	c.writes.WithLabelValues("engine", "stack", "update").Inc()
	if _, err := c.eng.Stacks().Update(ctx, st.ID, cur); err != nil && !api.IsNotFound(err) {
		return fmt.Errorf("removing the finalizer of stack %s: %w", st.Name, err)
	}
	return nil
}

// specHash names a stack's templates and answers (Helm revisions carry it).
func specHash(s api.StackSpec) string {
	b, _ := json.Marshal(struct {
		T map[string]string
		A map[string]string
	}{s.Templates, s.Answers})
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}
