// Package api holds the wire types of the engine API (v1): the objects every
// collection stores, the error body and the event frames. The server, the Go
// client and every component share them, so a field is declared once.
package api

import (
	"encoding/json"
	"time"
)

// Meta is the part every object shares. Revision is the store revision of the
// object's last write; it is not stored, the server fills it on every read.
type Meta struct {
	Type        string            `json:"type"`
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Revision    int64             `json:"revision,omitempty"`
	// Generation moves only when spec changes; a status says which spec it
	// describes with its observedGeneration.
	Generation int64     `json:"generation,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	// OwnerReferences name the objects this one belongs to: when any of them
	// goes, the garbage collector deletes this one. The server fills in the
	// references implied by spec (a service's stack, a container's service
	// and host); others may be added.
	OwnerReferences []OwnerReference `json:"ownerReferences,omitempty"`
	// Finalizers hold a deleted object until every controller named here
	// has cleaned up and removed its entry.
	Finalizers []string `json:"finalizers,omitempty"`
	// DeletionTimestamp is set by DELETE; the object goes once its
	// finalizers are empty.
	DeletionTimestamp *time.Time `json:"deletionTimestamp,omitempty"`
}

// OwnerReference points at an owning object by type and id.
type OwnerReference struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	// Controller marks the owner that manages this object.
	Controller bool `json:"controller,omitempty"`
}

// FinalizerDependents is the finalizer the server puts on a deleted object
// that may have dependents; the garbage collector removes it once they are
// gone, and the object goes with it.
const FinalizerDependents = "drover.io/dependents"

// Deleting reports whether the object is being deleted.
func (m *Meta) Deleting() bool { return m.DeletionTimestamp != nil }

// Condition is one aspect of an object's observed state. Each condition
// type has one owner, the controller that writes it; a status PATCH merges
// conditions by type, so owners never overwrite each other.
type Condition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"` // "True", "False" or "Unknown"
	Owner              string    `json:"owner,omitempty"`
	Reason             string    `json:"reason,omitempty"`
	Message            string    `json:"message,omitempty"`
	ObservedGeneration int64     `json:"observedGeneration,omitempty"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
}

// Condition statuses.
const (
	ConditionTrue    = "True"
	ConditionFalse   = "False"
	ConditionUnknown = "Unknown"
)

// FindCondition returns the condition of type t, or nil.
func FindCondition(cs []Condition, t string) *Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// GetMeta lets generic code reach the shared fields of any object.
func (m *Meta) GetMeta() *Meta { return m }

// Object is implemented by every stored kind.
type Object interface {
	GetMeta() *Meta
}

// Host is a machine running a drover agent.
type Host struct {
	Meta
	Spec   HostSpec   `json:"spec"`
	Status HostStatus `json:"status"`
}

type HostSpec struct {
	Unschedulable bool `json:"unschedulable,omitempty"`
}

// Host states.
const (
	HostRegistering  = "registering"
	HostActive       = "active"
	HostInactive     = "inactive"
	HostDisconnected = "disconnected"
)

type HostStatus struct {
	ObservedGeneration int64             `json:"observedGeneration,omitempty"`
	Conditions         []Condition       `json:"conditions,omitempty"`
	State              string            `json:"state,omitempty"`
	AgentIP            string            `json:"agentIP,omitempty"`
	Hostname           string            `json:"hostname,omitempty"`
	Capacity           Capacity          `json:"capacity,omitempty"`
	LastHeartbeat      *time.Time        `json:"lastHeartbeat,omitempty"`
	Subnet             string            `json:"subnet,omitempty"`
	VTEPMAC            string            `json:"vtepMAC,omitempty"`
	DockerVersion      string            `json:"dockerVersion,omitempty"`
	NodeLabels         map[string]string `json:"nodeLabels,omitempty"`
	Message            string            `json:"message,omitempty"`
}

type Capacity struct {
	MilliCPU       int64 `json:"milliCPU,omitempty"`
	MemoryBytes    int64 `json:"memoryBytes,omitempty"`
	LocalStorageMB int64 `json:"localStorageMB,omitempty"`
}

// Stack is a set of services deployed and removed as one unit.
type Stack struct {
	Meta
	Spec   StackSpec   `json:"spec"`
	Status StackStatus `json:"status"`
}

// HasTemplates says whether the stack is a Kubernetes-template stack (its
// objects kubectld applies), not a namespace's mirror or a compose stack.
func (s *Stack) HasTemplates() bool {
	return s.Spec.Kind == StackKubernetes && len(s.Spec.Templates) > 0
}

// Stack kinds.
const (
	StackCompose    = "compose"
	StackKubernetes = "kubernetes"
)

type StackSpec struct {
	Kind    string `json:"kind,omitempty"`
	Compose string `json:"compose,omitempty"`
	// ComposeName is the compose file's name: one ending in .tpl is a
	// Rancher catalog Go template, rendered with the answers first.
	ComposeName string `json:"composeName,omitempty"`
	// Overrides are more compose files, applied over Compose in order (as
	// docker-compose -f a -f b does).
	Overrides      []string          `json:"overrides,omitempty"`
	RancherCompose string            `json:"rancherCompose,omitempty"`
	Templates      map[string]string `json:"templates,omitempty"`
	Answers        map[string]string `json:"answers,omitempty"`
	Namespace      string            `json:"namespace,omitempty"`
}

type StackStatus struct {
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	State              string      `json:"state,omitempty"`
	Health             string      `json:"health,omitempty"`
	Message            string      `json:"message,omitempty"`
	// PreviousSpec is the spec before the last change of spec, kept by the
	// server; rolling back re-applies it.
	PreviousSpec *StackSpec `json:"previousSpec,omitempty"`
	// Kubernetes-template stacks (written by kubectld): state is the phase
	// (applying, active, error, removing), lastError the last failure, and
	// objects what the templates applied; release and releaseRevision name
	// the Helm release of a chart.
	LastError       string       `json:"lastError,omitempty"`
	Objects         []KubeObject `json:"objects,omitempty"`
	Release         string       `json:"release,omitempty"`
	ReleaseRevision int          `json:"releaseRevision,omitempty"`
}

// KubeObject names a Kubernetes object.
type KubeObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

// Service is a scaled set of containers (or a load balancer, an external or
// alias record, or a Kubernetes service mirrored into the engine).
type Service struct {
	Meta
	Spec   ServiceSpec   `json:"spec"`
	Status ServiceStatus `json:"status"`
}

// Service kinds.
const (
	ServiceContainer          = "container"
	ServiceLoadBalancer       = "loadBalancer"
	ServiceExternal           = "external"
	ServiceAlias              = "alias"
	ServiceKubernetes         = "kubernetes"
	ServiceKubernetesWorkload = "kubernetesWorkload"
)

type ServiceSpec struct {
	StackID      string         `json:"stackId"`
	Kind         string         `json:"kind,omitempty"`
	LaunchConfig *LaunchConfig  `json:"launchConfig,omitempty"`
	Sidekicks    []LaunchConfig `json:"sidekicks,omitempty"`
	Scale        *int           `json:"scale,omitempty"`
	Global       bool           `json:"global,omitempty"`
	HealthCheck  *HealthCheck   `json:"healthCheck,omitempty"`
	LBConfig     *LBConfig      `json:"lbConfig,omitempty"`
	ExternalIPs  []string       `json:"externalIPs,omitempty"`
	Hostname     string         `json:"hostname,omitempty"`
	Selector     string         `json:"selector,omitempty"`
	Ports        []ServicePort  `json:"ports,omitempty"`
	VIP          string         `json:"vip,omitempty"`
	Links        []string       `json:"links,omitempty"`
	Upgrade      *UpgradeConfig `json:"upgrade,omitempty"`
	// Metadata is free-form data the service's containers read from the
	// metadata service (/self/service/metadata), Rancher's rancher-compose
	// "metadata:" key.
	Metadata map[string]any `json:"metadata,omitempty"`
}

type ServiceStatus struct {
	ObservedGeneration int64            `json:"observedGeneration,omitempty"`
	Conditions         []Condition      `json:"conditions,omitempty"`
	State              string           `json:"state,omitempty"`
	Health             string           `json:"health,omitempty"`
	PublicEndpoints    []PublicEndpoint `json:"publicEndpoints,omitempty"`
	VIP                string           `json:"vip,omitempty"`
	Message            string           `json:"message,omitempty"`
	// Endpoints are the ready backends of a Kubernetes service (from its
	// EndpointSlices).
	Endpoints []Endpoint `json:"endpoints,omitempty"`
	// DesiredReplicas and ReadyReplicas count a Kubernetes workload's pods.
	DesiredReplicas int `json:"desiredReplicas,omitempty"`
	ReadyReplicas   int `json:"readyReplicas,omitempty"`
	// Upgrade is the rolling upgrade's progress, kept by the upgrade
	// controller so a restart resumes at the same batch.
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
}

// UpgradeStatus is a rolling upgrade in progress.
type UpgradeStatus struct {
	// Surge is how many units the service may run above its scale while a
	// start-first batch's replacements start beside the old units.
	Surge int `json:"surge,omitempty"`
	// BatchStartedAt paces batches by the upgrade interval.
	BatchStartedAt *time.Time `json:"batchStartedAt,omitempty"`
	// Outdated counts the units still running an older launch config.
	Outdated int `json:"outdated,omitempty"`
}

// Endpoint is one ready address behind a service.
type Endpoint struct {
	IP       string         `json:"ip"`
	Hostname string         `json:"hostname,omitempty"`
	NodeName string         `json:"nodeName,omitempty"`
	Pod      string         `json:"pod,omitempty"`
	Ports    []EndpointPort `json:"ports,omitempty"`
}

type EndpointPort struct {
	Name     string `json:"name,omitempty"`
	Protocol string `json:"protocol,omitempty"`
	Port     int    `json:"port"`
}

type ServicePort struct {
	Name       string `json:"name,omitempty"`
	Protocol   string `json:"protocol,omitempty"`
	Port       int    `json:"port"`
	TargetPort int    `json:"targetPort,omitempty"`
	NodePort   int    `json:"nodePort,omitempty"`
}

type PublicEndpoint struct {
	IP     string `json:"ip"`
	Port   int    `json:"port"`
	HostID string `json:"hostId,omitempty"`
}

// LaunchConfig says how to run one container. Sidekicks are launch configs
// with a Name.
type LaunchConfig struct {
	Name        string            `json:"name,omitempty"`
	Image       string            `json:"image,omitempty"`
	Command     []string          `json:"command,omitempty"`
	Entrypoint  []string          `json:"entrypoint,omitempty"`
	Environment map[string]string `json:"environment,omitempty"`
	Ports       []string          `json:"ports,omitempty"`
	Expose      []string          `json:"expose,omitempty"`
	Volumes     []string          `json:"volumes,omitempty"`
	VolumesFrom []string          `json:"volumesFrom,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	NetworkMode string            `json:"networkMode,omitempty"`
	Pid         string            `json:"pid,omitempty"` // "host": the host's PID namespace
	Privileged  bool              `json:"privileged,omitempty"`
	CapAdd      []string          `json:"capAdd,omitempty"`
	CapDrop     []string          `json:"capDrop,omitempty"`
	Restart     string            `json:"restart,omitempty"`
	DNS         []string          `json:"dns,omitempty"`
	DNSSearch   []string          `json:"dnsSearch,omitempty"`
	Hostname    string            `json:"hostname,omitempty"`
	WorkingDir  string            `json:"workingDir,omitempty"`
	User        string            `json:"user,omitempty"`
	Tty         bool              `json:"tty,omitempty"`
	StdinOpen   bool              `json:"stdinOpen,omitempty"`
	MemoryBytes int64             `json:"memoryBytes,omitempty"`
	MilliCPU    int64             `json:"milliCPU,omitempty"`
	StartOnce   bool              `json:"startOnce,omitempty"`
	PullImage   string            `json:"pullImage,omitempty"`
	HealthCheck *HealthCheck      `json:"healthCheck,omitempty"`
	// What compose files also say of a container (Docker's meaning).
	LogDriver     string            `json:"logDriver,omitempty"`
	LogOptions    map[string]string `json:"logOptions,omitempty"`
	Ulimits       []Ulimit          `json:"ulimits,omitempty"`
	VolumeDriver  string            `json:"volumeDriver,omitempty"`
	ExtraHosts    []string          `json:"extraHosts,omitempty"` // "host:ip"
	Devices       []string          `json:"devices,omitempty"`    // "/dev/x:/dev/y:rwm"
	Sysctls       map[string]string `json:"sysctls,omitempty"`
	ShmSize       int64             `json:"shmSize,omitempty"`
	SecurityOpt   []string          `json:"securityOpt,omitempty"`
	MemSwappiness *int64            `json:"memSwappiness,omitempty"`
	StopSignal    string            `json:"stopSignal,omitempty"`
}

