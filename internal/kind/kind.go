// Package kind makes drover hosts out of privileged Docker containers, as
// kind makes Kubernetes nodes: each runs the node image (Debian with
// containerd, runc, Docker and the drover binary) with its own Docker Engine
// inside, on a private Docker network, so drover up and drover up --join run
// in them as on real machines. Docker here keeps containers on
// fuse-overlayfs, so every host keeps /var/lib/docker and /var/lib/drover on
// volumes (overlayfs works on those).
package kind

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover/drover/internal/privileged"
	"github.com/drover/drover/node"
)

// Cluster is a private network of host containers.
type Cluster struct {
	Name    string // prefix of every Docker object
	Image   string // drover/node:<version>
	Subnet  string // e.g. 172.31.250.0/24
	Gateway string // the machine's address on it
	Images  string // a directory of image archives, mounted read-only at /var/lib/drover/images (AddHost withImages)
	Log     func(format string, args ...any)
	hosts   []string
}

// Host is one host container.
type Host struct {
	Name, IP string
	c        *Cluster
}

func (c *Cluster) logf(format string, args ...any) {
	if c.Log != nil {
		c.Log(format, args...)
	}
}

// Docker runs the docker CLI.
func Docker(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(out.String()), nil
}

// Create makes the network. Leftovers of an earlier run of the same name
// are removed first.
func (c *Cluster) Create(ctx context.Context) error {
	c.Destroy()
	_, err := Docker(ctx, "network", "create", "--subnet", c.Subnet, "--gateway", c.Gateway, c.Name)
	return err
}

// hostEntrypoint starts the host's own Docker Engine and keeps the
// container alive. The mount becomes shared so mounts made under it by
// containers reach the others, as on a machine booted by systemd.
const hostEntrypoint = `set -e
mount --make-rshared /
mkdir -p /var/lib/drover /etc/docker
dockerd --storage-driver=overlay2 --bip=172.18.250.1/24 --log-level=warn >/var/log/dockerd.log 2>&1 &
exec sleep infinity
`

// AddHost starts a host container at ip and waits until its Docker Engine
// answers. withImages mounts the image archives (the first host's drover
// up loads them; a joining host gets what it lacks from the engine).
func (c *Cluster) AddHost(ctx context.Context, name, ip string, withImages bool) (*Host, error) {
	args := append([]string{"run", "-d"}, privileged.DockerRunArgs()...)
	args = append(args, "--name", c.Name+"-"+name, "--hostname", name,
		"--network", c.Name, "--ip", ip,
		"--label", "io.drover.kind="+c.Name,
		"-v", c.Name+"-"+name+"-docker:/var/lib/docker",
		"-v", c.Name+"-"+name+"-drover:/var/lib/drover",
		"-v", "/lib/modules:/lib/modules:ro",
	)
	if c.Images != "" && withImages {
		args = append(args, "-v", c.Images+":/var/lib/drover/images:ro")
	}
	args = append(args, "--entrypoint", "/bin/sh", c.Image, "-c", hostEntrypoint)
	if _, err := Docker(ctx, args...); err != nil {
		return nil, err
	}
	c.hosts = append(c.hosts, name)
	h := &Host{Name: name, IP: ip, c: c}
	deadline := time.Now().Add(60 * time.Second)
	for {
		if v, err := h.Exec(ctx, "docker", "info", "--format", "{{.ServerVersion}}"); err == nil {
			c.logf("host %s at %s: its Docker Engine %s answers", name, ip, v)
			return h, nil
		}
		if time.Now().After(deadline) {
			logs, _ := h.Exec(ctx, "cat", "/var/log/dockerd.log")
			return nil, fmt.Errorf("host %s: its Docker Engine did not start:\n%s", name, logs)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// Exec runs a command in the host container.
func (h *Host) Exec(ctx context.Context, args ...string) (string, error) {
	return Docker(ctx, append([]string{"exec", h.c.Name + "-" + h.Name}, args...)...)
}

// ReadFile reads a file of the host container.
func (h *Host) ReadFile(ctx context.Context, path string) ([]byte, error) {
	out, err := h.Exec(ctx, "cat", path)
	return []byte(out), err
}

// Remove deletes the host container and its volumes, as a machine that
// is switched off for good.
func (h *Host) Remove() {
	n := h.c.Name + "-" + h.Name
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	Docker(ctx, "rm", "-f", "-v", n)
	Docker(ctx, "volume", "rm", "-f", n+"-docker", n+"-drover")
	node.RemoveCgroupRoot("/drover/" + h.Name)
}

// Destroy removes every host container, volume and the network of the
// cluster's name (also those of an earlier run).
func (c *Cluster) Destroy() {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ids, _ := Docker(ctx, "ps", "-aq", "--filter", "label=io.drover.kind="+c.Name)
	if ids != "" {
		Docker(ctx, append([]string{"rm", "-f", "-v"}, strings.Fields(ids)...)...)
	}
	vols, _ := Docker(ctx, "volume", "ls", "-q", "--filter", "name="+c.Name+"-")
	if vols != "" {
		Docker(ctx, append([]string{"volume", "rm", "-f"}, strings.Fields(vols)...)...)
	}
	Docker(ctx, "network", "rm", c.Name)
	// The hosts' kubelets made cgroups in this machine's hierarchies.
	for _, h := range c.hosts {
		node.RemoveCgroupRoot("/drover/" + h)
	}
}

// SaveImages writes the images into one archive in dir (for Images).
func SaveImages(ctx context.Context, dir string, images ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	_, err := Docker(ctx, append([]string{"save", "-o", filepath.Join(dir, "drover-images.tar")}, images...)...)
	return err
}
