// Command drover is the one multi-call binary: drover server | agent | kubernetes-agent | stack | host | ps | version | help.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	overlay "github.com/drover/drover/net"
)

func main() {
	// Installed as /opt/cni/bin/drover, the binary is a CNI plugin: the
	// runtime calls it with CNI_COMMAND set and no arguments.
	if len(os.Args) == 1 && os.Getenv("CNI_COMMAND") != "" {
		overlay.CNIMain()
		return
	}
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "drover:", err)
		os.Exit(exitCode(err))
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	if _, ok := err.(usageError); ok {
		return 2
	}
	return 1
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	// subcommands complete in the shell.
	subcommands []string
}

func commands() []command {
	return []command{
		{"server", "run the engine: REST API, event stream, store (embedded or external etcd)", runServer, nil},
		{"agent", "run the host agent: register, heartbeat, run this host's containers through Docker", runAgent, nil},
		{"kubernetes-agent", "keep Kubernetes objects and engine objects in step, both ways", runKubernetesAgent, nil},
		{"dns", "serve DNS for engine and Kubernetes names, forwarding the rest", runDNS, nil},
		{"net", "program this host's overlay network (bridge, VXLAN, routes) from the engine", runNet, nil},
		{"metadata", "serve the metadata service: each container reads its own and the shared views", runMetadata, nil},
		{"up", "run Kubernetes on this host: engine, agent, infra and kubernetes stacks, kubeconfig (--join URL --token T adds a host)", runUp, nil},
		{"cloudprovider", "run the drover cloud provider: LoadBalancer Services as HAProxy LBs, nodes from hosts", runCloudProvider, nil},
		{"ingress-controller", "serve Kubernetes Ingresses with drover's HAProxy load balancers", runIngressController, nil},
		{"kubectld", "serve the /v1-kubectl API (Kubernetes YAML with engine keys) and run stacks of kind kubernetes", runKubectld, nil},
		{"lb", "run a load balancer container's HAProxy, configured from the engine (--service ID)", runLB, nil},
		{"down", "undo drover up on this host: its containers, kube-proxy's rules, the overlay, /var/lib/drover (--keep-data keeps it)", runDown, nil},
		{"node", "node kubelet | exec: the entry points of the kubernetes stack's containers (containerd and kubelet, kubeconfigs)", runNode, nil},
		{"stack", "stacks: up NAME -f FILE... | up NAME --kind kubernetes -f app.yaml|CHART_DIR | ls | rm NAME | rollback NAME", runStack, []string{"up", "ls", "rm", "rollback"}},
		{"service", "services: ls [--stack NAME]", runService, []string{"ls"}},
		{"host", "hosts: ls (state, address, labels)", runHost, []string{"ls"}},
		{"ps", "the containers (--stack NAME for one stack)", runPs, nil},
		{"inspect", "print one object (KIND NAME): stack, service, container, host, ...", runInspect, []string{"stack", "service", "container", "host", "network", "certificate", "apikey", "registrationtoken"}},
		{"image", "image push IMAGE...: put images into the engine, where agents without them load them (no registry needed) | image ls", runImage, nil},
		{"cert", "cert init: make the Kubernetes stack's CA and certificates in the engine", runCert, nil},
		{"kubeconfig", "print the Kubernetes admin's kubeconfig (--apiserver URL)", runKubeconfig, nil},
		{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "drover", version)
			return nil
		}, nil},
	}
}
