// Package node runs a Kubernetes node inside a container of the kubernetes
// stack: containerd (the runtime the kubelet talks to) and the kubelet, side
// by side in one container so they share one mount namespace, configured by
// drover from what the agent handed the container (its certificates in
// /run/drover) and the host it landed on. It also writes the kubeconfigs the
// other components of the stack run with (drover node exec).
//
// Why the settings are what they are:
//
//   - restrict_oom_score_adj: the kubelet asks for oom_score_adj -998 for
//     every pod sandbox; lowering it needs CAP_SYS_RESOURCE, which some VMs
//     (ours) do not give even to root, and runc then fails with "can't get
//     final child's PID from pipe: EOF". containerd clamps the value instead.
//   - cgroupfs, failCgroupV1 false: our hosts run cgroup v1 without systemd
//     in the container; Kubernetes 1.35+ refuses v1 unless told.
//   - cgroupRoot /drover/<host>: several nodes may share one kernel (the
//     tests' hosts are containers); each kubelet cleans up pod cgroups it
//     does not know under its root, so the roots must differ.
//   - clusterDNS 169.254.169.250: drover dns answers cluster and engine
//     names on every host at that address (the infra stack).
package node

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
)

// Paths inside the node container.
const (
	CertsDir         = "/run/drover"
	ContainerdSocket = "/run/containerd/containerd.sock"
	DefaultCNIBinDir = "/usr/lib/cni"
	DefaultCNIConf   = "/var/lib/drover/cni/net.d"
)

// Config is what a node's files are made from.
type Config struct {
	Host         string // the engine host's name = the node's name
	HostIP       string // the node IP (never loopback)
	APIServer    string // https://IP:6443
	CertsDir     string
	ClusterDNS   string
	ClusterDom   string
	PauseImage   string
	CNIBinDir    string
	CNIConfDir   string
	StateDir     string // containerd's root
	KubeletDir   string
	CgroupRoot   string
	HealthzPort  int
	MaxPods      int
	KubeReserved string
}

func (c *Config) defaults() {
	if c.CertsDir == "" {
		c.CertsDir = CertsDir
	}
	if c.ClusterDNS == "" {
		c.ClusterDNS = "169.254.169.250"
	}
	if c.ClusterDom == "" {
		c.ClusterDom = "cluster.local"
	}
	if c.CNIBinDir == "" {
		c.CNIBinDir = DefaultCNIBinDir
	}
	if c.CNIConfDir == "" {
		c.CNIConfDir = DefaultCNIConf
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/containerd"
	}
	if c.KubeletDir == "" {
		c.KubeletDir = "/var/lib/kubelet"
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/drover/" + c.Host
	}
	if c.HealthzPort == 0 {
		c.HealthzPort = 10248
	}
	if c.MaxPods == 0 {
		c.MaxPods = 110
	}
}

var containerdTmpl = template.Must(template.New("containerd").Parse(`# Written by drover node; changes are overwritten.
version = 2
root = "{{.StateDir}}"
state = "/run/containerd"

[grpc]
  address = "` + ContainerdSocket + `"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.PauseImage}}"
  # This host may not lower oom_score_adj (no CAP_SYS_RESOURCE): clamp the
  # kubelet's -998 instead of failing every pod sandbox in runc.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.CNIBinDir}}"
    conf_dir = "{{.CNIConfDir}}"
`))

// ContainerdConfig is containerd's config.toml (containerd 1.6/1.7, config
// version 2).
func ContainerdConfig(c Config) []byte {
	c.defaults()
	var b bytes.Buffer
	if err := containerdTmpl.Execute(&b, c); err != nil {
		panic(err)
	}
	return b.Bytes()
}

var kubeletTmpl = template.Must(template.New("kubelet").Parse(`# Written by drover node; changes are overwritten.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {{.CertsDir}}/k8s-ca.crt
authorization:
  mode: Webhook
tlsCertFile: {{.CertsDir}}/k8s-kubelet-serving-{{.Host}}.crt
tlsPrivateKeyFile: {{.CertsDir}}/k8s-kubelet-serving-{{.Host}}.key
containerRuntimeEndpoint: unix://` + ContainerdSocket + `
cgroupDriver: cgroupfs
cgroupRoot: {{.CgroupRoot}}
failCgroupV1: false
failSwapOn: false
clusterDNS:
- {{.ClusterDNS}}
clusterDomain: {{.ClusterDom}}
resolvConf: /etc/resolv.conf
healthzBindAddress: 127.0.0.1
healthzPort: {{.HealthzPort}}
maxPods: {{.MaxPods}}
serializeImagePulls: false
# The machine is shared with other work: evict only when truly short.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  imagefs.available: 2%
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
`))

// KubeletConfig is the kubelet's KubeletConfiguration file.
func KubeletConfig(c Config) []byte {
	c.defaults()
	var b bytes.Buffer
	if err := kubeletTmpl.Execute(&b, c); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// Kubeconfig is a kubeconfig for user with the certificate NAME.crt and
// NAME.key of dir (the cluster CA is dir/k8s-ca.crt). It names the files
// rather than embedding them: client-go reloads a client certificate given
// as files, so a certificate the agent rewrites after drover cert rotate is
// used without a restart.
func Kubeconfig(dir, name, user, server string) ([]byte, error) {
	for _, f := range []string{"k8s-ca.crt", name + ".crt", name + ".key"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return nil, fmt.Errorf("%w (the container's labels must ask for it: %s)", err, "io.drover.container.certificates")
		}
	}
	if user == "" {
		user = strings.TrimPrefix(name, "k8s-")
	}
	q := strconv.Quote
	return []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: drover
  cluster:
    server: %s
    certificate-authority: %s
users:
- name: %s
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: drover
  context: {cluster: drover, user: %s}
current-context: drover
`, q(server), q(filepath.Join(dir, "k8s-ca.crt")), q(user), q(filepath.Join(dir, name+".crt")), q(filepath.Join(dir, name+".key")), q(user))), nil
}
