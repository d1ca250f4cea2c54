package kubernetesagent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

var everything = labels.Everything()

// errWaiting is a sync that cannot finish until something else syncs first
// (a pod's namespace stack); the key is retried with backoff.
var errWaiting = errors.New("waiting for the namespace's stack")

// sameJSON: no write loops on a difference nobody sees (see api.SameJSON).
func sameJSON(a, b any) bool { return api.SameJSON(a, b) }

// reportBad records a problem with one object on the Kubernetes side (an
// Event) and in the log. The rest keeps syncing.
func (a *Agent) reportBad(obj runtime.Object, reason, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	a.recorder.Event(obj, corev1.EventTypeWarning, reason, msg)
	if m, err := metaAccessor(obj); err == nil {
		a.log.Warn("object not synced as is", "reason", reason, "namespace", m.GetNamespace(), "name", m.GetName(), "problem", msg)
	}
}

func metaAccessor(obj runtime.Object) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, errors.New("no object meta")
	}
	return m, nil
}

// engineRejected reports whether the engine refused an object as invalid
// (retrying the same object cannot help; the Kubernetes side must change).
func engineRejected(err error) bool {
	return api.IsStatus(err, http.StatusBadRequest) || api.IsStatus(err, http.StatusUnprocessableEntity)
}

// --- namespaces -> stacks

func (a *Agent) syncNamespace(ctx context.Context, name string) error {
	if a.wrote.behind("Namespace/"+name, a.stacks.Revision()) {
		return errCacheBehind
	}
	ns, err := a.listers.namespaces.Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	stacks := a.stacks.ByIndex(idxNamespace, name)
	var cur *api.Stack
	for _, st := range stacks {
		if ns != nil && st.Labels[LabelUID] == string(ns.UID) && cur == nil {
			cur = st
			continue
		}
		// The namespace is gone, or this stack belonged to an earlier
		// namespace of the same name: its contents go with it.
		if _, err := a.eng.Stacks().Delete(ctx, st.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("deleting stack %s of namespace %s: %w", st.ID, name, err)
		}
		a.metrics.writes.WithLabelValues("engine", "stack", "delete").Inc()
	}
	if ns == nil {
		return nil
	}
	want := &api.Stack{
		Meta: api.Meta{Name: name, Labels: ownerLabels("Namespace", string(ns.UID), "", name, nil)},
		Spec: api.StackSpec{Kind: api.StackKubernetes, Namespace: name},
	}
	if cur == nil && a.templateStackOf(name) != nil {
		return nil // kubectld's stack of the same name stands for the namespace
	}
	if cur == nil {
		created, err := a.eng.Stacks().Create(ctx, want)
		if err != nil {
			if api.IsConflict(err) {
				a.reportBad(ns, "StackNameTaken", "engine stack %q exists and is not this namespace's; rename it to sync namespace %s", name, name)
			}
			return fmt.Errorf("creating stack for namespace %s: %w", name, err)
		}
		a.wrote.record("Namespace/"+name, created.Revision)
		a.metrics.writes.WithLabelValues("engine", "stack", "create").Inc()
		return nil
	}
	if sameJSON(cur.Labels, want.Labels) && cur.Spec.Kind == want.Spec.Kind && cur.Spec.Namespace == want.Spec.Namespace {
		return nil
	}
	next := *cur
	next.Labels, next.Spec.Kind, next.Spec.Namespace = want.Labels, want.Spec.Kind, want.Spec.Namespace
	updated, err := a.eng.Stacks().Update(ctx, cur.ID, &next)
	if err != nil {
		return fmt.Errorf("updating stack of namespace %s: %w", name, err)
	}
	a.wrote.record("Namespace/"+name, updated.Revision)
	a.metrics.writes.WithLabelValues("engine", "stack", "update").Inc()
	return nil
}

