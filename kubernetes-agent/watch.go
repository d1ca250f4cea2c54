package kubernetesagent

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	appslisters "k8s.io/client-go/listers/apps/v1"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
)

type listers struct {
	namespaces  corelisters.NamespaceLister
	services    corelisters.ServiceLister
	slices      discoverylisters.EndpointSliceLister
	pods        corelisters.PodLister
	podIndexer  cache.Indexer
	nodes       corelisters.NodeLister
	nodeIndexer cache.Indexer
	deployments appslisters.DeploymentLister
	statefuls   appslisters.StatefulSetLister
	daemons     appslisters.DaemonSetLister
	replicasets appslisters.ReplicaSetLister
	rcs         corelisters.ReplicationControllerLister
	jobs        batchlisters.JobLister
}

const (
	indexNodeName   = "nodeName"
	indexProviderID = "providerID"
	indexAddress    = "address"
)

func (a *Agent) setupListers() {
	f := a.factory
	l := &a.listers
	l.namespaces = f.Core().V1().Namespaces().Lister()
	l.services = f.Core().V1().Services().Lister()
	l.slices = f.Discovery().V1().EndpointSlices().Lister()
	l.pods = f.Core().V1().Pods().Lister()
	l.podIndexer = f.Core().V1().Pods().Informer().GetIndexer()
	l.nodes = f.Core().V1().Nodes().Lister()
	l.nodeIndexer = f.Core().V1().Nodes().Informer().GetIndexer()
	l.deployments = f.Apps().V1().Deployments().Lister()
	l.statefuls = f.Apps().V1().StatefulSets().Lister()
	l.daemons = f.Apps().V1().DaemonSets().Lister()
	l.replicasets = f.Apps().V1().ReplicaSets().Lister()
	l.rcs = f.Core().V1().ReplicationControllers().Lister()
	l.jobs = f.Batch().V1().Jobs().Lister()
}

// handler turns informer events into keys for one controller.
func handler(enqueue func(obj any)) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}
}

func metaOf(obj any) (ns, name string, ok bool) {
	if d, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
		obj = d.Obj
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return "", "", false
	}
	return m.GetNamespace(), m.GetName(), true
}

func (a *Agent) setupKubeHandlers() error {
	f := a.factory
	byKey := func(c *harness.Controller, prefix string) func(any) {
		return func(obj any) {
			if ns, name, ok := metaOf(obj); ok {
				c.Enqueue(prefix + cacheKey(ns, name))
			}
		}
	}
	type reg struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	pods := f.Core().V1().Pods().Informer()
	if err := pods.AddIndexers(cache.Indexers{indexNodeName: func(obj any) ([]string, error) {
		return []string{obj.(*corev1.Pod).Spec.NodeName}, nil
	}}); err != nil {
		return err
	}
	nodes := f.Core().V1().Nodes().Informer()
	if err := nodes.AddIndexers(cache.Indexers{
		indexHostID: func(obj any) ([]string, error) {
			return []string{obj.(*corev1.Node).Annotations[AnnotationHostID]}, nil
		},
		indexProviderID: func(obj any) ([]string, error) { return []string{obj.(*corev1.Node).Spec.ProviderID}, nil },
		indexAddress: func(obj any) ([]string, error) {
			var out []string
			for _, ad := range obj.(*corev1.Node).Status.Addresses {
				if ad.Type == corev1.NodeInternalIP || ad.Type == corev1.NodeExternalIP {
					out = append(out, ad.Address)
				}
			}
			return out, nil
		},
	}); err != nil {
		return err
	}
	regs := []reg{
		{f.Core().V1().Namespaces().Informer(), handler(func(obj any) {
			if _, name, ok := metaOf(obj); ok {
				a.namespaces.Enqueue(name)
			}
		})},
		{f.Core().V1().Services().Informer(), handler(byKey(a.kservices, ""))},
		{f.Discovery().V1().EndpointSlices().Informer(), handler(func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if s, ok := obj.(*discoveryv1.EndpointSlice); ok && s.Labels[discoveryv1.LabelServiceName] != "" {
				a.kservices.Enqueue(cacheKey(s.Namespace, s.Labels[discoveryv1.LabelServiceName]))
			}
		})},
		{pods, handler(byKey(a.pods, ""))},
		{nodes, handler(func(obj any) {
			if _, name, ok := metaOf(obj); ok {
				a.nodes.Enqueue(name)
				// A node that appears may give its pods a host.
				pods, _ := a.listers.podIndexer.ByIndex(indexNodeName, name)
				for _, p := range pods {
					pod := p.(*corev1.Pod)
					a.pods.Enqueue(cacheKey(pod.Namespace, pod.Name))
				}
			}
		})},
		{f.Apps().V1().Deployments().Informer(), handler(byKey(a.workloads, "Deployment/"))},
		{f.Apps().V1().StatefulSets().Informer(), handler(byKey(a.workloads, "StatefulSet/"))},
		{f.Apps().V1().DaemonSets().Informer(), handler(byKey(a.workloads, "DaemonSet/"))},
		{f.Apps().V1().ReplicaSets().Informer(), handler(byKey(a.workloads, "ReplicaSet/"))},
		{f.Core().V1().ReplicationControllers().Informer(), handler(byKey(a.workloads, "ReplicationController/"))},
		{f.Batch().V1().Jobs().Informer(), handler(byKey(a.workloads, "Job/"))},
	}
	for _, r := range regs {
		if _, err := r.inf.AddEventHandler(r.h); err != nil {
			return fmt.Errorf("kubernetes-agent: informer handler: %w", err)
		}
	}
	return nil
}