// Ulimit is one resource limit of a container.
type Ulimit struct {
	Name string `json:"name"`
	Soft int64  `json:"soft"`
	Hard int64  `json:"hard"`
}

// HealthCheck follows Rancher 1.x: times are in milliseconds. An HTTP check
// sets RequestLine, a command check sets Command, otherwise it is TCP.
type HealthCheck struct {
	Port                int      `json:"port,omitempty"`
	RequestLine         string   `json:"requestLine,omitempty"`
	Command             []string `json:"command,omitempty"`
	Interval            int      `json:"interval,omitempty"`
	ResponseTimeout     int      `json:"responseTimeout,omitempty"`
	HealthyThreshold    int      `json:"healthyThreshold,omitempty"`
	UnhealthyThreshold  int      `json:"unhealthyThreshold,omitempty"`
	InitializingTimeout int      `json:"initializingTimeout,omitempty"`
	Strategy            string   `json:"strategy,omitempty"`
	// Quorum is the recreateOnQuorum strategy's: recreate unhealthy
	// containers only while this many are healthy.
	Quorum int `json:"quorum,omitempty"`
}

type UpgradeConfig struct {
	BatchSize  int  `json:"batchSize,omitempty"`
	IntervalMs int  `json:"intervalMs,omitempty"`
	StartFirst bool `json:"startFirst,omitempty"`
}

