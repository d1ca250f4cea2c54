package kubernetesagent

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Compare reads both sides in full, straight from the two APIs, and lists
// every way they are out of step. An empty list means the agent's work is
// done. It is written apart from the sync code on purpose: it states what
// "in step" means, field by field, instead of re-running the mapping.
func Compare(ctx context.Context, kube kubernetes.Interface, eng *client.Client) ([]string, error) {
	var diffs []string
	bad := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	lo := metav1.ListOptions{}
	nss, err := kube.CoreV1().Namespaces().List(ctx, lo)
	if err != nil {
		return nil, err
	}
	stacks, _, err := eng.Stacks().List(ctx, client.ListOptions{LabelSelector: LabelKind + "=Namespace"})
	if err != nil {
		return nil, err
	}
	stackOf := map[string]*api.Stack{} // namespace -> stack
	for i := range stacks {
		st := &stacks[i]
		stackOf[st.Labels[LabelName]] = st
	}
	// Template stacks named after their namespace stand for it.
	all, _, err := eng.Stacks().List(ctx, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	standIn := map[string]bool{}
	for _, st := range all {
		if isTemplateStack(&st) && st.Spec.Namespace == st.Name && !st.Deleting() {
			standIn[st.Name] = true
		}
	}
	nsUID := map[string]string{}
	for _, ns := range nss.Items {
		nsUID[ns.Name] = string(ns.UID)
		st := stackOf[ns.Name]
		switch {
		case st == nil && standIn[ns.Name]:
		case st == nil:
			bad("namespace %s has no stack", ns.Name)
		case st.Labels[LabelUID] != string(ns.UID) || st.Spec.Kind != api.StackKubernetes || st.Spec.Namespace != ns.Name || st.Name != ns.Name:
			bad("stack %s does not match namespace %s (uid %s, kind %s, namespace %s)", st.ID, ns.Name, st.Labels[LabelUID], st.Spec.Kind, st.Spec.Namespace)
		}
	}
	for _, st := range stacks {
		if nsUID[st.Labels[LabelName]] != st.Labels[LabelUID] {
			bad("stack %s (%s) outlived its namespace", st.ID, st.Name)
		}
	}

	// Services and workloads -> engine services.
	esvcs, _, err := eng.Services().List(ctx, client.ListOptions{LabelSelector: LabelUID})
	if err != nil {
		return nil, err
	}
	byUID := map[string]*api.Service{}
	for i := range esvcs {
		s := &esvcs[i]
		if byUID[s.Labels[LabelUID]] != nil {
			bad("two engine services for uid %s", s.Labels[LabelUID])
		}
		byUID[s.Labels[LabelUID]] = s
	}
	seen := map[string]bool{}
	svcs, err := kube.CoreV1().Services("").List(ctx, lo)
	if err != nil {
		return nil, err
	}
	slices, err := kube.DiscoveryV1().EndpointSlices("").List(ctx, lo)
	if err != nil {
		return nil, err
	}
	for _, svc := range svcs.Items {
		seen[string(svc.UID)] = true
		key := svc.Namespace + "/" + svc.Name
		es := byUID[string(svc.UID)]
		if es == nil {
			bad("service %s has no engine service", key)
			continue
		}
		wantVIP := svc.Spec.ClusterIP
		if wantVIP == corev1.ClusterIPNone {
			wantVIP = ""
		}
		if st := stackOf[svc.Namespace]; st == nil || es.Spec.StackID != st.ID {
			bad("engine service of %s is not in its namespace's stack", key)
		}
		if es.Name != svc.Name || es.Spec.Kind != api.ServiceKubernetes || es.Spec.VIP != wantVIP || es.Spec.Hostname != svc.Spec.ExternalName {
			bad("engine service of %s: name %q kind %q vip %q hostname %q; want %q kubernetes %q %q", key, es.Name, es.Spec.Kind, es.Spec.VIP, es.Spec.Hostname, svc.Name, wantVIP, svc.Spec.ExternalName)
		}
		if len(es.Spec.Ports) != len(svc.Spec.Ports) {
			bad("engine service of %s has %d ports, want %d", key, len(es.Spec.Ports), len(svc.Spec.Ports))
		} else {
			for i, p := range svc.Spec.Ports {
				if ep := es.Spec.Ports[i]; ep.Port != int(p.Port) || ep.Name != p.Name || ep.NodePort != int(p.NodePort) {
					bad("engine service of %s port %d: %+v, want %d/%s nodePort %d", key, i, ep, p.Port, p.Name, p.NodePort)
				}
			}
		}
		var want, got []string
		for _, sl := range slices.Items {
			if sl.Namespace != svc.Namespace || sl.Labels[discoveryv1.LabelServiceName] != svc.Name {
				continue
			}
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready == nil || *e.Conditions.Ready {
					want = append(want, e.Addresses...)
				}
			}
		}
		for _, e := range es.Status.Endpoints {
			got = append(got, e.IP)
		}
		sort.Strings(want)
		sort.Strings(got)
		if strings.Join(want, ",") != strings.Join(got, ",") {
			bad("engine service of %s has endpoints %v, want %v", key, got, want)
		}
	}
	type wl struct {
		kind, ns, name, uid string
		desired, ready      int
	}
	var wls []wl
	if l, err := kube.AppsV1().Deployments("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"Deployment", o.Namespace, o.Name, string(o.UID), int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas)})
		}
	} else {
		return nil, err
	}
	if l, err := kube.AppsV1().StatefulSets("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"StatefulSet", o.Namespace, o.Name, string(o.UID), int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas)})
		}
	} else {
		return nil, err
	}
	if l, err := kube.AppsV1().DaemonSets("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"DaemonSet", o.Namespace, o.Name, string(o.UID), int(o.Status.DesiredNumberScheduled), int(o.Status.NumberReady)})
		}
	} else {
		return nil, err
	}
	if l, err := kube.AppsV1().ReplicaSets("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"ReplicaSet", o.Namespace, o.Name, string(o.UID), int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas)})
		}
	} else {
		return nil, err
	}
	if l, err := kube.CoreV1().ReplicationControllers("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"ReplicationController", o.Namespace, o.Name, string(o.UID), int32Or(o.Spec.Replicas, 1), int(o.Status.ReadyReplicas)})
		}
	} else {
		return nil, err
	}
	if l, err := kube.BatchV1().Jobs("").List(ctx, lo); err == nil {
		for _, o := range l.Items {
			wls = append(wls, wl{"Job", o.Namespace, o.Name, string(o.UID), int32Or(o.Spec.Completions, 1), int(o.Status.Succeeded)})
		}
	} else {
		return nil, err
	}
	for _, w := range wls {
		seen[w.uid] = true
		es := byUID[w.uid]
		key := w.kind + " " + w.ns + "/" + w.name
		switch {
		case es == nil:
			bad("%s has no engine service", key)
		case es.Spec.Kind != api.ServiceKubernetesWorkload || es.Status.DesiredReplicas != w.desired || es.Status.ReadyReplicas != w.ready || es.Labels[LabelKind] != w.kind:
			bad("engine service of %s: kind %s desired %d ready %d; want %d %d", key, es.Spec.Kind, es.Status.DesiredReplicas, es.Status.ReadyReplicas, w.desired, w.ready)
		}
	}
	for uid, es := range byUID {
		if !seen[uid] {
			bad("engine service %s (%s %s/%s) has no Kubernetes twin", es.ID, es.Labels[LabelKind], es.Labels[LabelNamespace], es.Labels[LabelName])
		}
	}

	// Nodes <-> hosts (needed for pods' hosts too).
	hosts, _, err := eng.Hosts().List(ctx, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	hostByName, hostByID := map[string]*api.Host{}, map[string]*api.Host{}
	for i := range hosts {
		hostByName[hosts[i].Name], hostByID[hosts[i].ID] = &hosts[i], &hosts[i]
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, lo)
	if err != nil {
		return nil, err
	}
	nodeHost := map[string]*api.Host{}
	for _, n := range nodes.Items {
		h := hostByName[n.Name]
		if id := n.Annotations[AnnotationHostID]; id != "" {
			if h = hostByID[id]; h == nil {
				bad("node %s outlived its host %s", n.Name, id)
				continue
			}
		}
		if h == nil {
			continue // not a drover host's node
		}
		nodeHost[n.Name] = h
		var ownedKeys []string
		for k, v := range h.Labels {
			if len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
				if !strings.Contains(h.Status.Message, k) {
					bad("host %s label %s cannot be a node label, and the host's status does not say so", h.Name, k)
				}
				continue
			}
			ownedKeys = append(ownedKeys, k)
			if n.Labels[k] != v {
				bad("node %s label %s=%q, host has %q", n.Name, k, n.Labels[k], v)
			}
		}
		sort.Strings(ownedKeys)
		if got := n.Annotations[AnnotationOwnedLabels]; got != strings.Join(ownedKeys, ",") {
			bad("node %s owned labels %q, want %q", n.Name, got, strings.Join(ownedKeys, ","))
		}
		for k, v := range n.Labels {
			isOwned := false
			for _, o := range ownedKeys {
				isOwned = isOwned || o == k
			}
			if !isOwned && h.Status.NodeLabels[k] != v {
				bad("host %s nodeLabels[%s]=%q, node has %q", h.Name, k, h.Status.NodeLabels[k], v)
			}
		}
		if len(h.Status.NodeLabels)+len(ownedKeys) != len(n.Labels) {
			bad("host %s has %d node labels, node %s has %d of its own", h.Name, len(h.Status.NodeLabels), n.Name, len(n.Labels)-len(ownedKeys))
		}
		if n.Spec.Unschedulable != h.Spec.Unschedulable {
			bad("node %s unschedulable=%v, host %v", n.Name, n.Spec.Unschedulable, h.Spec.Unschedulable)
		}
		if h.Status.Subnet != "" && n.Spec.PodCIDR == "" {
			bad("node %s has no podCIDR though host %s has subnet %s", n.Name, h.Name, h.Status.Subnet)
		}
	}

	// Pods -> containers.
	ctrs, _, err := eng.Containers().List(ctx, client.ListOptions{LabelSelector: LabelKind + "=Pod"})
	if err != nil {
		return nil, err
	}
	ctrByUID := map[string]*api.Container{}
	for i := range ctrs {
		ctrByUID[ctrs[i].Labels[LabelUID]] = &ctrs[i]
	}
	pods, err := kube.CoreV1().Pods("").List(ctx, lo)
	if err != nil {
		return nil, err
	}
	podUIDs := map[string]bool{}
	for _, p := range pods.Items {
		podUIDs[string(p.UID)] = true
		key := p.Namespace + "/" + p.Name
		c := ctrByUID[string(p.UID)]
		if c == nil {
			bad("pod %s has no container", key)
			continue
		}
		if st := stackOf[p.Namespace]; st == nil || c.Spec.StackID != st.ID {
			bad("container of pod %s is not in its namespace's stack", key)
		}
		if c.Status.PrimaryIP != p.Status.PodIP || c.Spec.Kind != api.ContainerKindPod || c.Labels[LabelName] != p.Name {
			bad("container of pod %s: ip %q kind %s name label %q; want %q", key, c.Status.PrimaryIP, c.Spec.Kind, c.Labels[LabelName], p.Status.PodIP)
		}
		wantHost := ""
		if h := nodeHost[p.Spec.NodeName]; h != nil {
			wantHost = h.ID
		} else if h := hostByName[p.Spec.NodeName]; h != nil {
			wantHost = h.ID
		}
		if c.Spec.HostID != wantHost {
			bad("container of pod %s on host %q, want %q (node %s)", key, c.Spec.HostID, wantHost, p.Spec.NodeName)
		}
		for k, v := range p.Labels {
			if c.Labels[k] != v {
				bad("container of pod %s label %s=%q, want %q", key, k, c.Labels[k], v)
			}
		}
		if want := map[corev1.PodPhase]string{corev1.PodRunning: api.ContainerRunning, corev1.PodSucceeded: api.ContainerStopped, corev1.PodFailed: api.ContainerError}[p.Status.Phase]; want != "" && c.Status.State != want {
			bad("container of pod %s state %s, want %s", key, c.Status.State, want)
		}
	}
	for uid, c := range ctrByUID {
		if !podUIDs[uid] {
			bad("container %s (pod %s/%s) has no pod", c.ID, c.Labels[LabelNamespace], c.Labels[LabelName])
		}
	}
	sort.Strings(diffs)
	return diffs, nil
}
