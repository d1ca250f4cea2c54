package kubernetesagent

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/drover/drover/api"
)

const indexHostID = "hostID"

// hostForNode matches a node to its host: the host it was matched to
// before, else by name, then provider ID, then address.
func (a *Agent) hostForNode(n *corev1.Node) *api.Host {
	if id := n.Annotations[AnnotationHostID]; id != "" {
		if h, ok := a.hosts.Get(id); ok {
			return h
		}
		return nil // matched before, and that host is gone
	}
	if hs := a.hosts.ByIndex(idxName, n.Name); len(hs) > 0 {
		return hs[0]
	}
	if id, ok := strings.CutPrefix(n.Spec.ProviderID, ProviderIDPrefix); ok {
		if h, ok := a.hosts.Get(id); ok {
			return h
		}
	}
	for _, ad := range n.Status.Addresses {
		if ad.Type != corev1.NodeInternalIP && ad.Type != corev1.NodeExternalIP {
			continue
		}
		if hs := a.hosts.ByIndex(idxAgentIP, ad.Address); len(hs) == 1 {
			return hs[0]
		}
	}
	return nil
}

func (a *Agent) hostForNodeName(name string) *api.Host {
	if name == "" {
		return nil
	}
	if n, err := a.listers.nodes.Get(name); err == nil {
		return a.hostForNode(n)
	}
	if hs := a.hosts.ByIndex(idxName, name); len(hs) > 0 {
		return hs[0]
	}
	return nil
}

// nodesForHost lists the nodes a host may be matched to, so a change of the
// host re-syncs them (and the pods on them, which may now get a host).
func (a *Agent) nodesForHost(h *api.Host) []string {
	set := map[string]bool{h.Name: true}
	idx := a.listers.nodeIndexer
	add := func(index, value string) {
		if value == "" {
			return
		}
		objs, _ := idx.ByIndex(index, value)
		for _, o := range objs {
			set[o.(*corev1.Node).Name] = true
		}
	}
	add(indexHostID, h.ID)
	add(indexProviderID, ProviderIDPrefix+h.ID)
	add(indexAddress, h.Status.AgentIP)
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
		pods, _ := a.listers.podIndexer.ByIndex(indexNodeName, n)
		for _, p := range pods {
			pod := p.(*corev1.Pod)
			a.pods.Enqueue(cacheKey(pod.Namespace, pod.Name))
		}
	}
	return out
}