type LBConfig struct {
	PortRules            []PortRule `json:"portRules,omitempty"`
	CertificateIDs       []string   `json:"certificateIds,omitempty"`
	DefaultCertificateID string     `json:"defaultCertificateId,omitempty"`
	Config               string     `json:"config,omitempty"`
	// StickinessPolicy is Rancher 1.6's cookie stickiness for HTTP rules.
	StickinessPolicy *StickinessPolicy `json:"stickinessPolicy,omitempty"`
}

// StickinessPolicy: HAProxy's cookie directive. Mode is insert (default),
// rewrite or prefix; Cookie is the cookie's name.
type StickinessPolicy struct {
	Name     string `json:"name,omitempty"`
	Cookie   string `json:"cookie,omitempty"`
	Domain   string `json:"domain,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Indirect bool   `json:"indirect,omitempty"`
	NoCache  bool   `json:"nocache,omitempty"`
	PostOnly bool   `json:"postonly,omitempty"`
}

type PortRule struct {
	SourcePort  int    `json:"sourcePort"`
	Protocol    string `json:"protocol,omitempty"`
	Hostname    string `json:"hostname,omitempty"`
	Path        string `json:"path,omitempty"`
	ServiceID   string `json:"serviceId,omitempty"`
	TargetPort  int    `json:"targetPort,omitempty"`
	Priority    int    `json:"priority,omitempty"`
	BackendName string `json:"backendName,omitempty"`
	Selector    string `json:"selector,omitempty"`
	// PathType is how Path matches: "" as Rancher did (a string prefix),
	// "Exact", or "Prefix" (by path element: /foo matches /foo and
	// /foo/bar, not /foobar), as Kubernetes Ingress defines them.
	PathType string `json:"pathType,omitempty"`
	// TargetPortName, for a Kubernetes service, picks each endpoint's port
	// of that name (a Service port whose targetPort is a name may resolve
	// to a different number on each pod); else TargetPort is used.
	TargetPortName string `json:"targetPortName,omitempty"`
	// Addresses, instead of a service or selector, are the backends
	// themselves, each at TargetPort (the cloudprovider's rules: the
	// nodes' addresses and a Service's NodePort).
	Addresses []string `json:"addresses,omitempty"`
}

// Path types of a port rule.
const (
	PathExact  = "Exact"
	PathPrefix = "Prefix"
)

// Container is one running (or wanted) container, or a Kubernetes pod.
type Container struct {
	Meta
	Spec   ContainerSpec   `json:"spec"`
	Status ContainerStatus `json:"status"`
}

// AllLabels merges a container's labels with its launch config's (those
// win), as the labels that ask for secrets are read.
func (c *Container) AllLabels() map[string]string {
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	if c.Spec.LaunchConfig != nil {
		for k, v := range c.Spec.LaunchConfig.Labels {
			labels[k] = v
		}
	}
	return labels
}

// Container kinds and states.
const (
	ContainerKindContainer = "container"
	ContainerKindPod       = "kubernetesPod"

	ContainerPending  = "pending"
	ContainerStarting = "starting"
	ContainerRunning  = "running"
	ContainerStopped  = "stopped"
	ContainerError    = "error"
)

type ContainerSpec struct {
	Kind             string        `json:"kind,omitempty"`
	StackID          string        `json:"stackId,omitempty"`
	ServiceID        string        `json:"serviceId,omitempty"`
	HostID           string        `json:"hostId,omitempty"`
	ServiceIndex     int           `json:"serviceIndex,omitempty"`
	LaunchConfigName string        `json:"launchConfigName,omitempty"`
	DeploymentUnit   string        `json:"deploymentUnit,omitempty"`
	LaunchConfig     *LaunchConfig `json:"launchConfig,omitempty"`
}

type ContainerStatus struct {
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	State              string      `json:"state,omitempty"`
	Health             string      `json:"health,omitempty"`
	PrimaryIP          string      `json:"primaryIP,omitempty"`
	MAC                string      `json:"mac,omitempty"`
	DockerID           string      `json:"dockerId,omitempty"`
	StartCount         int         `json:"startCount,omitempty"`
	ExitCode           int         `json:"exitCode,omitempty"`
	Message            string      `json:"message,omitempty"`
	StartedAt          *time.Time  `json:"startedAt,omitempty"`
}

// Network is the overlay's address plan.
type Network struct {
	Meta
	Spec   NetworkSpec   `json:"spec"`
	Status NetworkStatus `json:"status"`
}

// NetworkSpec is an overlay: a CIDR cut into one subnet per host, joined by
// VXLAN (VNI on UDP VXLANPort).
type NetworkSpec struct {
	CIDR           string `json:"cidr,omitempty"`
	HostSubnetSize int    `json:"hostSubnetSize,omitempty"`
	MTU            int    `json:"mtu,omitempty"`
	VNI            int    `json:"vni,omitempty"`
	VXLANPort      int    `json:"vxlanPort,omitempty"`
}

type NetworkStatus struct {
	ObservedGeneration int64       `json:"observedGeneration,omitempty"`
	Conditions         []Condition `json:"conditions,omitempty"`
	State              string      `json:"state,omitempty"`
}

// Certificate is a TLS certificate for load balancers. Spec.Key is accepted
// on writes and never returned.
type Certificate struct {
	Meta
	Spec   CertificateSpec   `json:"spec"`
	Status CertificateStatus `json:"status"`
}

type CertificateSpec struct {
	Cert string `json:"cert"`
	Key  string `json:"key,omitempty"`
}

type CertificateStatus struct {
	CN          string    `json:"cn,omitempty"`
	SANs        []string  `json:"sans,omitempty"`
	NotAfter    time.Time `json:"notAfter,omitzero"`
	Fingerprint string    `json:"fingerprint,omitempty"`
}

// APIKey grants a role. Its id is the access key; the secret is shown once,
// in the response that creates it, and stored only as a hash.
type APIKey struct {
	Meta
	Spec   APIKeySpec   `json:"spec"`
	Status APIKeyStatus `json:"status"`
}

// Roles.
const (
	RoleAdmin   = "admin"
	RoleAgent   = "agent"
	RoleService = "service"
)

type APIKeySpec struct {
	Role        string `json:"role"`
	HostID      string `json:"hostId,omitempty"`
	Description string `json:"description,omitempty"`
}

type APIKeyStatus struct {
	AccessKey string `json:"accessKey,omitempty"`
	SecretKey string `json:"secretKey,omitempty"`
}

// RegistrationToken lets an agent register its host. The token is shown
// once, in the response that creates it.
type RegistrationToken struct {
	Meta
	Spec   RegistrationTokenSpec   `json:"spec"`
	Status RegistrationTokenStatus `json:"status"`
}

// RegistrationTokenSpec limits what a token may register. A token with no
// limits registers any number of new hosts, forever, until it is deleted
// (which revokes it). No token re-registers a host that exists, except one
// whose hostNamePattern is exactly that host's name.
type RegistrationTokenSpec struct {
	Description string `json:"description,omitempty"`
	// MaxUses is how many registrations the token allows (0: no limit).
	MaxUses int `json:"maxUses,omitempty"`
	// ExpiresAt is when the token stops working (absent: never).
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	// HostNamePattern is a shell pattern (path.Match: *, ?, [a-z]) host
	// names must match, e.g. "worker-*" (empty: any name).
	HostNamePattern string `json:"hostNamePattern,omitempty"`
}

type RegistrationTokenStatus struct {
	// Token is shown once, in the answer to the create.
	Token string `json:"token,omitempty"`
	// Uses counts the registrations made with a token that has maxUses
	// (an unlimited token is checked without a write, so that many hosts
	// can join at once).
	Uses       int        `json:"uses,omitempty"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
}

