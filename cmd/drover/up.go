package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	dockerclient "github.com/docker/docker/client"
	mdns "github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/internal/privileged"
	"github.com/drover/drover/pki"
	"github.com/drover/drover/stacks"
	"github.com/drover/drover/stacks/builtin"
)

// upDir is where drover up keeps everything on a host. The built-in stacks
// name paths under it, and the agent hands containers files by host path,
// so it is fixed.
const upDir = "/var/lib/drover"

const (
	serverContainer = "drover-server"
	agentContainer  = "drover-agent"
)

type upOptions struct {
	name, ip, roles string
	port            int
	join, token     string
	imagesDir       string
	timeout         time.Duration
	serviceCIDR     string
	out             io.Writer
}

// runUp: drover up [--join URL --token T].
func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := newCLIFlags("drover up", stderr)
	var o upOptions
	host, _ := os.Hostname()
	fs.StringVar(&o.name, "name", host, "this host's name")
	fs.StringVar(&o.ip, "ip", "", "this host's address as other hosts reach it (default: the address of the default route's interface)")
	fs.StringVar(&o.roles, "role", "", "this host's roles, comma-separated: etcd, controlplane, worker (default: all three; worker with --join)")
	fs.IntVar(&o.port, "port", 8080, "the engine's port")
	fs.StringVar(&o.join, "join", "", "join the engine at this URL instead of starting one (with --token)")
	fs.StringVar(&o.token, "token", "", "registration token for --join (drover up on the first host prints one)")
	fs.StringVar(&o.imagesDir, "images-dir", upDir+"/images", "image archives (docker save) to load when Docker lacks drover's images")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "how long to wait for the cluster to be ready")
	fs.StringVar(&o.serviceCIDR, "service-cidr", "10.43.0.0/16", "the Kubernetes service network")
	if err := parseCLI(fs, args); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("drover up takes no arguments (got %q)", fs.Args())}
	}
	if (o.join == "") != (o.token == "") {
		return usageError{"--join and --token go together"}
	}
	if o.roles == "" {
		o.roles = "etcd,controlplane,worker"
		if o.join != "" {
			o.roles = "worker"
		}
	}
	for _, r := range split(o.roles) {
		if r != "etcd" && r != "controlplane" && r != "worker" {
			return usageError{fmt.Sprintf("--role %q: roles are etcd, controlplane and worker", r)}
		}
	}
	if roles := roleLabels(o.roles); o.join == "" && (roles["etcd"] == "" || roles["controlplane"] == "") {
		return usageError{"--role: the first host holds etcd and controlplane (one etcd member, next to the apiserver); add workers with --join"}
	}
	if o.ip == "" {
		ip, err := defaultIP()
		if err != nil {
			return usageError{"--ip: " + err.Error()}
		}
		o.ip = ip
	}
	if ip := net.ParseIP(o.ip); ip == nil || ip.IsLoopback() {
		return usageError{fmt.Sprintf("--ip %q: give the host's real address (the kubelet refuses loopback)", o.ip)}
	}
	o.out = stdout
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	d, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer d.Close()
	if _, err := d.Ping(ctx); err != nil {
		return fmt.Errorf("drover up needs the Docker Engine on this host: %w", err)
	}
	u := &upper{o: o, d: d, start: time.Now()}
	if o.join != "" {
		return u.joinHost(ctx)
	}
	return u.firstHost(ctx)
}

type upper struct {
	o     upOptions
	d     *dockerclient.Client
	start time.Time
}

func (u *upper) step(format string, args ...any) {
	fmt.Fprintf(u.o.out, "[%5.1fs] %s\n", time.Since(u.start).Seconds(), fmt.Sprintf(format, args...))
}

func upImages() []string {
	return []string{"drover/drover:" + version, "drover/node:" + version, "drover/etcd:" + version, "drover/pause:" + version, "drover/lb-haproxy:" + version}
}

