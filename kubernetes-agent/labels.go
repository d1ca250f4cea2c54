package kubernetesagent

import (
	"regexp"

	"github.com/drover/drover/api"
)

// dnsLabel is what an engine name must match (the tests check names with it).
var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// Labels on engine objects the agent owns. The UID is what ownership rests on.
const (
	LabelUID       = "io.drover.kubernetes.uid"
	LabelKind      = "io.drover.kubernetes.kind"
	LabelNamespace = "io.drover.kubernetes.namespace"
	LabelName      = "io.drover.kubernetes.name"
)

// Annotations on Nodes.
const (
	// AnnotationHostID names the host a node was matched to; when that host
	// is deleted, the node is deleted.
	AnnotationHostID = "drover.io/host-id"
	// AnnotationOwnedLabels lists the node label keys drover set from the
	// host's labels, so it removes exactly those when the host drops them.
	AnnotationOwnedLabels = "drover.io/owned-labels"
	// AnnotationUnschedulable is the last cordon state both sides agreed
	// on; whichever side differs from it changed since, and wins.
	AnnotationUnschedulable = "drover.io/unschedulable"
	// AnnotationHostRevision is the engine revision of the agent's last
	// write to the node's host, so a sync from a lagging cache waits.
	AnnotationHostRevision = "drover.io/host-revision"
	// ProviderIDPrefix is how cloudprovider names a host in node.spec.providerID.
	ProviderIDPrefix = "drover://"
)

// messagePrefix marks the part of an engine object's status.message that
// the agent wrote, so it clears only its own.
const messagePrefix = "kubernetes-agent: "

func owned(labels map[string]string) bool { return labels[LabelUID] != "" }

// engineName: see api.EngineName.
func engineName(name string) string { return api.EngineName(name) }

// workloadSuffix keeps a workload's engine name apart from a Service of the
// same name in the same namespace (a Deployment "web" behind a Service "web"
// is the common case), since engine service names are unique per stack.
var workloadSuffix = map[string]string{
	"Deployment": "deploy", "StatefulSet": "sts", "DaemonSet": "ds",
	"ReplicaSet": "rs", "ReplicationController": "rc", "Job": "job",
}

func workloadEngineName(kind, name string) string {
	return engineName(name + "-" + workloadSuffix[kind])
}

func ownerLabels(kind, uid, ns, name string, extra map[string]string) map[string]string {
	out := make(map[string]string, len(extra)+4)
	for k, v := range extra {
		out[k] = v
	}
	out[LabelUID], out[LabelKind], out[LabelName] = uid, kind, name
	if ns != "" {
		out[LabelNamespace] = ns
	}
	return out
}
