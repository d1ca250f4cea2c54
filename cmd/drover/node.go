package main

import (
	"context"
	"errors"
	"fmt"
	flag "github.com/spf13/pflag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/drover/drover/internal/lifecycle"
	"github.com/drover/drover/node"
)

// runNode: drover node kubelet | exec, the entry points of the kubernetes
// stack's containers (image drover/node).
func runNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const use = "usage: drover node kubelet [flags] | drover node exec [--kubeconfig-cert NAME] [--kubeconfig FILE] [--apiserver URL] -- COMMAND [ARG...]"
	if len(args) == 0 {
		return usageError{use}
	}
	switch args[0] {
	case "kubelet":
		return runNodeKubelet(ctx, args[1:], stderr)
	case "exec":
		return runNodeExec(args[1:], stderr)
	}
	return usageError{fmt.Sprintf("unknown node command %q; %s", args[0], use)}
}

func runNodeKubelet(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover node kubelet", flag.ContinueOnError)
	fs.SetInterspersed(false) // what follows is the kubelet's
	fs.SetOutput(stderr)
	var o node.Options
	ef := engineFlags(fs)
	fs.StringVar(&o.Host, "host", os.Getenv("DROVER_HOST_NAME"), "this node's name: the engine host's (env DROVER_HOST_NAME, set by the agent)")
	fs.StringVar(&o.HostIP, "host-ip", os.Getenv("DROVER_HOST_IP"), "this node's address (env DROVER_HOST_IP, set by the agent)")
	fs.StringVar(&o.APIServer, "apiserver", "", "the Kubernetes apiserver URL")
	fs.StringVar(&o.PauseImage, "pause-image", "", "the pod sandbox image (bundled in the node image)")
	fs.StringVar(&o.ImagesDir, "images-dir", "/usr/share/drover/images", "image archives to import into containerd before the kubelet starts")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", node.DefaultCNIConf, "where drover net writes the CNI config")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", node.DefaultCNIBinDir, "CNI plugins (loopback from Debian, drover)")
	fs.StringVar(&o.CgroupRoot, "cgroup-root", "", "the kubelet's cgroup root (default /drover/<host>)")
	fs.StringVar(&o.Kube, "kube", "/usr/local/bin/kube", "the kube binary")
	fs.StringVar(&o.Containerd, "containerd", "/usr/bin/containerd", "the containerd binary")
	fs.StringVar(&o.Ctr, "ctr", "/usr/bin/ctr", "the ctr binary (image imports)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:10274", "address for /healthz and /metrics (empty: none)")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	o.KubeletArgs = fs.Args()
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	if o.PauseImage == "" {
		return usageError{"--pause-image is needed (drover/pause:<version>)"}
	}
	if eng, err := ef.client(); err == nil {
		o.Engine = eng
	} else {
		log.Info("no engine credentials: images come only from --images-dir")
	}
	o.Logger = log
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return node.Run(ctx, o)
}

// runNodeExec writes a kubeconfig from the certificates the agent handed
// the container, fills {host}, {hostIP} and {kubeconfig} in the command's
// arguments, and becomes the command.
func runNodeExec(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover node exec", flag.ContinueOnError)
	fs.SetInterspersed(false) // what follows is the command
	fs.SetOutput(stderr)
	cert := fs.String("kubeconfig-cert", "", "engine certificate NAME (NAME.crt, NAME.key in /run/drover) the kubeconfig authenticates with")
	out := fs.String("kubeconfig", "/tmp/kubeconfig", "where to write the kubeconfig")
	apiserver := fs.String("apiserver", "https://127.0.0.1:6443", "the apiserver URL the kubeconfig names")
	user := fs.String("user", "", "the kubeconfig's user name (default: the certificate's)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cmd := fs.Args()
	if len(cmd) == 0 {
		return usageError{"drover node exec: no command given after --"}
	}
	if *cert != "" {
		kc, err := node.Kubeconfig(node.CertsDir, *cert, *user, *apiserver)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*out, kc, 0o600); err != nil {
			return err
		}
	}
	host, hostIP := os.Getenv("DROVER_HOST_NAME"), os.Getenv("DROVER_HOST_IP")
	r := strings.NewReplacer("{host}", host, "{hostIP}", hostIP, "{kubeconfig}", *out)
	for i := range cmd {
		cmd[i] = r.Replace(cmd[i])
	}
	if (host == "" || hostIP == "") && strings.Contains(strings.Join(args, " "), "{host") {
		return errors.New("drover node exec: {host} or {hostIP} used, but the agent set no DROVER_HOST_NAME or DROVER_HOST_IP")
	}
	path := cmd[0]
	if !filepath.IsAbs(path) {
		p, err := exec.LookPath(path)
		if err != nil {
			return err
		}
		path = p
	}
	return syscall.Exec(path, cmd, os.Environ())
}
