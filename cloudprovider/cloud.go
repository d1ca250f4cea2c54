// Package cloudprovider is drover's Kubernetes cloud provider (name
// "drover"), run by `drover cloudprovider` with the controllers of
// k8s.io/cloud-provider, for kubelets started with --cloud-provider=external:
//
//   - LoadBalancer: a `type: LoadBalancer` Service becomes an L4 LB service
//     in the engine stack kubernetes-loadbalancers (one rule per port: TCP
//     by HAProxy, UDP by drover lb), its backends the nodes' NodePorts, or the ready endpoints with
//     externalTrafficPolicy: Local; status.loadBalancer.ingress follows the
//     LB's public endpoints.
//   - InstancesV2: nodes are engine hosts: providerID drover://<hostId>,
//     addresses from the host's agent IP, zone and region from its labels.
//   - No Routes: the overlay routes pod subnets.
package cloudprovider

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// ProviderName is the name kubelets and the providerID use.
const ProviderName = "drover"

// Stack holds the LB services of LoadBalancer Services.
const Stack = "kubernetes-loadbalancers"

// LBImage is the image an LB service names (the agent maps it to drover's).
const LBImage = "rancher/lb-service-haproxy"

// Labels on the LB services: ownership by the Service's UID.
const (
	LabelUID       = "io.drover.kubernetes.service-uid"
	LabelNamespace = "io.drover.kubernetes.service-namespace"
	LabelName      = "io.drover.kubernetes.service-name"
)

// Annotations a LoadBalancer Service may carry.
const (
	AnnotationScale  = "drover.io/lb-scale"  // LB containers (1)
	AnnotationGlobal = "drover.io/lb-global" // one on every host
)

// Cloud implements cloudprovider.Interface against the engine.
type Cloud struct {
	eng     *client.Client
	hosts   *client.Cache[api.Host, *api.Host]
	lbs     *client.Cache[api.Service, *api.Service]
	stackID string
	// StatusWait bounds how long EnsureLoadBalancer waits for the LB's
	// first public endpoints, so the status it returns is not empty.
	StatusWait time.Duration
	// locks serialize the operations on one Service: the service
	// controller's node sync calls UpdateLoadBalancer beside its service
	// worker (kubernetes/kubernetes#100846).
	locks sync.Map // namespace/name -> *sync.Mutex
}

func (c *Cloud) lock(svc *corev1.Service) func() {
	m, _ := c.locks.LoadOrStore(svc.Namespace+"/"+svc.Name, &sync.Mutex{})
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

var (
	_ cloudprovider.Interface    = (*Cloud)(nil)
	_ cloudprovider.LoadBalancer = (*Cloud)(nil)
	_ cloudprovider.InstancesV2  = (*Cloud)(nil)
)

func (c *Cloud) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool)                  { return c, true }
func (c *Cloud) Instances() (cloudprovider.Instances, bool)                        { return nil, false }
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool)                    { return c, true }
func (c *Cloud) Zones() (cloudprovider.Zones, bool)                                { return nil, false }
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool)                          { return nil, false }
func (c *Cloud) Routes() (cloudprovider.Routes, bool)                              { return nil, false }
func (c *Cloud) ProviderName() string                                              { return ProviderName }
func (c *Cloud) HasClusterID() bool                                                { return true }

func init() {
	cloudprovider.RegisterCloudProvider(ProviderName, func(io.Reader) (cloudprovider.Interface, error) {
		return nil, errors.New("the drover cloud provider runs as drover cloudprovider, with engine credentials")
	})
}

// LBName is a Service's LB service name: <namespace>-<name> as an engine
// name (api.EngineName).
func LBName(namespace, name string) string {
	return api.EngineName(namespace + "-" + name)
}

// Desired is the LB service a Service becomes.
type Desired struct {
	Name   string
	Labels map[string]string
	Scale  int
	Global bool
	Rules  []api.PortRule
}

