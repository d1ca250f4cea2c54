package cloudprovider

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	nodecontroller "k8s.io/cloud-provider/controllers/node"
	nodelifecycle "k8s.io/cloud-provider/controllers/nodelifecycle"
	servicecontroller "k8s.io/cloud-provider/controllers/service"
	"k8s.io/component-base/featuregate"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/controllers/harness"
	"github.com/drover/drover/internal/lifecycle"
)

// Options configure drover cloudprovider.
type Options struct {
	Kube        *rest.Config
	Engine      *client.Client
	Logger      *slog.Logger
	Listen      string // /healthz, /readyz, /metrics; "" serves nothing
	ClusterName string // "drover"
	Identity    string // leader election (default host name and pid)
	// LeaseDuration: how long a silent leader keeps the lease (15s).
	LeaseDuration time.Duration
	// NodeMonitorPeriod: how often node lifecycle looks for nodes whose
	// host is gone (5s).
	NodeMonitorPeriod time.Duration
	Registry          *prometheus.Registry
}

// Run runs the cloud controllers (service, node, node lifecycle) and the
// status syncer while this replica holds the lease, until ctx ends.
func Run(ctx context.Context, o Options) error {
	if o.Kube == nil || o.Engine == nil {
		return errors.New("cloudprovider: a Kubernetes config and engine credentials are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ClusterName == "" {
		o.ClusterName = "drover"
	}
	if o.NodeMonitorPeriod == 0 {
		o.NodeMonitorPeriod = 5 * time.Second
	}
	if o.Identity == "" {
		h, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
		o.Registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_cloudprovider_status_writes_total", Help: "Service status writes by the status syncer."}, []string{"result"})
	leader := prometheus.NewGauge(prometheus.GaugeOpts{Name: "drover_cloudprovider_leader", Help: "1 while this replica leads."})
	o.Registry.MustRegister(writes, leader)
	kcfg := rest.CopyConfig(o.Kube)
	kcfg.UserAgent = "drover-cloudprovider"
	kc, err := kubernetes.NewForConfig(kcfg)
	if err != nil {
		return fmt.Errorf("cloudprovider: kubernetes client: %w", err)
	}
	var mu sync.Mutex
	var cur *Cloud
	if o.Listen != "" {
		ops := &lifecycle.Ops{Listen: o.Listen, Gatherer: o.Registry, Ready: func() error {
			mu.Lock()
			defer mu.Unlock()
			if cur != nil && (!cur.hosts.HasSynced() || !cur.lbs.HasSynced()) {
				return errors.New("leading, engine caches not synced yet")
			}
			return nil
		}}
		if err := ops.Start(); err != nil {
			return fmt.Errorf("cloudprovider: %w", err)
		}
		defer ops.Stop()
	}
	el := &harness.Election{Engine: o.Engine, Name: "cloudprovider", Identity: o.Identity, Duration: o.LeaseDuration, Log: o.Logger}
	el.Run(ctx, func(ctx context.Context) {
		leader.Set(1)
		defer leader.Set(0)
		c := &Cloud{eng: o.Engine, StatusWait: 10 * time.Second}
		mu.Lock()
		cur = nil
		mu.Unlock()
		if err := lead(ctx, o, kc, c, func() { mu.Lock(); cur = c; mu.Unlock() }, writes); err != nil && ctx.Err() == nil {
			o.Logger.Error("cloudprovider stopped leading", "err", err)
		}
	})
	return nil
}

func lead(ctx context.Context, o Options, kc kubernetes.Interface, c *Cloud, ready func(), writes *prometheus.CounterVec) error {
	log := o.Logger
	st, err := harness.EnsureStack(ctx, o.Engine, Stack, "load balancers of Kubernetes LoadBalancer Services (drover cloudprovider)", log)
	if err != nil {
		return err
	}
	c.stackID = st.ID
	factory := informers.NewSharedInformerFactory(kc, 0)
	svcInf, nodeInf := factory.Core().V1().Services(), factory.Core().V1().Nodes()
	svcLister := svcInf.Lister()
	syncer := &statusSyncer{kube: kc, svcs: svcLister, log: log, writes: writes, dirty: map[string]bool{}, wake: make(chan struct{}, 1)}
	enqueue := func(s *api.Service) {
		if ns, name := s.Labels[LabelNamespace], s.Labels[LabelName]; ns != "" {
			syncer.kick(ns, name)
		}
	}
	c.hosts = client.NewCache(o.Engine.Hosts(), client.ListOptions{}, client.Handlers[api.Host]{}, log)
	c.lbs = client.NewCache(o.Engine.Services(), client.ListOptions{StackID: st.ID}, client.Handlers[api.Service]{
		OnAdd: enqueue, OnUpdate: func(_, n *api.Service) { enqueue(n) },
	}, log)
	c.lbs.AddIndex("name", func(s *api.Service) []string { return []string{s.Name} })
	syncer.cloud = c
	ready()

	sc, err := servicecontroller.New(c, kc, svcInf, nodeInf, o.ClusterName, featuregate.NewFeatureGate())
	if err != nil {
		return fmt.Errorf("cloudprovider: service controller: %w", err)
	}
	nc, err := nodecontroller.NewCloudNodeController(nodeInf, kc, c, 5*time.Minute, 4, 4)
	if err != nil {
		return fmt.Errorf("cloudprovider: node controller: %w", err)
	}
	lc, err := nodelifecycle.NewCloudNodeLifecycleController(nodeInf, kc, c, o.NodeMonitorPeriod)
	if err != nil {
		return fmt.Errorf("cloudprovider: node lifecycle controller: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, r := range []interface{ Run(context.Context) }{c.hosts, c.lbs} {
		wg.Add(1)
		go func() { defer wg.Done(); r.Run(ctx) }()
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !c.hosts.WaitForSync(ctx) || !c.lbs.WaitForSync(ctx) {
		return ctx.Err()
	}
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cloudprovider: %v informer never synced: %w", typ, ctx.Err())
		}
	}
	m := controllersmetrics.NewControllerManagerMetrics("drover-cloudprovider")
	log.Info("cloudprovider: leading; running the service, node and node lifecycle controllers")
	wg.Add(4)
	go func() { defer wg.Done(); sc.Run(ctx, 4, m) }()
	go func() { defer wg.Done(); nc.RunWithContext(ctx, m) }()
	go func() { defer wg.Done(); lc.Run(ctx, m) }()
	go func() { defer wg.Done(); syncer.run(ctx) }()
	<-ctx.Done()
	return nil
}

// statusSyncer writes a Service's status.loadBalancer when its LB's public
// endpoints change (the service controller writes it only when it ensures
// the LB: containers placed or moved later would not show). It writes the
// same value EnsureLoadBalancer returns, so the two agree.
type statusSyncer struct {
	kube   kubernetes.Interface
	svcs   corelisters.ServiceLister
	cloud  *Cloud
	log    *slog.Logger
	writes *prometheus.CounterVec
	mu     sync.Mutex
	dirty  map[string]bool
	wake   chan struct{}
}

func (s *statusSyncer) kick(ns, name string) {
	s.mu.Lock()
	s.dirty[ns+"/"+name] = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *statusSyncer) run(ctx context.Context) {
	t := time.NewTicker(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-t.C:
			for _, lb := range s.cloud.lbs.List() {
				if ns := lb.Labels[LabelNamespace]; ns != "" {
					s.mu.Lock()
					s.dirty[ns+"/"+lb.Labels[LabelName]] = true
					s.mu.Unlock()
				}
			}
		}
		s.mu.Lock()
		keys := s.dirty
		s.dirty = map[string]bool{}
		s.mu.Unlock()
		for key := range keys {
			if err := s.sync(ctx, key); err != nil && ctx.Err() == nil {
				s.log.Warn("cloudprovider: service status not written (next change or 30s)", "service", key, "err", err)
			}
		}
	}
}

func (s *statusSyncer) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := s.svcs.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	} else if err != nil {
		return err
	}
	if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Spec.LoadBalancerClass != nil || svc.DeletionTimestamp != nil {
		return nil // not ours (the service controller clears what it set)
	}
	lb := s.cloud.lbOf(svc)
	if lb == nil || lb.Labels[LabelUID] != string(svc.UID) || len(lb.Status.PublicEndpoints) == 0 {
		return nil
	}
	want := Status(lb.Status.PublicEndpoints)
	if reflect.DeepEqual(normalize(&svc.Status.LoadBalancer), normalize(want)) {
		return nil
	}
	cp := svc.DeepCopy()
	cp.Status.LoadBalancer = *want
	if _, err := s.kube.CoreV1().Services(ns).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil {
		s.writes.WithLabelValues("error").Inc()
		return err
	}
	s.writes.WithLabelValues("written").Inc()
	return nil
}

func normalize(st *corev1.LoadBalancerStatus) []corev1.LoadBalancerIngress {
	if st == nil || len(st.Ingress) == 0 {
		return nil
	}
	return st.Ingress
}
