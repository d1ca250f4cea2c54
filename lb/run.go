package lb

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// Options run one LB container's HAProxy.
type Options struct {
	Engine    *client.Client
	ServiceID string // the LB service
	Dir       string // haproxy.cfg, certificates, sockets (default /run/drover-lb)
	HAProxy   string // the binary (default haproxy from PATH)
	Listen    string // /healthz and /metrics ("" none)
	// HealthPort answers TCP and HTTP health checks (default 42, the port
	// Rancher catalogs give their LBs' health_check).
	HealthPort int
	Logger     *slog.Logger
}

// Run keeps HAProxy serving the LB service's current config until ctx ends.
// A config HAProxy rejects is never applied: the last good one keeps
// serving, and /healthz and the log say why.
func Run(ctx context.Context, o Options) error {
	if o.Engine == nil || o.ServiceID == "" {
		return errors.New("lb: engine credentials and --service are needed")
	}
	if o.Dir == "" {
		o.Dir = "/run/drover-lb"
	}
	if o.HAProxy == "" {
		o.HAProxy = "haproxy"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "certs"), 0o700); err != nil {
		return err
	}
	d := &daemon{o: o, log: o.Logger, kick: make(chan struct{}, 1), reg: prometheus.NewRegistry(), certsWritten: map[string]int64{}, udp: newUDPProxy(o.Logger)}
	defer d.udp.close()
	d.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drover_lb_config_changes_total", Help: "New HAProxy configs, by result (applied, rejected)."}, []string{"result"})
	d.reg.MustRegister(d.reloads)
	poke := func() {
		select {
		case d.kick <- struct{}{}:
		default:
		}
	}
	h := func() client.Handlers[api.Service] {
		return client.Handlers[api.Service]{OnAdd: func(*api.Service) { poke() }, OnUpdate: func(_, _ *api.Service) { poke() }, OnDelete: func(*api.Service) { poke() }}
	}
	d.svcs = client.NewCache(o.Engine.Services(), client.ListOptions{}, h(), d.log)
	d.stacks = client.NewCache(o.Engine.Stacks(), client.ListOptions{}, client.Handlers[api.Stack]{OnAdd: func(*api.Stack) { poke() }}, d.log)
	d.ctrs = client.NewCache(o.Engine.Containers(), client.ListOptions{}, client.Handlers[api.Container]{
		OnAdd: func(*api.Container) { poke() }, OnUpdate: func(_, _ *api.Container) { poke() }, OnDelete: func(*api.Container) { poke() }}, d.log)
	d.certs = client.NewCache(o.Engine.Certificates(), client.ListOptions{}, client.Handlers[api.Certificate]{
		OnAdd: func(*api.Certificate) { poke() }, OnUpdate: func(_, _ *api.Certificate) { poke() }}, d.log)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for _, run := range []func(context.Context){d.svcs.Run, d.stacks.Run, d.ctrs.Run, d.certs.Run} {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	defer wg.Wait()
	if o.Listen != "" {
		srv := d.serve()
		defer srv.Close()
	}
	defer d.stop()
	for _, c := range []interface{ WaitForSync(context.Context) bool }{d.svcs, d.stacks, d.ctrs, d.certs} {
		if !c.WaitForSync(ctx) {
			return nil
		}
	}
	t := time.NewTicker(30 * time.Second)
	retry := time.NewTicker(time.Second)
	defer retry.Stop()
	defer t.Stop()
	for {
		err := d.sync(ctx)
		if err != nil && ctx.Err() == nil {
			d.setErr(err)
			d.log.Warn("load balancer not updated; the last good config keeps serving", "err", err)
		} else {
			d.setErr(nil)
		}
		if ctx.Err() == nil {
			d.report(ctx, err)
		}
	wait:
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-d.kick:
				// Let a burst of changes settle into one config.
				time.Sleep(50 * time.Millisecond)
				break wait
			case <-t.C:
				break wait
			case <-retry.C:
				if len(d.doomed) > 0 {
					d.deleteDoomed()
				}
			}
		}
		if d.proc != nil && d.exited() {
			return fmt.Errorf("lb: haproxy exited: %v", d.waitErr)
		}
	}
}

