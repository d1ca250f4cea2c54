package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	dockerclient "github.com/docker/docker/client"
	"github.com/docker/go-connections/nat"
	units "github.com/docker/go-units"
	"golang.org/x/sync/errgroup"

	"github.com/drover/drover/api"
	"github.com/drover/drover/internal/privileged"
)

// Labels on Docker containers. They tie a container to its engine object,
// so an agent adopts its containers after a restart, and several agents can
// share one Docker Engine (a test setup) without touching each other's.
const (
	LabelContainerID = "io.drover.container.id"
	LabelHostID      = "io.drover.host.id"
	LabelSpecHash    = "io.drover.spec.hash"
)

func sameSpec(a, b *api.Container) bool { return api.SameJSON(a.Spec, b.Spec) }

// specHash fingerprints what a container is made from: when it changes, the
// Docker container is recreated.
func specHash(c *api.Container) string {
	b, _ := json.Marshal(struct {
		Name string
		LC   *api.LaunchConfig
	}{c.Name, c.Spec.LaunchConfig})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}

func dockerName(c *api.Container) string {
	id := c.ID
	if len(id) > 6 {
		id = id[len(id)-6:]
	}
	return "dr-" + c.Name + "-" + id
}

func (a *Agent) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.Resync)
	defer t.Stop()
	for {
		if a.ctrs.HasSynced() {
			if err := a.reconcile(ctx); err != nil && ctx.Err() == nil {
				a.log.Warn("reconcile failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.kick:
		case <-t.C:
		}
	}
}

// watchDocker pokes the reconciler when one of this host's containers
// changes in Docker (died, removed behind our back, ...).
func (a *Agent) watchDocker(ctx context.Context) {
	for ctx.Err() == nil {
		f := filters.NewArgs(filters.Arg("type", "container"), filters.Arg("label", LabelHostID+"="+a.host.ID))
		msgs, errs := a.docker.Events(ctx, events.ListOptions{Filters: f})
	loop:
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-msgs:
				switch m.Action {
				case events.ActionDie, events.ActionDestroy, events.ActionStop, events.ActionKill, events.ActionOOM, events.ActionStart:
					a.poke()
				}
			case err := <-errs:
				if ctx.Err() == nil {
					a.log.Debug("docker events ended; resubscribing", "err", err)
				}
				break loop
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// reconcile makes Docker run exactly the containers the engine placed here.
func (a *Agent) reconcile(ctx context.Context) error {
	desired := map[string]*api.Container{}
	for _, c := range a.ctrs.List() {
		if c.Spec.HostID == a.host.ID && c.Spec.Kind != api.ContainerKindPod {
			desired[c.ID] = c
		}
	}
	list, err := a.docker.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", LabelHostID+"="+a.host.ID))})
	if err != nil {
		return fmt.Errorf("listing docker containers: %w", err)
	}
	actual := map[string]container.Summary{}
	for _, dc := range list {
		id := dc.Labels[LabelContainerID]
		if _, dup := actual[id]; desired[id] == nil || dup {
			a.log.Info("removing container the engine no longer wants", "docker", dc.ID[:12], "container", id)
			a.remove(ctx, dc.ID)
			continue
		}
		actual[id] = dc
	}
	ids := make([]string, 0, len(desired))
	for id := range desired {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	// Containers are independent: bring them up side by side (Docker does
	// much of a create and start in parallel), a few at a time.
	var g errgroup.Group
	g.SetLimit(8)
	for _, id := range ids {
		c := desired[id]
		var dc *container.Summary
		if s, ok := actual[id]; ok {
			dc = &s
		}
		g.Go(func() error {
			if err := a.ensure(ctx, c, dc); err != nil && ctx.Err() == nil {
				a.log.Warn("container not running as wanted", "container", c.Name, "err", err)
				a.report(ctx, c, map[string]any{"state": api.ContainerError, "message": err.Error()})
			}
			return nil
		})
	}
	err = g.Wait()
	a.dropSecrets(desired)
	if a.ipam != nil {
		a.releaseAddresses(desired)
	}
	return err
}

func (a *Agent) remove(ctx context.Context, dockerID string) {
	err := a.docker.ContainerRemove(ctx, dockerID, container.RemoveOptions{Force: true, RemoveVolumes: true})
	a.count("remove", err)
}

func (a *Agent) count(action string, err error) {
	res := "ok"
	if err != nil {
		res = "error"
	}
	a.metrics.actions.WithLabelValues(action, res).Inc()
}

// ensure brings one container to its spec.
func (a *Agent) ensure(ctx context.Context, c *api.Container, dc *container.Summary) error {
	lc := c.Spec.LaunchConfig
	if svc := a.loadBalancerOf(c); svc != nil {
		lc = a.lbLaunchConfig(c, svc)
	}
	if lc == nil || lc.Image == "" {
		return fmt.Errorf("container %s has no launch config with an image", c.Name)
	}
	hash := specHash(c)
	if dc != nil && dc.Labels[LabelSpecHash] != hash {
		a.log.Info("spec changed; recreating", "container", c.Name)
		a.remove(ctx, dc.ID)
		dc = nil
	}
	if dc == nil {
		return a.create(ctx, c, hash)
	}
	insp, err := a.docker.ContainerInspect(ctx, dc.ID)
	if err != nil {
		return fmt.Errorf("inspecting: %w", err)
	}
	if insp.State.Running {
		a.backoffFor(c.ID).running(insp.State.StartedAt)
		return a.reportInspect(ctx, c, insp, "")
	}
	// Not running: the restart policy decides, and crash loops back off.
	code := insp.State.ExitCode
	restart := true
	policy, _, _ := strings.Cut(lc.Restart, ":")
	switch {
	case insp.State.Status == "created":
		// Never started (a start that failed): not a finished run.
		restart = true
	case lc.StartOnce:
		restart = false
	case policy == "no":
		restart = false
	case policy == "on-failure":
		restart = code != 0
	}
	if !restart {
		return a.reportInspect(ctx, c, insp, "")
	}
	b := a.backoffFor(c.ID)
	if wait := b.wait(); wait > 0 {
		go func() {
			select {
			case <-time.After(wait):
				a.poke()
			case <-ctx.Done():
			}
		}()
		return a.reportInspect(ctx, c, insp, fmt.Sprintf("exited with %d; restarting in %s (crash loop back-off)", code, wait.Round(time.Second)))
	}
	b.started()
	err = a.docker.ContainerStart(ctx, dc.ID, container.StartOptions{})
	a.count("restart", err)
	if err != nil {
		return fmt.Errorf("restarting: %w", err)
	}
	a.log.Info("restarted container", "container", c.Name, "exitCode", code)
	insp, err = a.docker.ContainerInspect(ctx, dc.ID)
	if err != nil {
		return err
	}
	return a.reportInspect(ctx, c, insp, "")
}

func (a *Agent) create(ctx context.Context, c *api.Container, hash string) error {
	lc := c.Spec.LaunchConfig
	lbSvc := a.loadBalancerOf(c)
	if lbSvc != nil {
		lc = a.lbLaunchConfig(c, lbSvc)
	}
	if err := a.ensureImage(ctx, lc); err != nil {
		return err
	}
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	for k, v := range lc.Labels {
		labels[k] = v
	}
	for k, v := range a.opts.ContainerLabels {
		labels[k] = v
	}
	labels[LabelContainerID], labels[LabelHostID], labels[LabelSpecHash] = c.ID, a.host.ID, hash
	var env []string
	for k, v := range lc.Environment {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	// Where the container runs, as Rancher's metadata would tell it: system
	// containers on the host network name their node by it.
	env = append(env, "DROVER_HOST_NAME="+a.host.Name, "DROVER_HOST_IP="+a.host.Status.AgentIP)
	binds := lc.Volumes
	if wantsSecrets(labels) {
		dir, senv, err := a.writeSecrets(ctx, c)
		if err != nil {
			return err
		}
		env = append(env, senv...)
		binds = append(append([]string{}, binds...), dir+":"+SecretsMount+":ro")
	}
	exposed, bindings, err := nat.ParsePortSpecs(append(append([]string{}, lc.Ports...), lc.Expose...))
	if err != nil {
		return fmt.Errorf("ports: %w", err)
	}
	cfg := &container.Config{
		Image: lc.Image, Cmd: lc.Command, Entrypoint: lc.Entrypoint, Env: env, Labels: labels,
		Hostname: lc.Hostname, WorkingDir: lc.WorkingDir, User: lc.User, Tty: lc.Tty, OpenStdin: lc.StdinOpen,
		ExposedPorts: exposed,
	}
	volumesFrom, err := a.volumesFrom(c)
	if err != nil {
		return err
	}
	netMode, err := a.networkMode(c)
	if err != nil {
		return err
	}
	hc := &container.HostConfig{
		PortBindings: bindings, Binds: binds, NetworkMode: container.NetworkMode(netMode), VolumesFrom: volumesFrom,
		PidMode: container.PidMode(lc.Pid), CapAdd: lc.CapAdd, CapDrop: lc.CapDrop, DNS: lc.DNS, DNSSearch: lc.DNSSearch,
		// The agent applies restart policies itself, so the engine sees every
		// restart and crash loops back off; Docker must not race it.
		RestartPolicy: container.RestartPolicy{Name: container.RestartPolicyDisabled},
	}
	// First what the file says, then privileged's additions to it (its
	// security options must not be overwritten: a nested runc needs
	// seccomp unconfined for its keyrings).
	applyCompose(cfg, hc, lc)
	if lc.Privileged {
		privileged.Apply(hc)
	}
	hc.Resources.Memory = lc.MemoryBytes
	hc.Resources.NanoCPUs = lc.MilliCPU * 1_000_000
	var netCfg *network.NetworkingConfig
	if a.ipam != nil && onOverlay(lc.NetworkMode) {
		var dns, search []string
		if netCfg, dns, search, err = a.overlayEndpoint(c); err != nil {
			return fmt.Errorf("overlay address: %w", err)
		}
		hc.NetworkMode = OverlayNetwork
		if len(hc.DNS) == 0 {
			hc.DNS = dns
		}
		if len(hc.DNSSearch) == 0 {
			hc.DNSSearch = search
		}
	}
	resp, err := a.docker.ContainerCreate(ctx, cfg, hc, netCfg, nil, dockerName(c))
	a.count("create", err)
	if err != nil {
		if strings.Contains(err.Error(), "Conflict") {
			// A container of that name exists without our labels (or half
			// made): remove it and try again next pass.
			a.remove(ctx, dockerName(c))
		}
		return fmt.Errorf("creating: %w", err)
	}
	a.backoffFor(c.ID).started()
	err = a.docker.ContainerStart(ctx, resp.ID, container.StartOptions{})
	a.count("start", err)
	if err != nil {
		return fmt.Errorf("starting: %w", err)
	}
	a.log.Info("started container", "container", c.Name, "image", lc.Image, "docker", resp.ID[:12])
	insp, err := a.docker.ContainerInspect(ctx, resp.ID)
	if err != nil {
		return err
	}
	return a.reportInspect(ctx, c, insp, "")
}

// loadBalancerOf returns the LB service a container belongs to, or nil.
func (a *Agent) loadBalancerOf(c *api.Container) *api.Service {
	if a.svcs == nil || c.Spec.ServiceID == "" {
		return nil
	}
	svc, ok := a.svcs.Get(c.Spec.ServiceID)
	if !ok || svc.Spec.Kind != api.ServiceLoadBalancer {
		return nil
	}
	return svc
}

// lbLaunchConfig runs an LB container as drover's HAProxy image, whatever
// image the compose file named (rancher/lb-service-haproxy), with drover lb
// for its service, an engine key of its own, and every rule's source port
// published on the host as Rancher did.
func (a *Agent) lbLaunchConfig(c *api.Container, svc *api.Service) *api.LaunchConfig {
	var lc api.LaunchConfig
	if c.Spec.LaunchConfig != nil {
		lc = *c.Spec.LaunchConfig
	}
	lc.Image = a.opts.LBImage
	lc.Entrypoint = []string{"/usr/local/bin/drover", "lb"}
	lc.Command = []string{"--service", svc.ID}
	labels := lc.Labels
	lc.Labels = map[string]string{}
	for k, v := range labels {
		lc.Labels[k] = v
	}
	lc.Labels[api.LabelAgentRole] = api.RoleService
	// Published on the host's address, the one status.publicEndpoints
	// names: a wildcard bind of port 80 would collide with drover
	// metadata on 169.254.169.250:80.
	ip := a.host.Status.AgentIP
	if ip == "" {
		ip = a.opts.IP
	}
	onHost := func(p string) string {
		if ip == "" || strings.Count(p, ":") != 1 {
			return p // no address known, or one given
		}
		return ip + ":" + p
	}
	published := map[string]bool{}
	var ports []string
	for _, p := range lc.Ports {
		published[lbPortKey(p)] = true
		ports = append(ports, onHost(p))
	}
	if svc.Spec.LBConfig != nil {
		for _, r := range svc.Spec.LBConfig.PortRules {
			proto := "tcp"
			if strings.EqualFold(r.Protocol, "udp") {
				proto = "udp" // drover lb's own UDP balancing
			}
			if p := fmt.Sprintf("%d:%d/%s", r.SourcePort, r.SourcePort, proto); !published[lbPortKey(p)] {
				ports = append(ports, onHost(p))
				published[lbPortKey(p)] = true
			}
		}
	}
	lc.Ports = ports
	return &lc
}

// lbPortKey is a port spec's container side ("80/tcp").
func lbPortKey(spec string) string {
	if i := strings.LastIndex(spec, ":"); i >= 0 {
		spec = spec[i+1:]
	}
	if !strings.Contains(spec, "/") {
		spec += "/tcp"
	}
	return spec
}

// unitMembers maps the containers of c's deployment unit by launch config
// name (the service's own name for the primary).
func (a *Agent) unitMembers(c *api.Container) map[string]*api.Container {
	unit := map[string]*api.Container{}
	for _, o := range a.ctrs.List() {
		if o.Spec.DeploymentUnit != "" && o.Spec.DeploymentUnit == c.Spec.DeploymentUnit {
			name := o.Spec.LaunchConfigName
			if name == "" {
				name = o.Labels["io.drover.service.name"]
			}
			unit[name] = o
		}
	}
	return unit
}

// networkMode maps network_mode container:<name>, where name is a member
// of the same deployment unit (a sidekick sharing its primary's network
// namespace, and so its address), to that member's Docker container.
func (a *Agent) networkMode(c *api.Container) (string, error) {
	mode := c.Spec.LaunchConfig.NetworkMode
	name, ok := strings.CutPrefix(mode, "container:")
	if !ok {
		return mode, nil
	}
	target, ok := a.unitMembers(c)[name]
	if !ok {
		return mode, nil // a Docker container named so
	}
	if target.ID == c.ID {
		return "", fmt.Errorf("network_mode %q names the container itself", mode)
	}
	return "container:" + dockerName(target), nil
}

// volumesFrom maps volumes_from names (the service's own name for the
// primary, or a sidekick's name) to the Docker containers of the same
// deployment unit, as Rancher did for sidekicks. A name that is no part of
// the unit is passed through, for a Docker container named so.
func (a *Agent) volumesFrom(c *api.Container) ([]string, error) {
	lc := c.Spec.LaunchConfig
	if len(lc.VolumesFrom) == 0 {
		return nil, nil
	}
	unit := a.unitMembers(c)
	var out []string
	for _, ref := range lc.VolumesFrom {
		name, mode, _ := strings.Cut(ref, ":")
		target, ok := unit[name]
		if !ok {
			out = append(out, ref)
			continue
		}
		if target.ID == c.ID {
			return nil, fmt.Errorf("volumes_from %q names the container itself", name)
		}
		d := dockerName(target)
		if mode != "" {
			d += ":" + mode
		}
		out = append(out, d)
	}
	return out, nil
}

// ensureImage makes the image present: used as is when local (no registry
// is needed), pulled when missing or when pull_image is "always".
func (a *Agent) ensureImage(ctx context.Context, lc *api.LaunchConfig) error {
	_, err := a.docker.ImageInspect(ctx, lc.Image)
	if err == nil && lc.PullImage != "always" {
		return nil
	}
	if lc.PullImage == "never" {
		return fmt.Errorf("image %s is not on this host and pull_image is never", lc.Image)
	}
	// No registry needed: an image the engine holds comes from the engine.
	if err != nil {
		if rc, eerr := a.eng.ImageArchive(ctx, lc.Image); eerr == nil {
			lerr := LoadImage(ctx, a.docker, rc)
			rc.Close()
			a.count("load", lerr)
			if lerr != nil {
				return fmt.Errorf("image %s: loading it from the engine: %w", lc.Image, lerr)
			}
			if _, ierr := a.docker.ImageInspect(ctx, lc.Image); ierr != nil {
				return fmt.Errorf("image %s: the archive the engine holds under that name does not contain it", lc.Image)
			}
			a.log.Info("image loaded from the engine", "image", lc.Image)
			return nil
		} else if !api.IsNotFound(eerr) {
			a.log.Warn("could not ask the engine for an image; trying a registry", "image", lc.Image, "err", eerr)
		}
	}
	rc, perr := a.docker.ImagePull(ctx, lc.Image, image.PullOptions{})
	if perr == nil {
		_, perr = io.Copy(io.Discard, rc)
		rc.Close()
	}
	a.count("pull", perr)
	if perr != nil {
		if err == nil {
			a.log.Warn("pull failed; using the local image", "image", lc.Image, "err", perr)
			return nil
		}
		return fmt.Errorf("image %s is not on this host and pulling it failed: %v", lc.Image, perr)
	}
	return nil
}

// LoadImage loads an image archive (what docker save writes, as the engine
// serves it) into Docker, reading Docker's answer to the end.
func LoadImage(ctx context.Context, d *dockerclient.Client, archive io.Reader) error {
	resp, err := d.ImageLoad(ctx, archive)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}

// reportInspect writes what Docker says into the container's status.
func (a *Agent) reportInspect(ctx context.Context, c *api.Container, insp container.InspectResponse, msg string) error {
	st := map[string]any{"dockerId": insp.ID, "exitCode": insp.State.ExitCode, "message": msg}
	switch {
	case insp.State.Running:
		st["state"] = api.ContainerRunning
	case insp.State.ExitCode != 0 || insp.State.OOMKilled:
		st["state"] = api.ContainerError
		if msg == "" {
			st["message"] = fmt.Sprintf("exited with %d", insp.State.ExitCode)
		}
	default:
		st["state"] = api.ContainerStopped
	}
	if insp.NetworkSettings != nil {
		// The container's network (the bridge by default, or the one its
		// network_mode names); names are sorted so the choice is stable.
		var ip, mac string
		names := make([]string, 0, len(insp.NetworkSettings.Networks))
		for n := range insp.NetworkSettings.Networks {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			if ep := insp.NetworkSettings.Networks[n]; ip == "" && ep != nil && ep.IPAddress != "" {
				ip, mac = ep.IPAddress, ep.MacAddress
			}
		}
		if ip == "" && insp.HostConfig != nil {
			// A sidekick in its primary's network namespace has the
			// primary's address.
			if target, ok := strings.CutPrefix(string(insp.HostConfig.NetworkMode), "container:"); ok {
				for _, m := range a.unitMembers(c) {
					if dockerName(m) == target || m.Status.DockerID == target {
						ip = m.Status.PrimaryIP
					}
				}
			}
		}
		st["primaryIP"], st["mac"] = ip, mac
	}
	if t, err := time.Parse(time.RFC3339Nano, insp.State.StartedAt); err == nil && !t.IsZero() && t.Year() > 1 {
		st["startedAt"] = t.UTC()
	}
	st["startCount"] = a.backoffFor(c.ID).starts()
	if c.Status.StartCount > st["startCount"].(int) {
		st["startCount"] = c.Status.StartCount
	}
	// The container is as it should be even if the engine cannot hear
	// about it now; the next pass reports again.
	a.report(ctx, c, st)
	return nil
}

// report patches status fields that differ from what the engine has.
func (a *Agent) report(ctx context.Context, c *api.Container, st map[string]any) error {
	cur, _ := json.Marshal(c.Status)
	var have map[string]any
	json.Unmarshal(cur, &have)
	changed := false
	for k, v := range st {
		want, _ := json.Marshal(v)
		got, _ := json.Marshal(have[k])
		if string(want) != string(got) && !(string(got) == "null" && (string(want) == `""` || string(want) == "0")) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	_, err := a.eng.Containers().PatchStatus(ctx, c.ID, map[string]any{"status": st})
	if err != nil && !api.IsNotFound(err) && ctx.Err() == nil {
		a.log.Debug("status not reported (will retry)", "container", c.Name, "err", err)
		return err
	}
	return nil
}

// crashBackoff spaces restarts of a crashing container: 1s, 2s, 4s, ... up
// to 5 minutes; a container that ran for 10 minutes starts over at 1s.
type crashBackoff struct {
	last  time.Time
	delay time.Duration
	count int
}

func (a *Agent) backoffFor(id string) *crashBackoff {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.backoff[id]
	if b == nil {
		b = &crashBackoff{}
		a.backoff[id] = b
	}
	return b
}

func (b *crashBackoff) wait() time.Duration {
	if b.last.IsZero() {
		return 0
	}
	return time.Until(b.last.Add(b.delay))
}

func (b *crashBackoff) started() {
	b.count++
	switch {
	case b.delay == 0:
		b.delay = time.Second
	default:
		b.delay = min(b.delay*2, 5*time.Minute)
	}
	b.last = time.Now()
}

func (b *crashBackoff) running(startedAt string) {
	if t, err := time.Parse(time.RFC3339Nano, startedAt); err == nil && time.Since(t) > 10*time.Minute {
		b.delay = 0
	}
}

func (b *crashBackoff) starts() int { return b.count }

// applyCompose sets what a compose file says beyond the basics: logging,
// ulimits, the volume driver, extra hosts, devices, sysctls, shm size,
// security options, swappiness and the stop signal.
func applyCompose(cfg *container.Config, hc *container.HostConfig, lc *api.LaunchConfig) {
	if lc.LogDriver != "" || len(lc.LogOptions) > 0 {
		hc.LogConfig = container.LogConfig{Type: lc.LogDriver, Config: lc.LogOptions}
	}
	for _, u := range lc.Ulimits {
		hc.Resources.Ulimits = append(hc.Resources.Ulimits, &units.Ulimit{Name: u.Name, Soft: u.Soft, Hard: u.Hard})
	}
	hc.VolumeDriver = lc.VolumeDriver
	hc.ExtraHosts = lc.ExtraHosts
	for _, d := range lc.Devices {
		parts := strings.SplitN(d, ":", 3)
		dm := container.DeviceMapping{PathOnHost: parts[0], PathInContainer: parts[0], CgroupPermissions: "rwm"}
		if len(parts) > 1 && parts[1] != "" {
			dm.PathInContainer = parts[1]
		}
		if len(parts) > 2 && parts[2] != "" {
			dm.CgroupPermissions = parts[2]
		}
		hc.Resources.Devices = append(hc.Resources.Devices, dm)
	}
	hc.Sysctls = lc.Sysctls
	hc.ShmSize = lc.ShmSize
	hc.SecurityOpt = append(hc.SecurityOpt, lc.SecurityOpt...)
	hc.Resources.MemorySwappiness = lc.MemSwappiness
	cfg.StopSignal = lc.StopSignal
}