// stackFor finds the stack of a namespace, or errWaiting.
func (a *Agent) stackFor(ns string) (*api.Stack, error) {
	nsObj, err := a.listers.namespaces.Get(ns)
	if err != nil {
		return nil, errWaiting
	}
	for _, st := range a.stacks.ByIndex(idxNamespace, ns) {
		if st.Labels[LabelUID] == string(nsObj.UID) {
			return st, nil
		}
	}
	if st := a.templateStackOf(ns); st != nil {
		return st, nil
	}
	return nil, errWaiting
}

// templateStackOf finds a Kubernetes-template stack (kubectld's) named
// after namespace ns and deploying into it: it stands for the namespace,
// so no mirror stack is made beside it (they would want the same name).
func (a *Agent) templateStackOf(ns string) *api.Stack {
	for _, st := range a.stacks.ByIndex(idxName, ns) {
		if isTemplateStack(st) && st.Spec.Namespace == ns && !st.Deleting() {
			return st
		}
	}
	return nil
}

func isTemplateStack(st *api.Stack) bool { return !owned(st.Labels) && st.HasTemplates() }

// --- shared apply for engine services (Kubernetes Services and workloads)

// applyService makes want the one engine service for a Kubernetes object:
// existing holds what the engine has under that object's identity.
func (a *Agent) applyService(ctx context.Context, key string, existing []*api.Service, uid string, want *api.Service) error {
	var cur *api.Service
	for _, s := range existing {
		if s.Labels[LabelUID] == uid && s.Spec.StackID == want.Spec.StackID && cur == nil {
			cur = s
			continue
		}
		if _, err := a.eng.Services().Delete(ctx, s.ID); err != nil && !api.IsNotFound(err) {
			return err
		}
		a.metrics.writes.WithLabelValues("engine", "service", "delete").Inc()
	}
	if want == nil {
		return nil
	}
	if cur == nil {
		created, err := a.eng.Services().Create(ctx, want)
		if err == nil {
			a.wrote.record(key, created.Revision)
			a.metrics.writes.WithLabelValues("engine", "service", "create").Inc()
		}
		return err
	}
	if cur.Name == want.Name && sameJSON(cur.Labels, want.Labels) && sameJSON(cur.Spec, want.Spec) && sameJSON(cur.Status, want.Status) {
		return nil
	}
	rev, err := writeSplit(ctx, a.eng.Services(), cur.ID,
		cur.Name == want.Name && sameJSON(cur.Labels, want.Labels) && sameJSON(cur.Spec, want.Spec),
		func() *api.Service {
			n := *cur
			n.Name, n.Labels, n.Spec = want.Name, want.Labels, want.Spec
			return &n
		},
		sameJSON(cur.Status, want.Status), &api.Service{Status: want.Status})
	if err == nil {
		a.wrote.record(key, rev)
		a.metrics.writes.WithLabelValues("engine", "service", "update").Inc()
	}
	return err
}

// writeSplit writes what changed of an object this agent owns whole: its
// name, labels and spec through the main path, its status through /status
// (each path leaves the other's fields alone). It returns the revision of
// the last write.
func writeSplit[T any, PT interface {
	*T
	api.Object
}](ctx context.Context, r *client.Resource[T], id string, sameMain bool, main func() PT, sameStatus bool, status PT) (int64, error) {
	var rev int64
	if !sameMain {
		out, err := r.Update(ctx, id, (*T)(main()))
		if err != nil {
			return 0, err
		}
		rev = PT(out).GetMeta().Revision
	}
	if !sameStatus {
		out, err := r.UpdateStatus(ctx, id, (*T)(status))
		if err != nil {
			return 0, err
		}
		rev = PT(out).GetMeta().Revision
	}
	return rev, nil
}

// --- Services -> engine services