func cacheKey(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// Engine side: caches of what the agent owns or reads, with indexes by the
// Kubernetes identity written into labels.
const (
	idxKey       = "kubeKey" // Kind/namespace/name
	idxNamespace = "namespace"
	idxName      = "name"
	idxAgentIP   = "agentIP"
)

func kubeKeyOf(labels map[string]string) []string {
	if !owned(labels) {
		return nil
	}
	return []string{labels[LabelKind] + "/" + cacheKey(labels[LabelNamespace], labels[LabelName])}
}

func (a *Agent) setupEngineCaches() {
	log := a.log
	// An owned engine object that changes or vanishes is re-synced from its
	// Kubernetes twin (which may be gone: then the sync deletes it).
	requeueOwned := func(labels map[string]string) {
		if !owned(labels) {
			return
		}
		ns, name := labels[LabelNamespace], labels[LabelName]
		switch kind := labels[LabelKind]; kind {
		case "Namespace":
			a.namespaces.Enqueue(name)
		case "Service":
			a.kservices.Enqueue(cacheKey(ns, name))
		case "Pod":
			a.pods.Enqueue(cacheKey(ns, name))
		default:
			if _, ok := workloadSuffix[kind]; ok {
				a.workloads.Enqueue(kind + "/" + cacheKey(ns, name))
			}
		}
	}
	// A template stack named after its namespace stands for it (see
	// templateStackOf): when one comes, changes or goes, the namespace and
	// what waits on it look again.
	templateChanged := func(s *api.Stack) {
		if isTemplateStack(s) && s.Spec.Namespace == s.Name {
			a.namespaces.Enqueue(s.Name)
			a.enqueueNamespaceContents(s.Name)
		}
	}
	a.stacks = client.NewCache(a.eng.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{
		OnAdd: func(s *api.Stack) {
			requeueOwned(s.Labels)
			// Objects that waited for their namespace's stack can go now.
			if owned(s.Labels) && s.Labels[LabelKind] == "Namespace" {
				a.enqueueNamespaceContents(s.Labels[LabelName])
			}
			templateChanged(s)
		},
		OnUpdate: func(o, s *api.Stack) {
			requeueOwned(s.Labels)
			if o.Deleting() != s.Deleting() || o.Spec.Namespace != s.Spec.Namespace {
				templateChanged(s)
			}
		},
		OnDelete: func(s *api.Stack) { requeueOwned(s.Labels); templateChanged(s) },
	}, log)
	a.stacks.AddIndex(idxNamespace, func(s *api.Stack) []string {
		if owned(s.Labels) && s.Labels[LabelKind] == "Namespace" {
			return []string{s.Labels[LabelName]}
		}
		return nil
	})
	a.stacks.AddIndex(idxName, func(s *api.Stack) []string { return []string{s.Name} })
	a.services = client.NewCache(a.eng.Services(), client.ListOptions{LabelSelector: LabelUID}, client.Handlers[api.Service]{
		OnAdd: func(s *api.Service) { requeueOwned(s.Labels) }, OnUpdate: func(_, s *api.Service) { requeueOwned(s.Labels) }, OnDelete: func(s *api.Service) { requeueOwned(s.Labels) },
	}, log)
	a.services.AddIndex(idxKey, func(s *api.Service) []string { return kubeKeyOf(s.Labels) })
	a.ctrs = client.NewCache(a.eng.Containers(), client.ListOptions{LabelSelector: LabelUID}, client.Handlers[api.Container]{
		OnAdd: func(c *api.Container) { requeueOwned(c.Labels) }, OnUpdate: func(_, c *api.Container) { requeueOwned(c.Labels) }, OnDelete: func(c *api.Container) { requeueOwned(c.Labels) },
	}, log)
	a.ctrs.AddIndex(idxKey, func(c *api.Container) []string { return kubeKeyOf(c.Labels) })
	hostChanged := func(h *api.Host) {
		for _, n := range a.nodesForHost(h) {
			a.nodes.Enqueue(n)
		}
	}
	a.hosts = client.NewCache(a.eng.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{
		OnAdd:    hostChanged,
		OnUpdate: func(_, h *api.Host) { hostChanged(h) },
		OnDelete: hostChanged,
	}, log)
	a.hosts.AddIndex(idxName, func(h *api.Host) []string { return []string{h.Name} })
	a.hosts.AddIndex(idxAgentIP, func(h *api.Host) []string {
		if h.Status.AgentIP == "" {
			return nil
		}
		return []string{h.Status.AgentIP}
	})
}

// enqueueNamespaceContents queues every object of a namespace.
func (a *Agent) enqueueNamespaceContents(ns string) {
	if svcs, err := a.listers.services.Services(ns).List(everything); err == nil {
		for _, s := range svcs {
			a.kservices.Enqueue(cacheKey(ns, s.Name))
		}
	}
	if pods, err := a.listers.pods.Pods(ns).List(everything); err == nil {
		for _, p := range pods {
			a.pods.Enqueue(cacheKey(ns, p.Name))
		}
	}
	for kind, names := range a.workloadNames(ns) {
		for _, n := range names {
			a.workloads.Enqueue(kind + "/" + cacheKey(ns, n))
		}
	}
}

func (a *Agent) workloadNames(ns string) map[string][]string {
	out := map[string][]string{}
	if l, err := a.listers.deployments.Deployments(ns).List(everything); err == nil {
		for _, o := range l {
			out["Deployment"] = append(out["Deployment"], o.Name)
		}
	}
	if l, err := a.listers.statefuls.StatefulSets(ns).List(everything); err == nil {
		for _, o := range l {
			out["StatefulSet"] = append(out["StatefulSet"], o.Name)
		}
	}
	if l, err := a.listers.daemons.DaemonSets(ns).List(everything); err == nil {
		for _, o := range l {
			out["DaemonSet"] = append(out["DaemonSet"], o.Name)
		}
	}
	if l, err := a.listers.replicasets.ReplicaSets(ns).List(everything); err == nil {
		for _, o := range l {
			out["ReplicaSet"] = append(out["ReplicaSet"], o.Name)
		}
	}
	if l, err := a.listers.rcs.ReplicationControllers(ns).List(everything); err == nil {
		for _, o := range l {
			out["ReplicationController"] = append(out["ReplicationController"], o.Name)
		}
	}
	if l, err := a.listers.jobs.Jobs(ns).List(everything); err == nil {
		for _, o := range l {
			out["Job"] = append(out["Job"], o.Name)
		}
	}
	return out
}