// RegisterRequest is the body of POST /v1/hosts/register.
type RegisterRequest struct {
	Token    string            `json:"token,omitempty"`
	Name     string            `json:"name"`
	AgentIP  string            `json:"agentIP,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

// RegisterResponse carries the host and an agent key scoped to it.
type RegisterResponse struct {
	Host      Host   `json:"host"`
	AccessKey string `json:"accessKey"`
	SecretKey string `json:"secretKey"`
}

// Credentials is the credentials.json format shared by every component.
type Credentials struct {
	URL       string `json:"url"`
	AccessKey string `json:"accessKey"`
	SecretKey string `json:"secretKey"`
}

// List is the body of a collection GET.
type List[T any] struct {
	Type         string `json:"type"`
	ResourceType string `json:"resourceType"`
	Revision     int64  `json:"revision"`
	Data         []T    `json:"data"`
}

// Event names.
const (
	EventChange = "resource.change"
	EventRemove = "resource.remove"
	EventPing   = "ping"
	EventResync = "resync"
	EventError  = "error"
)

// Event is one frame of the event stream.
type Event struct {
	Name     string          `json:"name"`
	Revision int64           `json:"revision,omitempty"`
	Resource json.RawMessage `json:"resource,omitempty"`
	Message  string          `json:"message,omitempty"`
}

// SameJSON reports whether two values encode to the same JSON: what the
// wire shows, so nil and empty (both omitted) compare equal. Controllers use
// it to skip writes that would change nothing.
func SameJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

// Lease is a renewable claim with an expiry: a host's liveness (renewed by
// its agent, spec.hostId set) or a controller's leadership. Renewing a lease
// writes only the lease, so liveness costs no host write and wakes no host
// watcher.
type Lease struct {
	Meta
	Spec   LeaseSpec   `json:"spec"`
	Status LeaseStatus `json:"status"`
}

type LeaseSpec struct {
	// HostID makes this the liveness lease of a host.
	HostID               string     `json:"hostId,omitempty"`
	HolderIdentity       string     `json:"holderIdentity,omitempty"`
	LeaseDurationSeconds int        `json:"leaseDurationSeconds,omitempty"`
	AcquireTime          *time.Time `json:"acquireTime,omitempty"`
	RenewTime            *time.Time `json:"renewTime,omitempty"`
	LeaseTransitions     int        `json:"leaseTransitions,omitempty"`
}

type LeaseStatus struct{}

// HostLeaseName is the name of a host's liveness lease.
func HostLeaseName(hostID string) string { return "host-" + hostID }

// SetCondition puts c into cs, keeping LastTransitionTime when the status
// did not change. It reports whether anything changed, so a controller
// writes only when it must.
func SetCondition(cs *[]Condition, c Condition, now time.Time) bool {
	for i := range *cs {
		old := &(*cs)[i]
		if old.Type != c.Type {
			continue
		}
		c.LastTransitionTime = old.LastTransitionTime
		if old.Status != c.Status || c.LastTransitionTime.IsZero() {
			c.LastTransitionTime = now.UTC().Truncate(time.Second)
		}
		if *old == c {
			return false
		}
		*old = c
		return true
	}
	c.LastTransitionTime = now.UTC().Truncate(time.Second)
	*cs = append(*cs, c)
	return true
}

// Labels a system container carries to be handed secrets by its agent
// (GET /v1/containers/{id}/secrets).
const (
	// LabelAgentRole asks for an engine key of this role ("service"), given
	// to the container as DROVER_URL, DROVER_ACCESS_KEY, DROVER_SECRET_KEY
	// and DROVER_CREDENTIALS. Rancher 1.x's io.rancher.container.agent.role
	// (with io.rancher.container.create_agent) means the same; its
	// "environment" role is "service" here.
	LabelAgentRole = "io.drover.container.agent.role"
	// LabelCertificates names engine certificates (comma-separated; "{host}"
	// is the host's name) written with their keys to /run/drover/certs as
	// NAME.crt and NAME.key.
	LabelCertificates = "io.drover.container.certificates"
)

// ContainerAgentRole is the engine role a container's labels ask for, or "".
func ContainerAgentRole(labels map[string]string) string {
	if r := labels[LabelAgentRole]; r != "" {
		return r
	}
	if labels["io.rancher.container.create_agent"] == "true" {
		switch r := labels["io.rancher.container.agent.role"]; r {
		case "environment", "environmentAdmin", "":
			return RoleService
		default:
			return r
		}
	}
	return ""
}

// ContainerSecrets is what GET /v1/containers/{id}/secrets returns.
type ContainerSecrets struct {
	Credentials  *Credentials        `json:"credentials,omitempty"`
	Certificates []SecretCertificate `json:"certificates,omitempty"`
}

// SecretCertificate is a certificate with its private key.
type SecretCertificate struct {
	Name string `json:"name"`
	Cert string `json:"cert"`
	Key  string `json:"key,omitempty"`
}

func (o KubeObject) String() string {
	if o.Namespace == "" {
		return o.Kind + " " + o.Name
	}
	return o.Kind + " " + o.Namespace + "/" + o.Name
}
