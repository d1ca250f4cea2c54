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
}

func commands() []command {
	return []command{
		{"server", "run the engine: REST API, event stream, store (embedded or external etcd)", runServer},
		{"agent", "run the host agent: register, heartbeat, run this host's containers through Docker", runAgent},
		{"kubernetes-agent", "keep Kubernetes objects and engine objects in step, both ways", runKubernetesAgent},
		{"dns", "serve DNS for engine and Kubernetes names, forwarding the rest", runDNS},
		{"net", "program this host's overlay network (bridge, VXLAN, routes) from the engine", runNet},
		{"metadata", "serve the metadata service: each container reads its own and the shared views", runMetadata},
		{"up", "run Kubernetes on this host: engine, agent, infra and kubernetes stacks, kubeconfig (--join URL --token T adds a host)", runUp},
		{"cloudprovider", "run the drover cloud provider: LoadBalancer Services as HAProxy LBs, nodes from hosts", runCloudProvider},
		{"ingress-controller", "serve Kubernetes Ingresses with drover's HAProxy load balancers", runIngressController},
		{"kubectld", "serve the /v1-kubectl API (Kubernetes YAML with engine keys) and run stacks of kind kubernetes", runKubectld},
		{"lb", "run a load balancer container's HAProxy, configured from the engine (--service ID)", runLB},
		{"down", "undo drover up on this host: its containers, kube-proxy's rules, the overlay, /var/lib/drover (--keep-data keeps it)", runDown},
		{"node", "node kubelet | exec: the entry points of the kubernetes stack's containers (containerd and kubelet, kubeconfigs)", runNode},
		{"stack", "stack up NAME -f docker-compose.yml [-f rancher-compose.yml] | up NAME --kind kubernetes -f app.yaml|CHART_DIR | ls | rm NAME | rollback NAME", runStack},
		{"host", "host ls: the hosts, their state and labels", runHost},
		{"ps", "the containers (--stack NAME for one stack)", runPs},
		{"image", "image push IMAGE...: put images into the engine, where agents without them load them (no registry needed) | image ls", runImage},
		{"cert", "cert init: make the Kubernetes stack's CA and certificates in the engine", runCert},
		{"kubeconfig", "print the Kubernetes admin's kubeconfig (--apiserver URL)", runKubeconfig},
		{"version", "print the version", func(_ context.Context, _ []string, stdout, _ io.Writer) error {
			fmt.Fprintln(stdout, "drover", version)
			return nil
		}},
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		if len(args) == 0 {
			return usageError{"no command given"}
		}
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	usage(stderr)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: drover COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "  help               show this text\n\nRun 'drover COMMAND -h' for a command's flags.")
}