// Translate is pure: a LoadBalancer Service and the nodes that may take its
// traffic make the LB's port rules. A port HAProxy cannot balance (UDP,
// SCTP) is refused naming it.
func Translate(svc *corev1.Service, nodes []*corev1.Node) (*Desired, error) {
	d := &Desired{Name: LBName(svc.Namespace, svc.Name), Scale: 1,
		Labels: map[string]string{LabelUID: string(svc.UID), LabelNamespace: svc.Namespace, LabelName: svc.Name}}
	if v := svc.Annotations[AnnotationScale]; v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100 {
			return nil, fmt.Errorf("metadata.annotations[%s]: %q is not a scale (0-100)", AnnotationScale, v)
		}
		d.Scale = n
	}
	if v := svc.Annotations[AnnotationGlobal]; v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("metadata.annotations[%s]: %q is not true or false", AnnotationGlobal, v)
		}
		d.Global = b
	}
	var addrs []string
	for _, n := range nodes {
		if ip := nodeIP(n); ip != "" {
			addrs = append(addrs, ip)
		}
	}
	sort.Strings(addrs)
	local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	for i, p := range svc.Spec.Ports {
		r := api.PortRule{SourcePort: int(p.Port), Protocol: "tcp"}
		switch p.Protocol {
		case "", corev1.ProtocolTCP:
		case corev1.ProtocolUDP:
			r.Protocol = "udp" // balanced by drover lb itself, beside HAProxy
		default:
			return nil, fmt.Errorf("spec.ports[%d].protocol: %s is not supported: drover's load balancers balance TCP (HAProxy) and UDP (drover lb)", i, p.Protocol)
		}
		switch {
		case local || p.NodePort == 0:
			// Straight to the ready endpoints (kubernetes-agent keeps them
			// on the Service's engine twin), as Local asks: no second hop.
			r.ServiceID = svc.Namespace + "/" + svc.Name
			switch {
			case p.TargetPort.StrVal != "":
				r.TargetPortName = p.Name
			case p.TargetPort.IntVal != 0:
				r.TargetPort = int(p.TargetPort.IntVal)
			default:
				r.TargetPort = int(p.Port)
			}
		default:
			if len(addrs) == 0 {
				return nil, fmt.Errorf("no node with an address to send spec.ports[%d] to (NodePort %d)", i, p.NodePort)
			}
			r.Addresses, r.TargetPort = addrs, int(p.NodePort)
		}
		d.Rules = append(d.Rules, r)
	}
	if len(d.Rules) == 0 {
		return nil, errors.New("spec.ports: none")
	}
	return d, nil
}

func nodeIP(n *corev1.Node) string {
	for _, t := range []corev1.NodeAddressType{corev1.NodeInternalIP, corev1.NodeExternalIP} {
		for _, a := range n.Status.Addresses {
			if a.Type == t && a.Address != "" {
				return a.Address
			}
		}
	}
	return ""
}

// Status is a LoadBalancer status from public endpoints: one entry per
// address, with the ports it listens on.
func Status(eps []api.PublicEndpoint) *corev1.LoadBalancerStatus {
	ports := map[string]map[int32]bool{}
	for _, ep := range eps {
		if ep.IP == "" {
			continue
		}
		if ports[ep.IP] == nil {
			ports[ep.IP] = map[int32]bool{}
		}
		ports[ep.IP][int32(ep.Port)] = true
	}
	st := &corev1.LoadBalancerStatus{}
	for ip, ps := range ports {
		ing := corev1.LoadBalancerIngress{IP: ip, IPMode: ptr(corev1.LoadBalancerIPModeProxy)}
		for p := range ps {
			ing.Ports = append(ing.Ports, corev1.PortStatus{Port: p, Protocol: corev1.ProtocolTCP})
		}
		sort.Slice(ing.Ports, func(i, j int) bool { return ing.Ports[i].Port < ing.Ports[j].Port })
		st.Ingress = append(st.Ingress, ing)
	}
	sort.Slice(st.Ingress, func(i, j int) bool { return st.Ingress[i].IP < st.Ingress[j].IP })
	return st
}