type daemon struct {
	o       Options
	log     *slog.Logger
	kick    chan struct{}
	reg     *prometheus.Registry
	reloads *prometheus.CounterVec
	svcs    *client.Cache[api.Service, *api.Service]
	stacks  *client.Cache[api.Stack, *api.Stack]
	ctrs    *client.Cache[api.Container, *api.Container]
	certs   *client.Cache[api.Certificate, *api.Certificate]

	certsWritten map[string]int64 // certificate id -> revision written to disk
	applied      string           // the config HAProxy runs (config and crt-list)
	appliedCfg   string
	appliedCrt   string
	// doomed are servers gone from the config but still in HAProxy, in
	// maintenance: "del server" is refused while a server holds
	// connections (idle keep-alive ones too), so deletion is retried.
	doomed  map[string]bool
	udp     *udpProxy
	proc    *exec.Cmd
	done    chan struct{}
	waitErr error

	mu  sync.Mutex
	err error
}

func (d *daemon) setErr(err error) {
	d.mu.Lock()
	d.err = err
	d.mu.Unlock()
}

// ConditionConfigApplied is the LB service's condition drover lb owns: True
// when HAProxy runs the config the engine's state makes, False with the
// reason (a rule naming nothing, a config haproxy -c refused) otherwise.
const ConditionConfigApplied = "LoadBalancerConfigApplied"

// report sets the condition when it changed. Every container of the LB
// computes the same config from the same state, so they agree.
func (d *daemon) report(ctx context.Context, syncErr error) {
	svc, ok := d.svcs.Get(d.o.ServiceID)
	if !ok {
		return
	}
	c := api.Condition{Type: ConditionConfigApplied, Status: api.ConditionTrue, Owner: "lb", Reason: "Applied", ObservedGeneration: svc.Generation}
	if syncErr != nil {
		c.Status, c.Reason, c.Message = api.ConditionFalse, "NotApplied", syncErr.Error()+" (the last good config keeps serving)"
	}
	conds := append([]api.Condition(nil), svc.Status.Conditions...)
	if !api.SetCondition(&conds, c, time.Now()) {
		return
	}
	if _, err := d.o.Engine.Services().PatchStatus(ctx, svc.ID, map[string]any{"status": map[string]any{"conditions": []api.Condition{*api.FindCondition(conds, ConditionConfigApplied)}}}); err != nil && !api.IsNotFound(err) {
		d.log.Debug("condition not written (next pass)", "err", err)
	}
}

// Resolve turns the LB service's port rules into rules with backends, from
// the engine's state: a rule's service is a name in the LB's stack,
// "stack/name", or an id; its targets are the running containers of that
// service (or a Kubernetes service's ready endpoints).
func Resolve(lbSvc *api.Service, svcs []*api.Service, stacks []*api.Stack, ctrs []*api.Container) ([]Rule, error) {
	if lbSvc.Spec.LBConfig == nil {
		return nil, nil
	}
	stackByName := map[string]string{}
	for _, st := range stacks {
		stackByName[st.Name] = st.ID
	}
	var rules []Rule
	for i, pr := range lbSvc.Spec.LBConfig.PortRules {
		if len(pr.Addresses) > 0 {
			r := Rule{Index: i, PortRule: pr, Backend: pr.BackendName}
			if r.Backend == "" {
				r.Backend = BackendName(lbSvc.Name+"/addresses", pr.TargetPort)
			}
			for _, a := range pr.Addresses {
				r.Targets = append(r.Targets, Target{Name: a + "-" + strconv.Itoa(pr.TargetPort), IP: a, Port: pr.TargetPort})
			}
			rules = append(rules, r)
			continue
		}
		if pr.Selector != "" && pr.ServiceID == "" {
			r, err := resolveSelector(i, pr, svcs, ctrs)
			if err != nil {
				return nil, err
			}
			rules = append(rules, r)
			continue
		}
		ref := pr.ServiceID
		stackID, name := lbSvc.Spec.StackID, ref
		if s, n, ok := strings.Cut(ref, "/"); ok {
			stackID, name = stackByName[s], n
			if stackID == "" {
				return nil, fmt.Errorf("lb_config.port_rules[%d].service: no stack %q", i, s)
			}
		}
		var target *api.Service
		for _, s := range svcs {
			if s.ID == ref || (s.Name == name && s.Spec.StackID == stackID) {
				target = s
			}
		}
		if target == nil {
			return nil, fmt.Errorf("lb_config.port_rules[%d].service: no service %q in the LB's stack", i, ref)
		}
		r := Rule{Index: i, PortRule: pr, Check: target.Spec.HealthCheck}
		r.Backend = pr.BackendName
		if r.Backend == "" {
			// "stack/name" in the name: two stacks' "web" are two backends.
			base := target.Name
			if strings.Contains(ref, "/") {
				base = ref
			}
			if pr.TargetPortName != "" {
				base += "/" + pr.TargetPortName
			}
			r.Backend = BackendName(base, pr.TargetPort)
		}
		if target.Spec.Kind == api.ServiceKubernetes {
			for _, ep := range target.Status.Endpoints {
				for _, p := range ep.Ports {
					if pr.TargetPortName != "" && p.Name != pr.TargetPortName {
						continue
					}
					if pr.TargetPortName != "" || pr.TargetPort == 0 || p.Port == pr.TargetPort {
						r.Targets = append(r.Targets, Target{Name: ep.IP + "-" + fmt.Sprint(p.Port), IP: ep.IP, Port: p.Port})
					}
				}
			}
		} else {
			for _, c := range ctrs {
				if c.Spec.ServiceID == target.ID && c.Status.State == api.ContainerRunning && c.Status.PrimaryIP != "" {
					r.Targets = append(r.Targets, Target{Name: c.Name, IP: c.Status.PrimaryIP, Port: pr.TargetPort, Down: c.Status.Health == "unhealthy"})
				}
			}
		}
		rules = append(rules, r)
	}
	return rules, nil
}