func (a *Agent) syncNode(ctx context.Context, name string) error {
	node, err := a.listers.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	h := a.hostForNode(node)
	if h == nil {
		if id := node.Annotations[AnnotationHostID]; id != "" {
			// Matched to a host before, and the host is gone: so is the node.
			uid := node.UID
			err := a.kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("deleting node %s of deleted host %s: %w", name, id, err)
			}
			a.metrics.writes.WithLabelValues("kubernetes", "node", "delete").Inc()
			a.log.Info("deleted node of a deleted host", "node", name, "host", id)
		}
		return nil
	}
	// Our last host write is recorded on the node; a cache that has not
	// seen it yet would undo it (a cordon, say).
	if r, err := strconv.ParseInt(node.Annotations[AnnotationHostRevision], 10, 64); err == nil && h.Revision < r {
		return errCacheBehind
	}
	n := node.DeepCopy()
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	// Host labels -> node labels; the engine owns the keys it set.
	var problems []string
	ownedNow := map[string]bool{}
	for k, v := range h.Labels {
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("label key %q is not a Kubernetes label key: %s", k, strings.Join(errs, "; ")))
			continue
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			problems = append(problems, fmt.Sprintf("label %s=%q is not a Kubernetes label value: %s", k, v, strings.Join(errs, "; ")))
			continue
		}
		n.Labels[k] = v
		ownedNow[k] = true
	}
	for _, k := range strings.Split(node.Annotations[AnnotationOwnedLabels], ",") {
		if k != "" && !ownedNow[k] {
			delete(n.Labels, k)
		}
	}
	keys := make([]string, 0, len(ownedNow))
	for k := range ownedNow {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	n.Annotations[AnnotationOwnedLabels] = strings.Join(keys, ",")
	n.Annotations[AnnotationHostID] = h.ID
	// Cordon, both ways: whichever side moved off the last agreed value
	// wins; if both moved, Kubernetes does.
	agreed, hasAgreed := node.Annotations[AnnotationUnschedulable]
	final := h.Spec.Unschedulable
	switch {
	case !hasAgreed:
		final = node.Spec.Unschedulable || h.Spec.Unschedulable
	case strconv.FormatBool(node.Spec.Unschedulable) != agreed:
		final = node.Spec.Unschedulable
	}
	n.Spec.Unschedulable = final
	n.Annotations[AnnotationUnschedulable] = strconv.FormatBool(final)
	// The host's overlay subnet is the node's pod CIDR (which Kubernetes
	// lets be set once).
	if n.Spec.PodCIDR == "" && h.Status.Subnet != "" {
		n.Spec.PodCIDR, n.Spec.PodCIDRs = h.Status.Subnet, []string{h.Status.Subnet}
	}
	// Node -> host: labels the engine does not own, and the cordon. The
	// host is written first: if the node write then fails, the retry still
	// sees the node's change (it differs from the agreed value) and redoes it.
	nodeLabels := map[string]string{}
	for k, v := range node.Labels {
		if !ownedNow[k] {
			nodeLabels[k] = v
		}
	}
	sort.Strings(problems)
	msg := h.Status.Message
	if msg == "" || strings.HasPrefix(msg, messagePrefix) {
		msg = ""
		if len(problems) > 0 {
			msg = messagePrefix + "not copied to node " + name + ": " + strings.Join(problems, "; ")
		}
	}
	if !sameJSON(h.Status.NodeLabels, nodeLabels) || h.Spec.Unschedulable != final || msg != h.Status.Message {
		if msg != h.Status.Message && len(problems) > 0 {
			a.recorder.Eventf(node, corev1.EventTypeWarning, "HostLabelNotSynced", "host %s: %s", h.Name, strings.Join(problems, "; "))
			a.log.Warn("host labels not copied to node", "host", h.Name, "node", name, "problems", problems)
		}
		var rev int64
		if h.Spec.Unschedulable != final {
			updated, err := a.eng.Hosts().Patch(ctx, h.ID, map[string]any{"spec": map[string]any{"unschedulable": final}})
			if err != nil {
				return fmt.Errorf("updating host %s from node %s: %w", h.Name, name, err)
			}
			rev = updated.Revision
		}
		if !sameJSON(h.Status.NodeLabels, nodeLabels) || msg != h.Status.Message {
			// Only the fields this agent owns; a merge patch removes a
			// label by setting it to null.
			labels := map[string]any{}
			for k := range h.Status.NodeLabels {
				if _, ok := nodeLabels[k]; !ok {
					labels[k] = nil
				}
			}
			for k, v := range nodeLabels {
				labels[k] = v
			}
			updated, err := a.eng.Hosts().PatchStatus(ctx, h.ID, map[string]any{"status": map[string]any{"nodeLabels": labels, "message": msg}})
			if err != nil {
				return fmt.Errorf("updating host %s status from node %s: %w", h.Name, name, err)
			}
			rev = updated.Revision
		}
		a.metrics.writes.WithLabelValues("engine", "host", "update").Inc()
		n.Annotations[AnnotationHostRevision] = strconv.FormatInt(rev, 10)
	}
	if !equality.Semantic.DeepEqual(node, n) {
		if _, err := a.kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating node %s: %w", name, err)
		}
		a.metrics.writes.WithLabelValues("kubernetes", "node", "update").Inc()
	}
	return nil
}