func ptr[T any](v T) *T { return &v }

// lbOf finds a Service's LB service (of this Service's UID).
func (c *Cloud) lbOf(svc *corev1.Service) *api.Service {
	for _, s := range c.lbs.ByIndex("name", LBName(svc.Namespace, svc.Name)) {
		if s.Labels[LabelNamespace] == svc.Namespace && s.Labels[LabelName] == svc.Name && s.DeletionTimestamp == nil {
			return s
		}
	}
	return nil
}

func (c *Cloud) GetLoadBalancerName(_ context.Context, _ string, svc *corev1.Service) string {
	return LBName(svc.Namespace, svc.Name)
}

func (c *Cloud) GetLoadBalancer(_ context.Context, _ string, svc *corev1.Service) (*corev1.LoadBalancerStatus, bool, error) {
	if !c.lbs.HasSynced() {
		return nil, false, errors.New("the engine's LB services are not synced yet")
	}
	lb := c.lbOf(svc)
	if lb == nil {
		return nil, false, nil
	}
	return Status(lb.Status.PublicEndpoints), true, nil
}

func (c *Cloud) EnsureLoadBalancer(ctx context.Context, cluster string, svc *corev1.Service, nodes []*corev1.Node) (*corev1.LoadBalancerStatus, error) {
	unlock := c.lock(svc)
	id, err := c.ensure(ctx, svc, nodes, true)
	unlock()
	if err != nil {
		return nil, err
	}
	// Wait (bounded) for the LB's containers, so the status is not empty;
	// the status syncer follows later changes.
	deadline := time.Now().Add(c.StatusWait)
	for {
		if lb, ok := c.lbs.Get(id); ok && len(lb.Status.PublicEndpoints) > 0 {
			return Status(lb.Status.PublicEndpoints), nil
		}
		if time.Now().After(deadline) {
			return &corev1.LoadBalancerStatus{}, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// UpdateLoadBalancer follows the nodes; it never creates an LB (a node sync
// racing a deletion must not bring one back).
func (c *Cloud) UpdateLoadBalancer(ctx context.Context, cluster string, svc *corev1.Service, nodes []*corev1.Node) error {
	defer c.lock(svc)()
	_, err := c.ensure(ctx, svc, nodes, false)
	return err
}

// ensure updates the LB service in place (its id stays, so its containers
// and address stay), or creates it when create says so.
func (c *Cloud) ensure(ctx context.Context, svc *corev1.Service, nodes []*corev1.Node, create bool) (string, error) {
	if !c.lbs.HasSynced() {
		return "", errors.New("the engine's LB services are not synced yet")
	}
	d, err := Translate(svc, nodes)
	if err != nil {
		return "", err
	}
	scale := d.Scale
	spec := map[string]any{"kind": api.ServiceLoadBalancer, "launchConfig": api.LaunchConfig{Image: LBImage},
		"scale": scale, "global": d.Global, "lbConfig": api.LBConfig{PortRules: d.Rules}}
	if cur := c.lbOf(svc); cur != nil {
		if cur.Labels[LabelUID] == d.Labels[LabelUID] && same(cur, d) {
			return cur.ID, nil
		}
		if _, err := c.eng.Services().Patch(ctx, cur.ID, map[string]any{"labels": d.Labels, "spec": spec}); err != nil {
			return "", fmt.Errorf("LB service %s: %w", d.Name, err)
		}
		return cur.ID, nil
	}
	if !create {
		return "", nil
	}
	created, err := c.eng.Services().Create(ctx, &api.Service{Meta: api.Meta{Name: d.Name, Labels: d.Labels},
		Spec: api.ServiceSpec{StackID: c.stackID, Kind: api.ServiceLoadBalancer, LaunchConfig: &api.LaunchConfig{Image: LBImage}, Scale: &scale, Global: d.Global,
			LBConfig: &api.LBConfig{PortRules: d.Rules}}})
	if err != nil {
		return "", fmt.Errorf("LB service %s: %w", d.Name, err)
	}
	// Seen by this cache before the caller looks (a second Ensure must
	// not create a second LB).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, ok := c.lbs.Get(created.ID); ok {
			break
		}
	}
	return created.ID, nil
}

func same(cur *api.Service, d *Desired) bool {
	if cur.Spec.Global != d.Global || cur.Spec.Scale == nil || *cur.Spec.Scale != d.Scale || cur.Spec.LBConfig == nil {
		return false
	}
	a, b := cur.Spec.LBConfig.PortRules, d.Rules
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.SourcePort != y.SourcePort || x.Protocol != y.Protocol || x.ServiceID != y.ServiceID || x.TargetPort != y.TargetPort ||
			x.TargetPortName != y.TargetPortName || strings.Join(x.Addresses, ",") != strings.Join(y.Addresses, ",") {
			return false
		}
	}
	return true
}