func (u *upper) firstHost(ctx context.Context) error {
	if err := u.localImages(ctx, upImages()); err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s:%d", u.o.ip, u.o.port)
	if err := u.ensureContainer(ctx, serverContainer, &container.Config{
		Image: "drover/drover:" + version,
		Cmd:   []string{"server", "--data-dir", upDir + "/server", "--listen", fmt.Sprintf("0.0.0.0:%d", u.o.port)},
	}, &container.HostConfig{NetworkMode: "host", Binds: []string{upDir + "/server:" + upDir + "/server"}}); err != nil {
		return err
	}
	if err := waitHTTP(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", u.o.port)); err != nil {
		return fmt.Errorf("the engine did not get ready (docker logs %s): %w", serverContainer, err)
	}
	u.step("engine ready at %s", url)
	var creds api.Credentials
	b, err := os.ReadFile(upDir + "/server/credentials.json")
	if err == nil {
		err = json.Unmarshal(b, &creds)
	}
	if err != nil {
		return fmt.Errorf("the engine's admin key: %w", err)
	}
	c := client.New(url, creds.AccessKey, creds.SecretKey)
	h, err := u.ensureAgent(ctx, c, url)
	if err != nil {
		return err
	}
	if err := u.pushImages(ctx, c); err != nil {
		return err
	}
	have, err := loadPKI(ctx, c)
	if err != nil {
		return err
	}
	if have.certs["ca"] == nil {
		_, svc, _ := net.ParseCIDR(u.o.serviceCIDR)
		if svc == nil {
			return usageError{fmt.Sprintf("--service-cidr %q is not a CIDR", u.o.serviceCIDR)}
		}
		first := append(net.IP(nil), svc.IP.To4()...)
		first[3]++
		if err := makePKI(ctx, have, pki.Options{ServiceIP: first, APIServerIPs: []net.IP{net.ParseIP(u.o.ip)}}, io.Discard); err != nil {
			return err
		}
		u.step("Kubernetes PKI made (engine certificates k8s-*)")
	}
	nw, _, err := c.Networks().List(ctx, client.ListOptions{Name: "managed"})
	if err != nil || len(nw) == 0 {
		return fmt.Errorf("the engine has no managed network: %v", err)
	}
	answers := map[string]string{
		"DROVER_VERSION": version,
		"APISERVER":      fmt.Sprintf("https://%s:6443", u.o.ip),
		"SERVICE_CIDR":   u.o.serviceCIDR,
		"CLUSTER_CIDR":   nw[0].Spec.CIDR,
	}
	for _, st := range builtin.Stacks {
		if err := u.applyStack(ctx, c, st, answers); err != nil {
			return err
		}
	}
	if err := u.watchContainers(ctx, c, h.ID, stacksRunning(ctx, c)); err != nil {
		return err
	}
	kc, err := u.writeKubeconfig(ctx, c, answers["APISERVER"])
	if err != nil {
		return err
	}
	if roleLabels(u.o.roles)["worker"] != "" {
		if err := u.waitNode(ctx, kc, u.o.name); err != nil {
			return err
		}
	}
	if err := waitDNS(ctx, "169.254.169.250:53", "kubernetes.default.svc.cluster.local."); err != nil {
		return err
	}
	u.step("DNS answers kubernetes.default.svc.cluster.local")
	tok, err := u.joinToken(ctx, c)
	if err != nil {
		return err
	}
	fmt.Fprintf(u.o.out, `
Kubernetes is up (%.1fs).
  export KUBECONFIG=%s
  kubectl get nodes                  # any kubectl; drover kubeconfig prints the file again
  drover ps --stack kubernetes       # the engine's credentials: %s (found without --credentials)
Add a host (on it, with drover and Docker):
  drover up --join %s --token %s
`, time.Since(u.start).Seconds(), kc, upDir+"/server/credentials.json", url, tok)
	return nil
}

func (u *upper) joinHost(ctx context.Context) error {
	req := api.RegisterRequest{Name: u.o.name, AgentIP: u.o.ip, Labels: roleLabels(u.o.roles)}
	c, h, err := agent.Preregister(ctx, upDir+"/agent", u.o.join, u.o.token, req)
	if err != nil {
		return fmt.Errorf("registering with %s: %w", u.o.join, err)
	}
	u.step("host %s registered with %s (%s)", h.Name, u.o.join, h.ID)
	img := "drover/drover:" + version
	if _, err := u.d.ImageInspect(ctx, img); err != nil {
		if err := u.loadFromDir(ctx, img); err != nil {
			u.step("loading %s from the engine", img)
			if err := loadFromEngine(ctx, u.d, c, img); err != nil {
				return fmt.Errorf("%s is not on this host and the engine could not give it: %w", img, err)
			}
		}
	}
	if _, err := u.ensureAgent(ctx, c, u.o.join); err != nil {
		return err
	}
	if k := agent.KeptClient(upDir+"/agent", u.o.join, u.o.name); k != nil {
		c = k
	}
	if err := u.watchContainers(ctx, c, h.ID, func(ctrs []api.Container) bool {
		for _, ct := range ctrs {
			if ct.Labels["io.drover.service.name"] == "kubelet" && ct.Status.State == api.ContainerRunning {
				return true
			}
		}
		return roleLabels(u.o.roles)["worker"] == ""
	}); err != nil {
		return err
	}
	fmt.Fprintf(u.o.out, "\nhost %s joined (%.1fs); its node shows up in kubectl get nodes once the kubelet has registered\n", u.o.name, time.Since(u.start).Seconds())
	return nil
}

