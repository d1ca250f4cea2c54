package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover/drover/client"
)

// Options run a node.
type Options struct {
	Config
	Kube       string // the kube multi-call binary
	Containerd string
	Ctr        string
	WorkDir    string // where the generated files go (default /run/drover-node)
	// ImagesDir holds image archives (docker save) imported into containerd
	// before the kubelet starts: the pause image, bundled in the node image.
	ImagesDir string
	// Engine, when set, is asked for the images it holds; those containerd
	// lacks are imported, so pods use images pushed with drover image push
	// on any host, with no registry.
	Engine        *client.Client
	ImageInterval time.Duration
	Listen        string // /healthz and /metrics
	Logger        *slog.Logger
	KubeletArgs   []string // more kubelet flags
}

// Run starts containerd, imports images, starts the kubelet, and keeps both
// until ctx ends or one of them exits (then it stops the other and returns
// the error: the agent restarts the container with back-off).
func Run(ctx context.Context, o Options) error {
	if o.Host == "" || o.HostIP == "" || o.APIServer == "" {
		return errors.New("node: the host's name and address (--host, --host-ip, or DROVER_HOST_NAME and DROVER_HOST_IP from the agent) and --apiserver are needed")
	}
	if ip := net.ParseIP(o.HostIP); ip == nil || ip.IsLoopback() {
		return fmt.Errorf("node: %q is not a usable node address: the kubelet refuses loopback; register the host with its real address (drover agent --ip)", o.HostIP)
	}
	o.defaults()
	if o.WorkDir == "" {
		o.WorkDir = "/run/drover-node"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.ImageInterval == 0 {
		o.ImageInterval = 20 * time.Second
	}
	log := o.Logger
	n := &node{o: o, log: log, reg: prometheus.NewRegistry()}
	n.imported = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_node_images_imported_total", Help: "Images imported into containerd, by source and result."}, []string{"source", "result"})
	n.up = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "drover_node_process_up", Help: "Whether each process of the node runs."}, []string{"process"})
	n.reg.MustRegister(n.imported, n.up)

	if err := os.MkdirAll(o.WorkDir, 0o700); err != nil {
		return err
	}
	if err := PrepareCgroupRoot(o.CgroupRoot); err != nil {
		return fmt.Errorf("node: cgroup root %s: %w", o.CgroupRoot, err)
	}
	kc, err := Kubeconfig(o.CertsDir, "k8s-kubelet-client-"+o.Host, "system:node:"+o.Host, o.APIServer)
	if err != nil {
		return fmt.Errorf("node: the kubelet's kubeconfig: %w", err)
	}
	files := map[string][]byte{
		"containerd.toml":    ContainerdConfig(o.Config),
		"kubelet.yaml":       KubeletConfig(o.Config),
		"kubelet.kubeconfig": kc,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(o.WorkDir, name), b, 0o600); err != nil {
			return err
		}
	}
	for _, d := range []string{o.StateDir, o.KubeletDir, o.CNIConfDir, "/var/log/pods"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Listen != "" {
		srv := n.serve()
		defer srv.Close()
	}

	log.Info("starting containerd", "config", filepath.Join(o.WorkDir, "containerd.toml"))
	ctrd, err := n.start("containerd", o.Containerd, "--config", filepath.Join(o.WorkDir, "containerd.toml"))
	if err != nil {
		return err
	}
	defer ctrd.stop(15 * time.Second)
	if err := waitSocket(ctx, ContainerdSocket, ctrd, 60*time.Second); err != nil {
		return fmt.Errorf("node: containerd did not come up: %w", err)
	}
	if err := n.importBundled(ctx); err != nil {
		return err
	}
	if o.Engine != nil {
		n.importFromEngine(ctx)
		go func() {
			t := time.NewTicker(o.ImageInterval)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					n.importFromEngine(ctx)
				}
			}
		}()
	}
	args := append([]string{"kubelet",
		"--config=" + filepath.Join(o.WorkDir, "kubelet.yaml"),
		"--kubeconfig=" + filepath.Join(o.WorkDir, "kubelet.kubeconfig"),
		"--node-ip=" + o.HostIP,
		"--hostname-override=" + o.Host,
		// drover cloudprovider (the kubernetes stack) initializes the
		// node from its host: providerID, addresses, zone and region.
		"--cloud-provider=external",
	}, o.KubeletArgs...)
	log.Info("starting the kubelet", "node", o.Host, "nodeIP", o.HostIP, "apiserver", o.APIServer, "cgroupRoot", o.CgroupRoot)
	kl, err := n.start("kubelet", o.Kube, args...)
	if err != nil {
		return err
	}
	defer kl.stop(20 * time.Second)
	select {
	case <-ctx.Done():
		log.Info("stopping the node")
		return nil
	case <-kl.done:
		return fmt.Errorf("node: the kubelet exited: %v", kl.err)
	case <-ctrd.done:
		return fmt.Errorf("node: containerd exited: %v", ctrd.err)
	}
}

type node struct {
	o        Options
	log      *slog.Logger
	reg      *prometheus.Registry
	imported *prometheus.CounterVec
	up       *prometheus.GaugeVec

	mu    sync.Mutex
	procs []*proc
	have  map[string]string // engine image name -> sha256 imported
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (n *node) start(name, path string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node: starting %s (%s): %w", name, path, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	n.up.WithLabelValues(name).Set(1)
	go func() {
		p.err = cmd.Wait()
		n.up.WithLabelValues(name).Set(0)
		close(p.done)
	}()
	n.mu.Lock()
	n.procs = append(n.procs, p)
	n.mu.Unlock()
	return p, nil
}

// stop asks a process to end, and kills it after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func waitSocket(ctx context.Context, path string, p *proc, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no socket at %s after %s", path, limit)
		}
	}
}