func (c *Cloud) EnsureLoadBalancerDeleted(ctx context.Context, _ string, svc *corev1.Service) error {
	defer c.lock(svc)()
	if !c.lbs.HasSynced() {
		return errors.New("the engine's LB services are not synced yet")
	}
	for _, s := range c.lbs.ByIndex("name", LBName(svc.Namespace, svc.Name)) {
		if s.Labels[LabelNamespace] != svc.Namespace || s.Labels[LabelName] != svc.Name {
			continue
		}
		if _, err := c.eng.Services().Delete(ctx, s.ID); err != nil && !api.IsNotFound(err) {
			return fmt.Errorf("LB service %s: %w", s.Name, err)
		}
	}
	return nil
}

// hostFor finds a node's host: by providerID, else by name, else by address.
func (c *Cloud) hostFor(n *corev1.Node) (*api.Host, error) {
	if !c.hosts.HasSynced() {
		// Never "gone" because the cache is empty: that deletes nodes.
		return nil, errors.New("the engine's hosts are not synced yet")
	}
	if id, ok := strings.CutPrefix(n.Spec.ProviderID, ProviderName+"://"); ok && id != "" {
		h, _ := c.hosts.Get(id)
		return h, nil
	}
	hosts := c.hosts.List()
	for _, h := range hosts {
		if h.Name == n.Name {
			return h, nil
		}
	}
	if ip := nodeIP(n); ip != "" {
		for _, h := range hosts {
			if h.Status.AgentIP == ip {
				return h, nil
			}
		}
	}
	return nil, nil
}

func (c *Cloud) InstanceExists(_ context.Context, n *corev1.Node) (bool, error) {
	h, err := c.hostFor(n)
	return h != nil, err
}

func (c *Cloud) InstanceShutdown(_ context.Context, n *corev1.Node) (bool, error) {
	h, err := c.hostFor(n)
	if err != nil || h == nil {
		return false, err
	}
	return h.Status.State == api.HostInactive, nil
}

func (c *Cloud) InstanceMetadata(_ context.Context, n *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	h, err := c.hostFor(n)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, cloudprovider.InstanceNotFound
	}
	return Metadata(h), nil
}

// Metadata is what a host tells about its node.
func Metadata(h *api.Host) *cloudprovider.InstanceMetadata {
	md := &cloudprovider.InstanceMetadata{ProviderID: ProviderName + "://" + h.ID, InstanceType: "drover-host",
		Zone: h.Labels[corev1.LabelTopologyZone], Region: h.Labels[corev1.LabelTopologyRegion]}
	if h.Status.AgentIP != "" {
		md.NodeAddresses = append(md.NodeAddresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: h.Status.AgentIP})
	}
	md.NodeAddresses = append(md.NodeAddresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: h.Name})
	return md
}