func (a *Agent) syncService(ctx context.Context, key string) error {
	ns, name, err := splitKey(key)
	if err != nil {
		return nil
	}
	if a.wrote.behind("Service/"+key, a.services.Revision()) {
		return errCacheBehind
	}
	existing := a.services.ByIndex(idxKey, "Service/"+key)
	svc, err := a.listers.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return a.applyService(ctx, "Service/"+key, existing, "", nil)
	} else if err != nil {
		return err
	}
	st, err := a.stackFor(ns)
	if err != nil {
		return err
	}
	slices, err := a.listers.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	if err != nil {
		return err
	}
	want := desiredService(svc, slices, st.ID)
	if err := a.applyService(ctx, "Service/"+key, existing, string(svc.UID), want); err != nil {
		if engineRejected(err) {
			a.reportBad(svc, "EngineRejected", "the engine refused service %s: %v", key, err)
		}
		return fmt.Errorf("service %s: %w", key, err)
	}
	return nil
}

func selectorString(sel map[string]string) string {
	parts := make([]string, 0, len(sel))
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func desiredService(svc *corev1.Service, slices []*discoveryv1.EndpointSlice, stackID string) *api.Service {
	extra := map[string]string{}
	for k, v := range svc.Labels {
		extra[k] = v
	}
	typ := string(svc.Spec.Type)
	if svc.Spec.ClusterIP == corev1.ClusterIPNone {
		typ = "Headless"
	}
	extra["io.drover.kubernetes.service-type"] = typ
	s := &api.Service{
		Meta: api.Meta{Name: svc.Name, Labels: ownerLabels("Service", string(svc.UID), svc.Namespace, svc.Name, extra)},
		Spec: api.ServiceSpec{StackID: stackID, Kind: api.ServiceKubernetes, Selector: selectorString(svc.Spec.Selector), Hostname: svc.Spec.ExternalName, ExternalIPs: svc.Spec.ExternalIPs},
	}
	if ip := svc.Spec.ClusterIP; ip != "" && ip != corev1.ClusterIPNone {
		s.Spec.VIP = ip
		s.Status.VIP = ip
	}
	for _, p := range svc.Spec.Ports {
		s.Spec.Ports = append(s.Spec.Ports, api.ServicePort{Name: p.Name, Protocol: strings.ToLower(string(p.Protocol)), Port: int(p.Port), TargetPort: p.TargetPort.IntValue(), NodePort: int(p.NodePort)})
	}
	for _, sl := range slices {
		var ports []api.EndpointPort
		for _, p := range sl.Ports {
			ep := api.EndpointPort{}
			if p.Name != nil {
				ep.Name = *p.Name
			}
			if p.Protocol != nil {
				ep.Protocol = strings.ToLower(string(*p.Protocol))
			}
			if p.Port != nil {
				ep.Port = int(*p.Port)
			}
			ports = append(ports, ep)
		}
		for _, e := range sl.Endpoints {
			if e.Conditions.Ready != nil && !*e.Conditions.Ready {
				continue
			}
			for _, addr := range e.Addresses {
				out := api.Endpoint{IP: addr, Ports: ports}
				if e.Hostname != nil {
					out.Hostname = *e.Hostname
				}
				if e.NodeName != nil {
					out.NodeName = *e.NodeName
				}
				if e.TargetRef != nil && e.TargetRef.Kind == "Pod" {
					out.Pod = e.TargetRef.Name
				}
				s.Status.Endpoints = append(s.Status.Endpoints, out)
			}
		}
	}
	sort.Slice(s.Status.Endpoints, func(i, j int) bool { return s.Status.Endpoints[i].IP < s.Status.Endpoints[j].IP })
	s.Status.State = "active"
	return s
}

// --- Pods -> containers

func (a *Agent) syncPod(ctx context.Context, key string) error {
	ns, name, err := splitKey(key)
	if err != nil {
		return nil
	}
	if a.wrote.behind("Pod/"+key, a.ctrs.Revision()) {
		return errCacheBehind
	}
	existing := a.ctrs.ByIndex(idxKey, "Pod/"+key)
	pod, err := a.listers.pods.Pods(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var cur *api.Container
	for _, c := range existing {
		if pod != nil && c.Labels[LabelUID] == string(pod.UID) && cur == nil {
			cur = c
			continue
		}
		if _, err := a.eng.Containers().Delete(ctx, c.ID); err != nil && !api.IsNotFound(err) {
			return err
		}
		a.metrics.writes.WithLabelValues("engine", "container", "delete").Inc()
	}
	if pod == nil {
		return nil
	}
	st, err := a.stackFor(ns)
	if err != nil {
		return err
	}
	hostID := ""
	if h := a.hostForNodeName(pod.Spec.NodeName); h != nil {
		hostID = h.ID
	}
	want := desiredContainer(pod, st.ID, hostID)
	var written *api.Container
	if cur == nil {
		written, err = a.eng.Containers().Create(ctx, want)
		if err == nil {
			a.metrics.writes.WithLabelValues("engine", "container", "create").Inc()
		}
	} else {
		if cur.Spec.HostID != "" {
			want.Spec.HostID = cur.Spec.HostID // a pod never changes node
		}
		if cur.Name == want.Name && sameJSON(cur.Labels, want.Labels) && sameJSON(cur.Spec, want.Spec) && sameJSON(cur.Status, want.Status) {
			return nil
		}
		var rev int64
		rev, err = writeSplit(ctx, a.eng.Containers(), cur.ID,
			cur.Name == want.Name && sameJSON(cur.Labels, want.Labels) && sameJSON(cur.Spec, want.Spec),
			func() *api.Container {
				n := *cur
				n.Name, n.Labels, n.Spec = want.Name, want.Labels, want.Spec
				return &n
			},
			sameJSON(cur.Status, want.Status), &api.Container{Status: want.Status})
		if err == nil {
			written = &api.Container{Meta: api.Meta{Revision: rev}}
			a.metrics.writes.WithLabelValues("engine", "container", "update").Inc()
		}
	}
	if err == nil {
		a.wrote.record("Pod/"+key, written.Revision)
	}
	if err != nil {
		if engineRejected(err) {
			a.reportBad(pod, "EngineRejected", "the engine refused pod %s: %v", key, err)
		}
		return fmt.Errorf("pod %s: %w", key, err)
	}
	return nil
}

func desiredContainer(pod *corev1.Pod, stackID, hostID string) *api.Container {
	c := &api.Container{
		Meta: api.Meta{Name: engineName(pod.Name), Labels: ownerLabels("Pod", string(pod.UID), pod.Namespace, pod.Name, pod.Labels)},
		Spec: api.ContainerSpec{Kind: api.ContainerKindPod, StackID: stackID, HostID: hostID},
	}
	if len(pod.Spec.Containers) > 0 {
		c.Spec.LaunchConfig = &api.LaunchConfig{Image: pod.Spec.Containers[0].Image, Hostname: pod.Spec.Hostname}
	}
	st := &c.Status
	st.PrimaryIP = pod.Status.PodIP
	switch pod.Status.Phase {
	case corev1.PodRunning:
		st.State = api.ContainerRunning
	case corev1.PodSucceeded:
		st.State = api.ContainerStopped
	case corev1.PodFailed:
		st.State = api.ContainerError
	default:
		st.State = api.ContainerPending
		if pod.Spec.NodeName != "" {
			st.State = api.ContainerStarting
		}
	}
	ready := false
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	switch {
	case ready:
		st.Health = "healthy"
	case st.State == api.ContainerRunning:
		st.Health = "unhealthy"
	case st.State == api.ContainerPending || st.State == api.ContainerStarting:
		st.Health = "initializing"
	}
	restarts := 0
	for _, cs := range pod.Status.ContainerStatuses {
		restarts += int(cs.RestartCount)
	}
	if st.State == api.ContainerRunning {
		st.StartCount = restarts + 1
	}
	if pod.Status.Reason != "" || pod.Status.Message != "" {
		st.Message = strings.TrimSpace(pod.Status.Reason + " " + pod.Status.Message)
	}
	if pod.Status.StartTime != nil {
		t := pod.Status.StartTime.UTC()
		st.StartedAt = &t
	}
	return c
}
