package main

import (
	"context"
	flag "github.com/spf13/pflag"
	"io"
	"os"
	"strings"

	"github.com/drover/drover/agent"
	"github.com/drover/drover/internal/lifecycle"
)

func runAgent(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("drover agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o agent.Options
	var labels string
	fs.StringVar(&o.Server, "server", os.Getenv("DROVER_URL"), "engine URL; env DROVER_URL")
	fs.StringVar(&o.Token, "token", os.Getenv("DROVER_TOKEN"), "registration token (POST /v1/registrationtokens); not needed once --state-dir holds a key; env DROVER_TOKEN")
	fs.StringVar(&o.Name, "name", "", "host name (default: this machine's)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/drover/agent", "where the agent keeps the key the engine issued (agent-key.json, mode 0600); a restart re-registers with it")
	fs.StringVar(&labels, "labels", "", "host labels k=v,k2=v2 (set when the host first registers)")
	fs.StringVar(&o.IP, "ip", "", "this host's address as other hosts reach it")
	fs.StringVar(&o.DockerHost, "docker-host", "", "Docker Engine URL (default: DOCKER_HOST or the local socket)")
	fs.BoolVar(&o.Overlay, "overlay", true, "put service containers on the host's subnet of the managed network (Docker network drover on drover0)")
	fs.StringVar(&o.IPAMDir, "ipam-dir", "/var/lib/drover/ipam", "where container and pod addresses are kept (shared with the CNI plugin)")
	fs.StringVar(&o.LBImage, "lb-image", "drover/lb-haproxy:"+version, "the image load balancer containers run (make images builds it)")
	fs.StringVar(&o.Listen, "listen", "127.0.0.1:10270", "address for /healthz and /metrics (empty: none)")
	lf := addLogFlags(fs)
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if labels != "" {
		o.Labels = map[string]string{}
		for _, kv := range strings.Split(labels, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || k == "" {
				return usageError{"--labels: " + kv + " is not k=v"}
			}
			o.Labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	o.Logger = log
	ctx, cancel := lifecycle.SignalContext(ctx, log)
	defer cancel()
	return agent.Run(ctx, o)
}