func roleLabels(roles string) map[string]string {
	l := map[string]string{}
	for _, r := range split(roles) {
		l[r] = "true"
	}
	return l
}

// localImages makes sure Docker has the images, loading archives from
// --images-dir for those it lacks.
func (u *upper) localImages(ctx context.Context, images []string) error {
	for _, img := range images {
		if _, err := u.d.ImageInspect(ctx, img); err == nil {
			continue
		}
		if err := u.loadFromDir(ctx, img); err != nil {
			return fmt.Errorf("image %s is not in Docker and %v: build the images first (make images) or put their archives there", img, err)
		}
	}
	u.step("images present: %s", strings.Join(images, ", "))
	return nil
}

// loadFromDir loads an archive of --images-dir that holds img.
func (u *upper) loadFromDir(ctx context.Context, img string) error {
	tars, _ := filepath.Glob(filepath.Join(u.o.imagesDir, "*.tar"))
	for _, t := range tars {
		f, err := os.Open(t)
		if err != nil {
			continue
		}
		u.step("loading %s", t)
		resp, err := u.d.ImageLoad(ctx, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("loading %s: %w", t, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if _, err := u.d.ImageInspect(ctx, img); err == nil {
			return nil
		}
	}
	return fmt.Errorf("no archive in %s holds it", u.o.imagesDir)
}

func loadFromEngine(ctx context.Context, d *dockerclient.Client, c *client.Client, img string) error {
	rc, err := c.ImageArchive(ctx, img)
	if err != nil {
		return err
	}
	defer rc.Close()
	return agent.LoadImage(ctx, d, rc)
}

// ensureContainer runs a long-lived container of drover's own (the engine,
// the agent) unless it runs already; Docker restarts it with the host.
func (u *upper) ensureContainer(ctx context.Context, name string, cfg *container.Config, hc *container.HostConfig) error {
	list, err := u.d.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", "^/"+name+"$"))})
	if err != nil {
		return err
	}
	if len(list) > 0 {
		if list[0].Image != cfg.Image {
			return fmt.Errorf("container %s runs %s, not %s: remove it first (docker rm -f %s) to change drover's version", name, list[0].Image, cfg.Image, name)
		}
		if list[0].State != "running" {
			u.step("starting %s again", name)
			return u.d.ContainerStart(ctx, list[0].ID, container.StartOptions{})
		}
		return nil
	}
	hc.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyUnlessStopped}
	cfg.Labels = map[string]string{"io.drover.up": name}
	resp, err := u.d.ContainerCreate(ctx, cfg, hc, nil, nil, name)
	if err != nil {
		return fmt.Errorf("creating %s: %w", name, err)
	}
	u.step("starting %s", name)
	return u.d.ContainerStart(ctx, resp.ID, container.StartOptions{})
}

// ensureAgent runs this host's agent and waits until its host is in the
// engine. A first run registers with a one-use token; later runs find the
// agent running (or its key kept in upDir/agent).
func (u *upper) ensureAgent(ctx context.Context, c *client.Client, url string) (*api.Host, error) {
	args := []string{"agent", "--server", url, "--name", u.o.name, "--ip", u.o.ip, "--state-dir", upDir + "/agent",
		"--ipam-dir", upDir + "/ipam", "--labels", joinLabels(roleLabels(u.o.roles)), "--listen", "127.0.0.1:10270"}
	list, _ := u.d.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("name", "^/"+agentContainer+"$"))})
	if len(list) == 0 && u.o.join == "" {
		if _, err := os.Stat(upDir + "/agent/agent-key.json"); err != nil {
			tok, err := c.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: api.RegistrationTokenSpec{Description: "drover up: the first host's agent", MaxUses: 1, HostNamePattern: u.o.name}})
			if err != nil {
				return nil, err
			}
			args = append(args, "--token", tok.Status.Token)
		}
	}
	hc := &container.HostConfig{NetworkMode: "host", PidMode: "host", Binds: []string{"/var/run/docker.sock:/var/run/docker.sock", upDir + ":" + upDir}}
	privileged.Apply(hc)
	if err := u.ensureContainer(ctx, agentContainer, &container.Config{Image: "drover/drover:" + version, Cmd: args}, hc); err != nil {
		return nil, err
	}
	for {
		if u.o.join != "" {
			// The agent registers anew and replaces the key we hold.
			if k := agent.KeptClient(upDir+"/agent", url, u.o.name); k != nil {
				c = k
			}
		}
		hosts, _, err := c.Hosts().List(ctx, client.ListOptions{Name: u.o.name})
		if err == nil && len(hosts) == 1 && hosts[0].Status.State == "active" {
			u.step("host %s is in the engine (%s, roles %s)", u.o.name, hosts[0].ID, u.o.roles)
			return &hosts[0], nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("host %s did not come up in the engine (docker logs %s): %w", u.o.name, agentContainer, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func joinLabels(m map[string]string) string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// pushImages puts the stacks' images into the engine, where the agents of
// hosts that lack them load them from (no registry exists).
func (u *upper) pushImages(ctx context.Context, c *client.Client) error {
	have, err := c.Images(ctx)
	if err != nil {
		return err
	}
	in := map[string]bool{}
	for _, im := range have {
		in[im.Name] = true
	}
	for _, img := range upImages() {
		if in[img] {
			continue
		}
		start := time.Now()
		rc, err := u.d.ImageSave(ctx, []string{img})
		if err != nil {
			return err
		}
		info, err := c.PushImage(ctx, img, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("putting %s into the engine: %w", img, err)
		}
		u.step("image %s put into the engine (%d MiB, %.1fs)", img, info.Size>>20, time.Since(start).Seconds())
	}
	return nil
}

// applyStack creates a built-in stack, or updates it when its file or
// answers differ; the same drover up again changes nothing.
func (u *upper) applyStack(ctx context.Context, c *client.Client, st builtin.Stack, answers map[string]string) error {
	if _, err := stacks.Parse(ctx, st.Name, []stacks.File{{Name: st.Name + ".yml", Content: st.Compose}}, nil, answers); err != nil {
		return fmt.Errorf("built-in stack %s: %w", st.Name, err)
	}
	spec := api.StackSpec{Kind: api.StackCompose, Compose: string(st.Compose), Answers: answers}
	existing, _, err := c.Stacks().List(ctx, client.ListOptions{Name: st.Name})
	if err != nil {
		return err
	}
	if len(existing) == 0 {
		if _, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: st.Name, Labels: map[string]string{"io.drover.builtin": "true"}}, Spec: spec}); err != nil {
			return fmt.Errorf("creating stack %s: %w", st.Name, err)
		}
		u.step("stack %s created", st.Name)
		return nil
	}
	cur := existing[0]
	if api.SameJSON(cur.Spec, spec) {
		return nil
	}
	cur.Spec = spec
	if _, err := c.Stacks().Update(ctx, cur.ID, &cur); err != nil {
		return fmt.Errorf("updating stack %s: %w", st.Name, err)
	}
	u.step("stack %s updated", st.Name)
	return nil
}