// resolveSelector: a rule with a selector (Rancher 1.6) balances to every
// container service whose labels match it.
func resolveSelector(i int, pr api.PortRule, svcs []*api.Service, ctrs []*api.Container) (Rule, error) {
	sel, err := api.ParseSelector(pr.Selector)
	if err != nil {
		return Rule{}, fmt.Errorf("lb_config.port_rules[%d].selector: %v", i, err)
	}
	r := Rule{Index: i, PortRule: pr, Backend: pr.BackendName}
	if r.Backend == "" {
		r.Backend = BackendName("selector_"+pr.Selector, pr.TargetPort)
	}
	matched := map[string]bool{}
	for _, s := range svcs {
		if s.Spec.Kind == api.ServiceContainer && sel.Matches(s.Labels) {
			matched[s.ID] = true
		}
	}
	for _, c := range ctrs {
		if matched[c.Spec.ServiceID] && c.Status.State == api.ContainerRunning && c.Status.PrimaryIP != "" {
			r.Targets = append(r.Targets, Target{Name: c.Name, IP: c.Status.PrimaryIP, Port: pr.TargetPort, Down: c.Status.Health == "unhealthy"})
		}
	}
	return r, nil
}

// sync renders the current config and applies it if it changed.
func (d *daemon) sync(ctx context.Context) error {
	lbSvc, ok := d.svcs.Get(d.o.ServiceID)
	if !ok {
		return fmt.Errorf("no service %s in the engine", d.o.ServiceID)
	}
	svcs, stacks, ctrs := d.svcs.List(), d.stacks.List(), d.ctrs.List()
	rules, err := Resolve(lbSvc, svcs, stacks, ctrs)
	if err != nil {
		return err
	}
	in := Input{Rules: rules, Stickiness: lbSvc.Spec.LBConfig.StickinessPolicy, Extra: lbSvc.Spec.LBConfig.Config,
		CertDir: filepath.Join(d.o.Dir, "certs"), SocketPath: filepath.Join(d.o.Dir, "haproxy.sock"), HealthPort: d.o.HealthPort}
	if err := d.writeCerts(ctx, lbSvc.Spec.LBConfig, &in, true); err != nil {
		return err
	}
	// The members: LB services of the stack that name this one as their
	// front are served by its HAProxy too (a member that cannot be
	// resolved is left out, with its error; the others are served).
	var bad []string
	for _, m := range Members(lbSvc, svcs) {
		mr, err := Resolve(m, svcs, stacks, ctrs)
		if err == nil {
			// The first default certificate the front meets is its
			// default; the others are picked by name like the rest.
			asDefault := in.DefaultCert == ""
			var mi Input
			mi.CertDir = in.CertDir
			if err = d.writeCerts(ctx, m.Spec.LBConfig, &mi, asDefault); err == nil {
				in.Rules = append(in.Rules, mr...)
				in.Certs = append(in.Certs, mi.Certs...)
				if asDefault {
					in.DefaultCert = mi.DefaultCert
				}
			}
		}
		if err != nil {
			bad = append(bad, m.Name+": "+err.Error())
		}
	}
	if len(bad) > 0 {
		d.log.Warn("members of the shared LB left out", "errors", bad)
	}
	for i := range in.Rules {
		in.Rules[i].Index = i
	}
	// UDP is drover lb's own; the rest is HAProxy's.
	udp, other := UDPRules(in.Rules)
	in.Rules = other
	if err := d.udp.set(udp); err != nil {
		return err
	}
	out, err := Render(in)
	if err != nil {
		return err
	}
	key := out.Config + "\x00" + out.CrtList
	if key == d.applied && d.proc != nil {
		return nil
	}
	// Only servers' addresses or states changed: the Runtime API, no reload.
	if d.proc != nil && out.CrtList == d.appliedCrt {
		cmds, ok := RuntimeChanges(d.appliedCfg, out.Config)
		switch {
		case !ok:
			d.log.Info("reloading: more than servers changed")
		case len(cmds) > 0 && !d.canAdd(cmds):
			d.log.Info("reloading: a server to add is still waiting to be deleted", "commands", cmds, "doomed", len(d.doomed))
			ok = false
		}
		if ok && len(cmds) > 0 {
			if err := d.runtime(cmds); err == nil {
				if err := os.WriteFile(filepath.Join(d.o.Dir, "haproxy.cfg"), []byte(out.Config), 0o600); err != nil {
					return err
				}
				d.applied, d.appliedCfg = key, out.Config
				d.reloads.WithLabelValues("runtime").Inc()
				d.log.Info("backend servers changed through the Runtime API", "commands", len(cmds))
				return nil
			} else {
				d.log.Warn("the Runtime API refused a change; reloading instead", "err", err)
			}
		}
	}
	cfg := filepath.Join(d.o.Dir, "haproxy.cfg")
	next := cfg + ".next"
	if err := os.WriteFile(next, []byte(out.Config), 0o600); err != nil {
		return err
	}
	if out.CrtList != "" {
		if err := os.WriteFile(filepath.Join(in.CertDir, "crt-list"), []byte(out.CrtList), 0o600); err != nil {
			return err
		}
	}
	if b, err := exec.CommandContext(ctx, d.o.HAProxy, "-c", "-q", "-f", next).CombinedOutput(); err != nil {
		d.reloads.WithLabelValues("rejected").Inc()
		return fmt.Errorf("haproxy rejected the new config (the last good one keeps serving): %s", strings.TrimSpace(string(b)))
	}
	if err := os.Rename(next, cfg); err != nil {
		return err
	}
	if d.proc == nil {
		if err := d.start(cfg); err != nil {
			return err
		}
	} else if err := d.reload(); err != nil {
		return err
	}
	d.doomed = nil // new workers hold only the servers of the new config
	d.applied, d.appliedCfg, d.appliedCrt = key, out.Config, out.CrtList
	d.reloads.WithLabelValues("applied").Inc()
	d.log.Info("load balancer config applied", "rules", len(in.Rules))
	return nil
}

