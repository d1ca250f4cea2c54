package kubernetesagent

import (
	"context"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/drover/drover/api"
)

// workload is what the agent needs of any controller of pods.
type workload struct {
	obj      runtime.Object
	meta     metav1.Object
	desired  int
	ready    int
	selector *metav1.LabelSelector
}

func int32Or(p *int32, def int) int {
	if p == nil {
		return def
	}
	return int(*p)
}

// getWorkload reads kind/ns/name from the informer caches; nil if gone.
func (a *Agent) getWorkload(kind, ns, name string) (*workload, error) {
	l := &a.listers
	var w *workload
	var err error
	switch kind {
	case "Deployment":
		o, e := l.deployments.Deployments(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas), o.Spec.Selector}
		}
	case "StatefulSet":
		o, e := l.statefuls.StatefulSets(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas), o.Spec.Selector}
		}
	case "DaemonSet":
		o, e := l.daemons.DaemonSets(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int(o.Status.DesiredNumberScheduled), int(o.Status.NumberReady), o.Spec.Selector}
		}
	case "ReplicaSet":
		o, e := l.replicasets.ReplicaSets(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas), o.Spec.Selector}
		}
	case "ReplicationController":
		o, e := l.rcs.ReplicationControllers(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas), &metav1.LabelSelector{MatchLabels: o.Spec.Selector}}
		}
	case "Job":
		// A job wants its completions; "ready" counts the pods that
		// succeeded.
		o, e := l.jobs.Jobs(ns).Get(name)
		if err = e; e == nil {
			w = &workload{o, o, int32Or(o.Spec.Completions, 1), int(o.Status.Succeeded), o.Spec.Selector}
		}
	default:
		return nil, fmt.Errorf("unknown workload kind %q", kind)
	}
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return w, err
}

func (a *Agent) syncWorkload(ctx context.Context, key string) error {
	kind, rest, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	ns, name, err := splitKey(rest)
	if err != nil {
		return nil
	}
	if a.wrote.behind(key, a.services.Revision()) {
		return errCacheBehind
	}
	existing := a.services.ByIndex(idxKey, key)
	w, err := a.getWorkload(kind, ns, name)
	if err != nil {
		return err
	}
	if w == nil {
		return a.applyService(ctx, key, existing, "", nil)
	}
	st, err := a.stackFor(ns)
	if err != nil {
		return err
	}
	scale := w.desired
	want := &api.Service{
		Meta: api.Meta{Name: workloadEngineName(kind, name), Labels: ownerLabels(kind, string(w.meta.GetUID()), ns, name, w.meta.GetLabels())},
		Spec: api.ServiceSpec{StackID: st.ID, Kind: api.ServiceKubernetesWorkload, Scale: &scale},
		Status: api.ServiceStatus{
			State: "active", DesiredReplicas: w.desired, ReadyReplicas: w.ready,
			Health: map[bool]string{true: "healthy", false: "unhealthy"}[w.ready >= w.desired],
		},
	}
	if w.selector != nil {
		want.Spec.Selector = selectorString(w.selector.MatchLabels)
	}
	if err := a.applyService(ctx, key, existing, string(w.meta.GetUID()), want); err != nil {
		if engineRejected(err) {
			a.reportBad(w.obj, "EngineRejected", "the engine refused %s %s: %v", kind, rest, err)
		}
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}
