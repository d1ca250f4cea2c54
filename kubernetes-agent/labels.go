package kubernetesagent

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

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

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)

// engineName turns a Kubernetes name (a DNS subdomain up to 253 characters)
// into an engine name (a DNS label up to 63): dots become dashes, and a name
// too long is cut and given a hash of the whole, so distinct names stay
// distinct.
func engineName(name string) string {
	n := strings.ReplaceAll(strings.ToLower(name), ".", "-")
	if len(n) <= 63 && dnsLabel.MatchString(n) && n == name {
		return n
	}
	sum := sha256.Sum256([]byte(name))
	h := hex.EncodeToString(sum[:])[:8]
	if len(n) > 54 {
		n = n[:54]
	}
	n = strings.Trim(n, "-")
	return n + "-" + h
}

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