// watchContainers prints each change of the built-in stacks' containers
// (on this host only, for a joining host) until done says so.
func (u *upper) watchContainers(ctx context.Context, c *client.Client, hostID string, done func([]api.Container) bool) error {
	last := map[string]string{}
	for {
		opts := client.ListOptions{}
		if u.o.join != "" {
			opts.HostID = hostID
		}
		listed, _, err := c.Containers().List(ctx, opts)
		var ctrs []api.Container
		for _, ct := range listed {
			if st := ct.Labels["io.drover.stack.name"]; ct.Spec.Kind != api.ContainerKindPod && (st == "infra" || st == "kubernetes") {
				ctrs = append(ctrs, ct)
			}
		}
		if err == nil {
			sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Name < ctrs[j].Name })
			for _, ct := range ctrs {
				state := orDash(ct.Status.State)
				if ct.Status.Message != "" {
					state += ": " + ct.Status.Message
				}
				// A crash loop's countdown is no news.
				if key := backoffRe.ReplaceAllString(state, ""); last[ct.ID] != key {
					u.step("  %s: %s", ct.Name, state)
					last[ct.ID] = key
				}
			}
			if done(ctrs) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the stacks' containers are not all running: %w (drover ps shows them)", ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// stacksRunning says whether every container of the built-in stacks runs
// and every service placed on one host (not global) has one.
func stacksRunning(ctx context.Context, c *client.Client) func([]api.Container) bool {
	return func(ctrs []api.Container) bool {
		running := map[string]bool{}
		for _, ct := range ctrs {
			if ct.Status.State != api.ContainerRunning {
				return false
			}
			running[ct.Spec.ServiceID] = true
		}
		for _, name := range []string{"infra", "kubernetes"} {
			sts, _, err := c.Stacks().List(ctx, client.ListOptions{Name: name})
			if err != nil || len(sts) != 1 {
				return false
			}
			svcs, _, err := c.Services().List(ctx, client.ListOptions{StackID: sts[0].ID})
			if err != nil || len(svcs) == 0 {
				return false
			}
			for _, s := range svcs {
				if !s.Spec.Global && !running[s.ID] {
					return false
				}
			}
		}
		return true
	}
}

var backoffRe = regexp.MustCompile(`; restarting in \S+ \(crash loop back-off\)`)

func (u *upper) writeKubeconfig(ctx context.Context, c *client.Client, server string) (string, error) {
	have, err := loadPKI(ctx, c)
	if err != nil {
		return "", err
	}
	admin, err := have.pair(ctx, "admin")
	if err != nil {
		return "", err
	}
	b := &pki.Bundle{CA: pki.Pair{Cert: []byte(have.certs["ca"].Spec.Cert)}, Certs: map[string]pki.Pair{"admin": admin}}
	kc, err := b.Kubeconfig("admin", server)
	if err != nil {
		return "", err
	}
	path := upDir + "/kubeconfig"
	if old, err := os.ReadFile(path); err == nil && string(old) == string(kc) {
		return path, nil
	}
	if err := os.WriteFile(path+".tmp", kc, 0o600); err != nil {
		return "", err
	}
	return path, os.Rename(path+".tmp", path)
}

// waitNode waits until the node is Ready, printing its condition as it
// changes.
func (u *upper) waitNode(ctx context.Context, kubeconfig, name string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	cfg.Timeout = 5 * time.Second
	kc, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	last := ""
	for {
		state := "the apiserver is not answering yet"
		n, err := kc.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case err == nil:
			state = "registered, not Ready"
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					state = fmt.Sprintf("Ready=%s (%s)", c.Status, c.Reason)
					if c.Status == corev1.ConditionTrue {
						u.step("node %s is Ready", name)
						return nil
					}
				}
			}
		case strings.Contains(err.Error(), "not found"):
			state = "not registered yet"
		}
		if state != last {
			u.step("node %s: %s", name, state)
			last = state
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node %s not Ready: %s: %w", name, last, ctx.Err())
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// joinToken is a registration token for more hosts, made once and kept
// (tokens are shown only when made).
func (u *upper) joinToken(ctx context.Context, c *client.Client) (string, error) {
	path := upDir + "/join-token"
	if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	tok, err := c.RegistrationTokens().Create(ctx, &api.RegistrationToken{Spec: api.RegistrationTokenSpec{Description: "drover up: hosts joining"}})
	if err != nil {
		return "", err
	}
	return tok.Status.Token, os.WriteFile(path, []byte(tok.Status.Token+"\n"), 0o600)
}

func waitHTTP(ctx context.Context, url string) error {
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// waitDNS waits until server answers name with an address.
func waitDNS(ctx context.Context, server, name string) error {
	cl := &mdns.Client{Timeout: time.Second}
	var last error
	for {
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		r, _, err := cl.ExchangeContext(ctx, m, server)
		if err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) > 0 {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("%s", mdns.RcodeToString[r.Rcode])
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("DNS at %s does not answer %s: %v", server, name, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// defaultIP is the IPv4 address of the interface the default route leaves
// by (a UDP connect sends nothing), or else the first global IPv4 address.
func defaultIP() (string, error) {
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil {
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if !ip.IsLoopback() {
			return ip.String(), nil
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && n.IP.IsGlobalUnicast() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no address found: give one")
}