// LabelFront, on an LB service of scale 0, names the LB service of the
// same stack whose HAProxy serves its rules (a shared front: the
// ingress-controller's Ingresses share one on ports 80 and 443).
const LabelFront = "io.drover.lb.front"

// Members are the LB services that front serves besides itself, by name.
func Members(front *api.Service, svcs []*api.Service) []*api.Service {
	var out []*api.Service
	for _, s := range svcs {
		if s.ID != front.ID && s.Spec.StackID == front.Spec.StackID && s.Labels[LabelFront] == front.Name &&
			s.Spec.Kind == api.ServiceLoadBalancer && s.Spec.LBConfig != nil && s.DeletionTimestamp == nil {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// writeCerts writes the LB's certificates (certificate and key in one PEM).
// The default certificate is in.DefaultCert when asDefault, else one more
// of in.Certs, picked by its names.
func (d *daemon) writeCerts(ctx context.Context, cfg *api.LBConfig, in *Input, asDefault bool) error {
	want := append([]string(nil), cfg.CertificateIDs...)
	if cfg.DefaultCertificateID != "" {
		want = append(want, cfg.DefaultCertificateID)
	}
	for _, ref := range want {
		var cert *api.Certificate
		for _, c := range d.certs.List() {
			if c.ID == ref || c.Name == ref {
				cert = c
			}
		}
		if cert == nil {
			return fmt.Errorf("lb_config: no certificate %q", ref)
		}
		file := cert.ID + ".pem"
		// The private key is read (and the file written) only when the
		// certificate changed, not on every pass.
		if d.certsWritten[cert.ID] != cert.Revision {
			key, err := d.o.Engine.CertificateKey(ctx, cert.ID)
			if err != nil {
				return fmt.Errorf("certificate %s: %w", cert.Name, err)
			}
			pemb := append([]byte(strings.TrimSpace(cert.Spec.Cert)+"\n"), key...)
			if err := os.WriteFile(filepath.Join(in.CertDir, file), pemb, 0o600); err != nil {
				return err
			}
			d.certsWritten[cert.ID] = cert.Revision
		}
		if ref == cfg.DefaultCertificateID && asDefault {
			in.DefaultCert = file
		} else {
			in.Certs = append(in.Certs, CertFile{File: file, Names: cert.Status.SANs})
		}
	}
	return nil
}

// start runs HAProxy in master-worker mode with a master CLI socket.
func (d *daemon) start(cfg string) error {
	master := filepath.Join(d.o.Dir, "master.sock")
	os.Remove(master)
	cmd := exec.Command(d.o.HAProxy, "-W", "-S", master+",mode,600", "-f", cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting haproxy: %w", err)
	}
	d.proc, d.done = cmd, make(chan struct{})
	go func() {
		d.waitErr = cmd.Wait()
		close(d.done)
	}()
	// Ready once the master answers.
	if _, err := d.master("show proc"); err != nil {
		if d.exited() {
			return fmt.Errorf("haproxy exited at start: %v", d.waitErr)
		}
		return fmt.Errorf("haproxy's master socket did not answer: %w", err)
	}
	d.log.Info("haproxy started", "pid", cmd.Process.Pid)
	return nil
}

// reload asks the master for new workers with the new config; the
// listening sockets pass to them, so no connection is refused.
func (d *daemon) reload() error {
	out, err := d.master("reload")
	if err != nil {
		return fmt.Errorf("haproxy reload: %w", err)
	}
	_ = out
	return nil
}

// runtime sends commands to the workers' stats socket (admin level).
func (d *daemon) runtime(cmds []string) error {
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		b, err := SocketCommand(filepath.Join(d.o.Dir, "haproxy.sock"), strings.Join(batch, ";"), 0)
		batch = batch[:0]
		if err != nil {
			return err
		}
		return runtimeErr(b)
	}
	for _, c := range cmds {
		if k, ok := strings.CutPrefix(c, "del server "); ok {
			// Deleted one at a time: a refusal only puts it off.
			if err := flush(); err != nil {
				return err
			}
			if d.doomed == nil {
				d.doomed = map[string]bool{}
			}
			d.doomed[k] = true
			continue
		}
		batch = append(batch, c)
	}
	if err := flush(); err != nil {
		return err
	}
	d.deleteDoomed()
	return nil
}

// deleteDoomed deletes the servers in maintenance that left the config.
// HAProxy refuses while one still has connections: its streams are shut
// and the deletion is tried again a second later. In maintenance it gets
// no traffic meanwhile.
func (d *daemon) deleteDoomed() {
	sock := filepath.Join(d.o.Dir, "haproxy.sock")
	for k := range d.doomed {
		b, err := SocketCommand(sock, "del server "+k, 0)
		if err == nil {
			err = runtimeErr(b)
		}
		if err == nil {
			delete(d.doomed, k)
			continue
		}
		d.log.Debug("server not deleted yet", "server", k, "err", err)
		SocketCommand(sock, "shutdown sessions server "+k, 0)
	}
}

// canAdd says whether every server cmds adds is free in HAProxy: one
// with the same name still waiting to be deleted means a reload instead.
func (d *daemon) canAdd(cmds []string) bool {
	if len(d.doomed) == 0 {
		return true
	}
	d.deleteDoomed()
	for _, c := range cmds {
		if rest, ok := strings.CutPrefix(c, "add server "); ok && d.doomed[strings.Fields(rest)[0]] {
			return false
		}
	}
	return true
}

func runtimeErr(answer string) error {
	for _, line := range strings.Split(strings.TrimSpace(answer), "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "IP changed") && !strings.HasPrefix(line, "no need to change") && !strings.Contains(line, "port changed") &&
			line != "New server registered." && line != "Server deleted." {
			return fmt.Errorf("%s", line)
		}
	}
	return nil
}

// SocketCommand sends one command line to an HAProxy CLI socket (a stats
// socket, or the master's) and returns the answer. The master re-executes
// itself on reload and opens its socket anew: waitFor bounds how long a
// socket without a listener is retried.
func SocketCommand(sock, cmd string, waitFor time.Duration) (string, error) {
	var c net.Conn
	var err error
	for deadline := time.Now().Add(waitFor); ; {
		if c, err = net.DialTimeout("unix", sock, time.Second); err == nil || !time.Now().Before(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(cmd + "\n")); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		return "", err
	}
	return string(b), nil
}

type server struct {
	addr string
	opts string // what follows the address, but "disabled"
	down bool
}

// servers reads a config's servers by backend/name; the rest of the
// config, without its server lines, is its shape.
func servers(cfg string) (map[string]server, string) {
	out := map[string]server{}
	var shape strings.Builder
	backend := ""
	for _, line := range strings.Split(cfg, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "backend" || f[0] == "frontend" || f[0] == "listen") {
			backend = f[1]
		}
		if len(f) >= 3 && f[0] == "server" {
			opts, down := f[3:], false
			if len(opts) > 0 && opts[len(opts)-1] == "disabled" {
				opts, down = opts[:len(opts)-1], true
			}
			out[backend+"/"+f[1]] = server{addr: f[2], opts: strings.Join(opts, " "), down: down}
			continue
		}
		shape.WriteString(line + "\n")
	}
	return out, shape.String()
}

// RuntimeChanges says how to turn the running config into next through the
// Runtime API: ok when only servers differ, by address, state, or being
// there at all (HAProxy 2.6 adds and deletes servers at run time, except
// those with a stickiness cookie).
func RuntimeChanges(running, next string) ([]string, bool) {
	a, shapeA := servers(running)
	b, shapeB := servers(next)
	if shapeA != shapeB {
		return nil, false
	}
	var change, add, del []string
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		nb := b[k]
		na, ok := a[k]
		if !ok {
			if strings.Contains(" "+nb.opts+" ", " cookie ") {
				return nil, false
			}
			add = append(add, strings.TrimSpace(fmt.Sprintf("add server %s %s %s", k, nb.addr, nb.opts)))
			if strings.Contains(" "+nb.opts+" ", " check ") {
				add = append(add, "enable health "+k)
			}
			if !nb.down {
				add = append(add, "enable server "+k)
			}
			continue
		}
		if na.opts != nb.opts {
			return nil, false
		}
		if na.addr != nb.addr {
			host, port, err := net.SplitHostPort(nb.addr)
			if err != nil {
				return nil, false
			}
			change = append(change, fmt.Sprintf("set server %s addr %s port %s", k, host, port))
		}
		if na.down != nb.down {
			state := "ready"
			if nb.down {
				state = "maint"
			}
			change = append(change, fmt.Sprintf("set server %s state %s", k, state))
		}
	}
	gone := make([]string, 0, len(a))
	for k := range a {
		if _, ok := b[k]; !ok {
			gone = append(gone, k)
		}
	}
	sort.Strings(gone)
	for _, k := range gone {
		del = append(del, "set server "+k+" state maint", "del server "+k)
	}
	sort.Strings(change)
	// Keep each add's own order (add, enable health, enable server).
	return append(append(change, add...), del...), true
}

// master sends one command to the master CLI.
func (d *daemon) master(cmd string) (string, error) {
	return SocketCommand(filepath.Join(d.o.Dir, "master.sock"), cmd, 5*time.Second)
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop ends HAProxy: SIGUSR1 lets the workers finish their connections.
func (d *daemon) stop() {
	if d.proc == nil || d.exited() {
		return
	}
	d.proc.Process.Signal(syscall.SIGUSR1)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.proc.Process.Kill()
		<-d.done
	}
}

func (d *daemon) serve() *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(d.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		d.mu.Lock()
		err := d.err
		d.mu.Unlock()
		switch {
		case d.proc == nil:
			http.Error(w, "haproxy not started yet", http.StatusServiceUnavailable)
		case err != nil:
			// Serving the last good config: alive, but say why it is old.
			fmt.Fprintf(w, "ok (last config not applied: %v)\n", err)
		default:
			fmt.Fprintln(w, "ok")
		}
	})
	srv := &http.Server{Addr: d.o.Listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Warn("health listener failed", "err", err)
		}
	}()
	return srv
}
