package kubernetesagent_test

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/testenv"
	kubernetesagent "github.com/drover/drover/kubernetes-agent"
)

// BenchmarkKubeSync creates 2,000 Services and 10,000 Pods (pod IPs written
// through the status subresource, as a kubelet would) against a real
// kube-apiserver, and prints how long after the last write the engine has
// them all, and the latency from single Kubernetes writes to their engine
// events while that load goes on. Run: make bench-kube.
func BenchmarkKubeSync(b *testing.B) {
	const namespaces, nSvc, nPod = 10, 2000, 10000
	e := setup(b, testenv.KubeOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	k := e.kube.Client
	for i := 0; i < namespaces; i++ {
		if _, err := k.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("ns%d", i)}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := k.CoreV1().Pods("ns0").Create(ctx, pod("ns0", "probe", "", nil), metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}

	// Watch the engine the way any component would.
	var svcs, podsWithIP atomic.Int64
	var mu sync.Mutex
	probeSeen := map[int]time.Time{}
	seenIP := map[string]bool{}
	svcCache := client.NewCache(e.eng.Services(), client.ListOptions{LabelSelector: kubernetesagent.LabelKind + "=Service"}, client.Handlers[api.Service]{
		OnAdd: func(*api.Service) { svcs.Add(1) },
	}, testenv.Logger())
	onCtr := func(c *api.Container) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if v := c.Labels["probe"]; v != "" {
			n, _ := strconv.Atoi(v)
			if _, ok := probeSeen[n]; !ok {
				probeSeen[n] = now
			}
		}
		if c.Status.PrimaryIP != "" && !seenIP[c.ID] {
			seenIP[c.ID] = true
			podsWithIP.Add(1)
		}
	}
	ctrCache := client.NewCache(e.eng.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: onCtr, OnUpdate: func(_, c *api.Container) { onCtr(c) },
	}, testenv.Logger())
	go svcCache.Run(ctx)
	go ctrCache.Run(ctx)
	svcCache.WaitForSync(ctx)
	ctrCache.WaitForSync(ctx)

	// Probe: one labelled write every 50 ms for as long as the load lasts.
	probeAck := map[int]time.Time{}
	stopProbe := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for n := 1; ; n++ {
			select {
			case <-stopProbe:
				return
			case <-time.After(50 * time.Millisecond):
			}
			patch := fmt.Sprintf(`{"metadata":{"labels":{"probe":"%d"}}}`, n)
			if _, err := k.CoreV1().Pods("ns0").Patch(ctx, "probe", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err == nil {
				mu.Lock()
				probeAck[n] = time.Now()
				mu.Unlock()
			}
		}
	}()

	start := time.Now()
	jobs := make(chan int, nSvc+nPod)
	for i := 0; i < nSvc+nPod; i++ {
		jobs <- i
	}
	close(jobs)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ns := fmt.Sprintf("ns%d", i%namespaces)
				if i < nSvc {
					_, err := k.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc%d", i)}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
					if err != nil {
						failed.Add(1)
					}
					continue
				}
				p, err := k.CoreV1().Pods(ns).Create(ctx, pod(ns, fmt.Sprintf("pod%d", i), "", map[string]string{"app": "bench"}), metav1.CreateOptions{})
				if err != nil {
					failed.Add(1)
					continue
				}
				j := i - nSvc
				ip := fmt.Sprintf("10.%d.%d.%d", 42+j/65536, (j/256)%256, j%256)
				p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
				if _, err := k.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	lastWrite := time.Now()
	if failed.Load() > 0 {
		b.Fatalf("%d Kubernetes writes failed", failed.Load())
	}
	deadline := lastWrite.Add(5 * time.Minute)
	for svcs.Load() < nSvc || podsWithIP.Load() < nPod {
		if time.Now().After(deadline) {
			b.Fatalf("after 5 minutes the engine has %d/%d services and %d/%d pods with IPs", svcs.Load(), nSvc, podsWithIP.Load(), nPod)
		}
		time.Sleep(20 * time.Millisecond)
	}
	synced := time.Since(lastWrite)
	close(stopProbe)
	<-probeDone
	time.Sleep(time.Second) // let the last probes land
	mu.Lock()
	var lat []time.Duration
	for n, ack := range probeAck {
		if seen, ok := probeSeen[n]; ok {
			d := seen.Sub(ack)
			if d < 0 {
				d = 0
			}
			lat = append(lat, d)
		}
	}
	mu.Unlock()
	if len(lat) < 20 {
		b.Fatalf("only %d probe writes reached the engine", len(lat))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	writes := nSvc + 2*nPod
	fmt.Printf("kubesync: %d Kubernetes writes (%d Services, %d Pods + their status) in %.1f s (%.0f writes/s)\n", writes, nSvc, nPod, lastWrite.Sub(start).Seconds(), float64(writes)/lastWrite.Sub(start).Seconds())
	fmt.Printf("kubesync: engine has every Service and Pod %.3f s after the last Kubernetes write (goal < 60 s)\n", synced.Seconds())
	fmt.Printf("kubesync: single change, Kubernetes ack -> engine event, under that load: p50 %.1f ms, p99 %.1f ms over %d probes (goal p99 < 200 ms)\n",
		ms(lat[len(lat)/2]), ms(lat[len(lat)*99/100]), len(lat))
	b.ReportMetric(synced.Seconds(), "s-to-sync")
	b.ReportMetric(ms(lat[len(lat)*99/100]), "p99-ms")
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
