package metadata

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"strings"

	"github.com/drover/drover/api"
)

// Environment is the one Rancher 1.x environment drover stands for: every
// container, service, stack and host is in it. Rancher named its first
// environment "Default" with the uuid "adminProject"; drover keeps both, so
// a script comparing environment_uuid across objects, or against a value
// it saved, sees one fixed environment on every host and after restarts.
const (
	EnvironmentName = "Default"
	EnvironmentUUID = "adminProject"
)

// The shapes below are Rancher 1.x's metadata shapes (snake_case keys, as
// github.com/rancher/go-rancher-metadata declares them), so existing
// clients and scripts keep working.

type HealthCheck struct {
	HealthyThreshold   int    `json:"healthy_threshold"`
	Interval           int    `json:"interval"`
	Port               int    `json:"port"`
	RequestLine        string `json:"request_line"`
	ResponseTimeout    int    `json:"response_timeout"`
	UnhealthyThreshold int    `json:"unhealthy_threshold"`
}

type Container struct {
	Name              string            `json:"name"`
	UUID              string            `json:"uuid"`
	PrimaryIP         string            `json:"primary_ip"`
	PrimaryMacAddress string            `json:"primary_mac_address"`
	IPs               []string          `json:"ips"`
	ExternalID        string            `json:"external_id"`
	HostUUID          string            `json:"host_uuid"`
	StackName         string            `json:"stack_name"`
	StackUUID         string            `json:"stack_uuid"`
	ServiceName       string            `json:"service_name"`
	ServiceUUID       string            `json:"service_uuid"`
	ServiceIndex      string            `json:"service_index"`
	Labels            map[string]string `json:"labels"`
	Ports             []string          `json:"ports"`
	State             string            `json:"state"`
	HealthState       string            `json:"health_state"`
	HealthCheck       *HealthCheck      `json:"health_check"`
	StartCount        int               `json:"start_count"`
	CreateIndex       int               `json:"create_index"`
	DNS               []string          `json:"dns"`
	DNSSearch         []string          `json:"dns_search"`
	NetworkUUID       string            `json:"network_uuid"`
	Hostname          string            `json:"hostname"`
	Links             map[string]string `json:"links"`
	EnvironmentUUID   string            `json:"environment_uuid"`
	EnvironmentName   string            `json:"environment_name"`
}

type Service struct {
	Name               string            `json:"name"`
	UUID               string            `json:"uuid"`
	StackName          string            `json:"stack_name"`
	StackUUID          string            `json:"stack_uuid"`
	Kind               string            `json:"kind"`
	VIP                string            `json:"vip"`
	FQDN               string            `json:"fqdn"`
	CreateIndex        int               `json:"create_index"`
	ExternalIPs        []string          `json:"external_ips"`
	Hostname           string            `json:"hostname"`
	Containers         []any             `json:"containers,omitempty"` // added from the containers' own bytes
	Labels             map[string]string `json:"labels"`
	Metadata           map[string]any    `json:"metadata"`
	Sidekicks          []string          `json:"sidekicks"`
	Links              map[string]string `json:"links"`
	Ports              []string          `json:"ports"`
	Scale              int               `json:"scale"`
	State              string            `json:"state"`
	HealthCheck        *HealthCheck      `json:"health_check"`
	LBConfig           *api.LBConfig     `json:"lb_config"`
	PrimaryServiceName string            `json:"primary_service_name"`
	EnvironmentUUID    string            `json:"environment_uuid"`
	EnvironmentName    string            `json:"environment_name"`
	Token              string            `json:"token,omitempty"`
}

type Stack struct {
	Name            string `json:"name"`
	UUID            string `json:"uuid"`
	EnvironmentName string `json:"environment_name"`
	EnvironmentUUID string `json:"environment_uuid"`
	Services        []any  `json:"services,omitempty"` // added from the services' own bytes
	System          bool   `json:"system"`
}

type Host struct {
	Name            string            `json:"name"`
	UUID            string            `json:"uuid"`
	HostID          int64             `json:"host_id"`
	AgentIP         string            `json:"agent_ip"`
	Hostname        string            `json:"hostname"`
	Labels          map[string]string `json:"labels"`
	Memory          int64             `json:"memory"`
	MilliCPU        int64             `json:"milli_cpu"`
	LocalStorageMB  int64             `json:"local_storage_mb"`
	State           string            `json:"state"`
	EnvironmentUUID string            `json:"environment_uuid"`
}