// ctrImport feeds one image archive to containerd's k8s.io namespace.
func (n *node) ctrImport(ctx context.Context, archive io.Reader) error {
	cmd := exec.CommandContext(ctx, n.o.Ctr, "--address", ContainerdSocket, "--namespace", "k8s.io", "images", "import", "--no-unpack=false", "-")
	cmd.Stdin = archive
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("ctr images import: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *node) importBundled(ctx context.Context) error {
	if n.o.ImagesDir == "" {
		return nil
	}
	tars, _ := filepath.Glob(filepath.Join(n.o.ImagesDir, "*.tar"))
	for _, t := range tars {
		f, err := os.Open(t)
		if err != nil {
			return err
		}
		start := time.Now()
		err = n.ctrImport(ctx, f)
		f.Close()
		n.count("bundled", err)
		if err != nil {
			return fmt.Errorf("node: importing %s: %w", t, err)
		}
		n.log.Info("image imported into containerd", "archive", t, "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}

// importFromEngine imports the engine's images that changed since last time.
func (n *node) importFromEngine(ctx context.Context) {
	list, err := n.o.Engine.Images(ctx)
	if err != nil {
		n.log.Warn("could not list the engine's images", "err", err)
		return
	}
	if n.have == nil {
		n.have = map[string]string{}
	}
	for _, im := range list {
		if n.have[im.Name] == im.SHA256 || skipImage(im.Name) {
			continue
		}
		start := time.Now()
		rc, err := n.o.Engine.ImageArchive(ctx, im.Name)
		if err == nil {
			err = n.ctrImport(ctx, rc)
			rc.Close()
		}
		n.count("engine", err)
		if err != nil {
			n.log.Warn("image not imported from the engine", "image", im.Name, "err", err)
			continue
		}
		n.have[im.Name] = im.SHA256
		n.log.Info("image imported from the engine", "image", im.Name, "took", time.Since(start).Round(time.Millisecond))
	}
}

// skipImage: the stacks' own images run in Docker, not as pods.
func skipImage(name string) bool {
	for _, p := range []string{"drover/node:", "drover/etcd:", "drover/drover:"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

func (n *node) count(source string, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	n.imported.WithLabelValues(source, res).Inc()
}

func (n *node) serve() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		procs := append([]*proc(nil), n.procs...)
		n.mu.Unlock()
		for _, p := range procs {
			select {
			case <-p.done:
				http.Error(w, p.name+" exited", http.StatusServiceUnavailable)
				return
			default:
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.o.HealthzPort), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, "kubelet: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			http.Error(w, "kubelet: "+resp.Status, http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok\n")
	})
	srv := &http.Server{Addr: n.o.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.log.Warn("health listener failed", "listen", n.o.Listen, "err", err)
		}
	}()
	return srv
}

// PrepareCgroupRoot makes the kubelet's cgroup root in every cgroup v1
// hierarchy (the kubelet refuses a root that does not exist), with cpuset's
// cpus and mems copied from the parent, as a new cpuset starts empty. On
// cgroup v2 it makes the directory with the parent's controllers enabled.
func PrepareCgroupRoot(root string) error {
	const base = "/sys/fs/cgroup"
	root = strings.Trim(root, "/")
	if root == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err == nil {
		return prepareV2(base, root)
	}
	entries, err := os.ReadDir(base)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type()&os.ModeSymlink != 0 || !e.IsDir() || e.Name() == "unified" {
			continue
		}
		hier := filepath.Join(base, e.Name())
		parent := hier
		for _, part := range strings.Split(root, "/") {
			dir := filepath.Join(parent, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if cur, err := os.ReadFile(filepath.Join(dir, f)); err == nil && strings.TrimSpace(string(cur)) == "" {
					if v, err := os.ReadFile(filepath.Join(parent, f)); err == nil {
						os.WriteFile(filepath.Join(dir, f), v, 0o644)
					}
				}
			}
			parent = dir
		}
	}
	return nil
}

// RemoveCgroupRoot removes a kubelet's cgroup root in every hierarchy,
// deepest first (a cgroup goes only when it is empty); what still holds
// processes stays.
func RemoveCgroupRoot(root string) {
	root = "/" + strings.Trim(root, "/")
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + root)
	if d := "/sys/fs/cgroup" + root; len(dirs) == 0 {
		dirs = []string{d} // cgroup v2
	}
	var all []string
	for _, d := range dirs {
		filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
	}
	sort.Slice(all, func(i, j int) bool { return len(all[i]) > len(all[j]) })
	for _, d := range all {
		os.Remove(d)
	}
	// The parent too, if no other root is left in it.
	for _, d := range dirs {
		os.Remove(filepath.Dir(d))
	}
}

func prepareV2(base, root string) error {
	parent := base
	for _, part := range strings.Split(root, "/") {
		ctrls, _ := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
		var enable []string
		for _, c := range strings.Fields(string(ctrls)) {
			enable = append(enable, "+"+c)
		}
		if len(enable) > 0 {
			os.WriteFile(filepath.Join(parent, "cgroup.subtree_control"), []byte(strings.Join(enable, " ")), 0o644)
		}
		dir := filepath.Join(parent, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s: %w", dir, err)
		}
		parent = dir
	}
	return nil
}
