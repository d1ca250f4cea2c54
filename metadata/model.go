package metadata

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/drover/drover/api"
)

// The shapes below are Rancher 1.x's metadata shapes (snake_case keys), so
// existing clients and scripts keep working.

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
	StartCount        int               `json:"start_count"`
	CreateIndex       int64             `json:"create_index"`
	DNS               []string          `json:"dns"`
	DNSSearch         []string          `json:"dns_search"`
	NetworkUUID       string            `json:"network_uuid"`
	Hostname          string            `json:"hostname"`
}

type Service struct {
	Name               string            `json:"name"`
	UUID               string            `json:"uuid"`
	StackName          string            `json:"stack_name"`
	StackUUID          string            `json:"stack_uuid"`
	Kind               string            `json:"kind"`
	VIP                string            `json:"vip"`
	FQDN               string            `json:"fqdn"`
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
	Token              string            `json:"token,omitempty"`
}

type Stack struct {
	Name            string `json:"name"`
	UUID            string `json:"uuid"`
	EnvironmentName string `json:"environment_name"`
	Services        []any  `json:"services,omitempty"` // added from the services' own bytes
	System          bool   `json:"system"`
}

type Host struct {
	Name           string            `json:"name"`
	UUID           string            `json:"uuid"`
	AgentIP        string            `json:"agent_ip"`
	Hostname       string            `json:"hostname"`
	Labels         map[string]string `json:"labels"`
	Memory         int64             `json:"memory"`
	MilliCPU       int64             `json:"milli_cpu"`
	LocalStorageMB int64             `json:"local_storage_mb"`
	State          string            `json:"state"`
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

func renderContainer(c *api.Container, stackName, serviceName string) *Container {
	out := &Container{
		Name: c.Name, UUID: c.ID, PrimaryIP: c.Status.PrimaryIP, PrimaryMacAddress: c.Status.MAC,
		ExternalID: c.Status.DockerID, HostUUID: c.Spec.HostID, StackName: stackName, StackUUID: c.Spec.StackID,
		ServiceName: serviceName, ServiceUUID: c.Spec.ServiceID, ServiceIndex: strconv.Itoa(c.Spec.ServiceIndex),
		Labels: nonNilMap(c.Labels), State: c.Status.State, HealthState: c.Status.Health, StartCount: c.Status.StartCount,
		CreateIndex: c.CreatedAt.UnixMilli(), IPs: []string{}, Ports: []string{}, DNS: []string{}, DNSSearch: []string{},
	}
	if c.Spec.LaunchConfigName != "" {
		out.ServiceName = c.Spec.LaunchConfigName
	}
	if c.Status.PrimaryIP != "" {
		out.IPs = []string{c.Status.PrimaryIP}
	}
	if lc := c.Spec.LaunchConfig; lc != nil {
		out.Ports, out.DNS, out.DNSSearch, out.Hostname = nonNilStrings(lc.Ports), nonNilStrings(lc.DNS), nonNilStrings(lc.DNSSearch), lc.Hostname
	}
	if out.HealthState == "" && out.State == api.ContainerRunning {
		out.HealthState = "healthy"
	}
	return out
}

func renderService(s *api.Service, stackName string) *Service {
	out := &Service{
		Name: s.Name, UUID: s.ID, StackName: stackName, StackUUID: s.Spec.StackID, Kind: s.Spec.Kind,
		VIP: s.Spec.VIP, ExternalIPs: nonNilStrings(s.Spec.ExternalIPs), Hostname: s.Spec.Hostname,
		Labels: nonNilMap(s.Labels), Metadata: map[string]any{}, Sidekicks: []string{}, Links: map[string]string{},
		Ports: []string{}, State: s.Status.State, HealthCheck: healthCheck(s.Spec.HealthCheck), LBConfig: s.Spec.LBConfig,
		PrimaryServiceName: s.Name,
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
	for _, l := range s.Spec.Links {
		target, alias, _ := strings.Cut(l, ":")
		if alias == "" {
			alias = target
		}
		out.Links[target] = alias
	}
	if lc := s.Spec.LaunchConfig; lc != nil {
		out.Ports = nonNilStrings(lc.Ports)
		if out.HealthCheck == nil {
			out.HealthCheck = healthCheck(lc.HealthCheck)
		}
	}
	return out
}

func renderHost(h *api.Host) *Host {
	return &Host{Name: h.Name, UUID: h.ID, AgentIP: h.Status.AgentIP, Hostname: h.Status.Hostname, Labels: nonNilMap(h.Labels),
		Memory: h.Status.Capacity.MemoryBytes, MilliCPU: h.Status.Capacity.MilliCPU, LocalStorageMB: h.Status.Capacity.LocalStorageMB, State: h.Status.State}
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