type Network struct {
	Name string `json:"name"`
	UUID string `json:"uuid"`
	CIDR string `json:"cidr"`
	MTU  int    `json:"mtu"`
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func healthCheck(h *api.HealthCheck) *HealthCheck {
	if h == nil {
		return nil
	}
	return &HealthCheck{HealthyThreshold: h.HealthyThreshold, Interval: h.Interval, Port: h.Port, RequestLine: h.RequestLine, ResponseTimeout: h.ResponseTimeout, UnhealthyThreshold: h.UnhealthyThreshold}
}

// containerCtx is what a container's rendering reads from other objects.
type containerCtx struct {
	stackName string
	service   *api.Service // nil for a container of no service
	// hostHostname is the hostname of the container's host, for
	// containers on the host's network.
	hostHostname string
	networkUUID  string
}

func renderContainer(c *api.Container, x containerCtx) *Container {
	out := &Container{
		Name: c.Name, UUID: c.ID, PrimaryIP: c.Status.PrimaryIP, PrimaryMacAddress: c.Status.MAC,
		ExternalID: c.Status.DockerID, HostUUID: c.Spec.HostID, StackName: x.stackName, StackUUID: c.Spec.StackID,
		ServiceUUID: c.Spec.ServiceID, ServiceIndex: strconv.Itoa(c.Spec.ServiceIndex),
		Labels: containerLabels(c, x), State: c.Status.State, HealthState: c.Status.Health, StartCount: c.Status.StartCount,
		CreateIndex: createIndex(c), IPs: []string{}, Ports: []string{}, DNS: []string{}, DNSSearch: []string{},
		NetworkUUID: x.networkUUID, Hostname: containerHostname(c, x.hostHostname), Links: map[string]string{},
		EnvironmentUUID: EnvironmentUUID, EnvironmentName: EnvironmentName,
	}
	if x.service != nil {
		out.ServiceName = x.service.Name
		out.Links = serviceLinks(x.service, x.stackName)
	}
	if c.Spec.LaunchConfigName != "" {
		out.ServiceName = c.Spec.LaunchConfigName
	}
	if c.Status.PrimaryIP != "" {
		out.IPs = []string{c.Status.PrimaryIP}
	}
	if lc := c.Spec.LaunchConfig; lc != nil {
		out.Ports, out.DNS, out.DNSSearch = nonNilStrings(lc.Ports), nonNilStrings(lc.DNS), nonNilStrings(lc.DNSSearch)
		out.HealthCheck = healthCheck(lc.HealthCheck)
	}
	// The check the agent runs: the launch config's, else, for a primary,
	// the service's.
	if out.HealthCheck == nil && x.service != nil && c.Spec.LaunchConfigName == "" {
		out.HealthCheck = healthCheck(x.service.Spec.HealthCheck)
	}
	if out.HealthState == "" && out.State == api.ContainerRunning {
		out.HealthState = "healthy"
	}
	return out
}

// createIndex is Rancher's create_index: the container's number in its
// service, the suffix of its name (shop-web-3 is 3), which placement keeps
// in spec.serviceIndex. Containers made without one fall back to their
// name's numeric suffix; neither gives 0.
func createIndex(c *api.Container) int {
	if c.Spec.ServiceIndex > 0 {
		return c.Spec.ServiceIndex
	}
	i := strings.LastIndexByte(c.Name, '-')
	if i < 0 {
		return 0
	}
	n, err := strconv.Atoi(c.Name[i+1:])
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// containerHostname is the hostname the container sees: the one its
// launch config sets; a pod's name; on the host's network, the host's;
// else Docker's default, the first 12 characters of its container id.
func containerHostname(c *api.Container, hostHostname string) string {
	lc := c.Spec.LaunchConfig
	switch {
	case lc != nil && lc.Hostname != "":
		return lc.Hostname
	case c.Spec.Kind == api.ContainerKindPod && c.Labels["io.drover.kubernetes.name"] != "":
		n := c.Labels["io.drover.kubernetes.name"]
		return n[:min(len(n), 63)]
	case hostNetwork(c):
		return hostHostname
	}
	return c.Status.DockerID[:min(len(c.Status.DockerID), 12)]
}

func hostNetwork(c *api.Container) bool {
	return c.Spec.LaunchConfig != nil && c.Spec.LaunchConfig.NetworkMode == "host"
}

const (
	droverPrefix  = "io.drover."
	rancherPrefix = "io.rancher."
	droverPrimary = "io.drover.service.primary.launch.config"
)

// containerLabels are the container's labels with Rancher's spelling of
// drover's own added, for scripts written against Rancher: each
// io.drover.X also as io.rancher.X (io.drover.service.primary.launch.config
// as a value becomes io.rancher.service.primary.launch.config), and the
// labels Rancher set on every container of a service (stack and service
// names, launch config, container name and uuid, deployment unit), from
// the spec when no label carries them. A label the container has is never
// overwritten.
func containerLabels(c *api.Container, x containerCtx) map[string]string {
	out := make(map[string]string, 2*len(c.Labels)+8)
	for k, v := range c.Labels {
		out[k] = v
	}
	add := func(k, v string) {
		if _, ok := out[k]; !ok {
			out[k] = v
		}
	}
	for k, v := range c.Labels {
		rest, ok := strings.CutPrefix(k, droverPrefix)
		if !ok {
			continue
		}
		if v == droverPrimary {
			v = rancherPrefix + strings.TrimPrefix(droverPrimary, droverPrefix)
		}
		add(rancherPrefix+rest, v)
	}
	add("io.rancher.container.name", c.Name)
	add("io.rancher.container.uuid", c.ID)
	if x.service != nil {
		add("io.rancher.stack.name", x.stackName)
		add("io.rancher.stack_service.name", x.stackName+"/"+x.service.Name)
		lc := "io.rancher.service.primary.launch.config"
		if c.Spec.LaunchConfigName != "" {
			lc = c.Spec.LaunchConfigName
		}
		add("io.rancher.service.launch.config", lc)
	}
	if c.Spec.DeploymentUnit != "" {
		add("io.rancher.service.deployment.unit", c.Spec.DeploymentUnit)
	}
	return out
}

// serviceLinks are a service's links in Rancher's form: "stack/service"
// of the target (the service's own stack when the link names none) to
// the alias (the target service's name when the link gives none).
func serviceLinks(s *api.Service, stackName string) map[string]string {
	out := make(map[string]string, len(s.Spec.Links))
	for _, l := range s.Spec.Links {
		target, alias, _ := strings.Cut(l, ":")
		stack, svc, ok := strings.Cut(target, "/")
		if !ok {
			stack, svc = stackName, target
		}
		if alias == "" {
			alias = svc
		}
		out[stack+"/"+svc] = alias
	}
	return out
}

func renderService(s *api.Service, stackName string, createIndex int) *Service {
	out := &Service{
		Name: s.Name, UUID: s.ID, StackName: stackName, StackUUID: s.Spec.StackID, Kind: s.Spec.Kind,
		VIP: s.Spec.VIP, CreateIndex: createIndex, ExternalIPs: nonNilStrings(s.Spec.ExternalIPs), Hostname: s.Spec.Hostname,
		Labels: nonNilMap(s.Labels), Metadata: s.Spec.Metadata, Sidekicks: []string{}, Links: serviceLinks(s, stackName),
		Ports: []string{}, State: s.Status.State, HealthCheck: healthCheck(s.Spec.HealthCheck), LBConfig: s.Spec.LBConfig,
		PrimaryServiceName: s.Name, EnvironmentUUID: EnvironmentUUID, EnvironmentName: EnvironmentName,
	}
	if out.Metadata == nil {
		out.Metadata = map[string]any{}
	}
	if out.VIP == "" {
		out.VIP = s.Status.VIP
	}
	if stackName != "" {
		out.FQDN = s.Name + "." + stackName + ".drover.internal"
	}
	if s.Spec.Scale != nil {
		out.Scale = *s.Spec.Scale
	}
	for _, sk := range s.Spec.Sidekicks {
		out.Sidekicks = append(out.Sidekicks, sk.Name)
	}
	if lc := s.Spec.LaunchConfig; lc != nil {
		out.Ports = nonNilStrings(lc.Ports)
		if out.HealthCheck == nil {
			out.HealthCheck = healthCheck(lc.HealthCheck)
		}
	}
	return out
}

func renderStack(st *api.Stack) *Stack {
	return &Stack{Name: st.Name, UUID: st.ID, EnvironmentName: EnvironmentName, EnvironmentUUID: EnvironmentUUID,
		System: st.Labels["io.drover.system"] == "true"}
}

func renderHost(h *api.Host) *Host {
	out := &Host{Name: h.Name, UUID: h.ID, HostID: hostID(h.ID), AgentIP: h.Status.AgentIP, Hostname: h.Status.Hostname, Labels: nonNilMap(h.Labels),
		Memory: h.Status.Capacity.MemoryBytes, MilliCPU: h.Status.Capacity.MilliCPU, LocalStorageMB: h.Status.Capacity.LocalStorageMB, State: h.Status.State,
		EnvironmentUUID: EnvironmentUUID}
	if out.Hostname == "" {
		out.Hostname = h.Name // until the agent reports the machine's own
	}
	return out
}

// hostID is Rancher's numeric host_id. Drover's host ids are strings, so
// it is a hash of the id: the same on every metadata server and after
// restarts, never 0, and below 2^31, because Rancher's ids were small and
// its Go client decodes host_id into an int, which is 32 bits on 32-bit
// machines. (Two of a thousand hosts share one with odds of about 1 in
// 4,000; nothing in drover reads it.)
func hostID(id string) int64 {
	h := fnv.New32a()
	h.Write([]byte(id))
	n := int64(h.Sum32() & (1<<31 - 1))
	if n == 0 {
		n = 1
	}
	return n
}

// serviceToken is the secret a service's own containers read at
// self/service/token: an HMAC of the service id, so every metadata server
// sharing the key hands out the same token and none is stored.
func serviceToken(key []byte, serviceID string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(serviceID))
	return hex.EncodeToString(m.Sum(nil))[:32]
}

func nameOf(v any) string {
	if m, ok := v.(map[string]any); ok {
		if n, ok := m["name"].(string); ok {
			return n
		}
	}
	return ""
}
