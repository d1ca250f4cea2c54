package builtin

import (
	"context"
	"strings"
	"testing"

	"github.com/drover/drover/stacks"
)

var answers = map[string]string{"DROVER_VERSION": "v1", "APISERVER": "https://10.0.0.1:6443", "SERVICE_CIDR": "10.43.0.0/16", "CLUSTER_CIDR": "10.42.0.0/16"}

// Each built-in stack parses as a user's stack would, and places its
// services by the roles the README names.
func TestBuiltinStacksParse(t *testing.T) {
	placement := map[string]string{
		"infra/net": "global", "infra/dns": "global", "infra/metadata": "global",
		"kubernetes/etcd":                    "etcd=true",
		"kubernetes/kube-apiserver":          "global controlplane=true",
		"kubernetes/kube-controller-manager": "global controlplane=true",
		"kubernetes/kube-scheduler":          "global controlplane=true",
		"kubernetes/kubelet":                 "global worker=true",
		"kubernetes/kube-proxy":              "global worker=true",
		"kubernetes/kubernetes-agent":        "controlplane=true",
		"kubernetes/ingress-controller":      "controlplane=true",
		"kubernetes/cloudprovider":           "controlplane=true",
		"kubernetes/kubectld":                "controlplane=true",
	}
	seen := 0
	for _, st := range Stacks {
		svcs, err := stacks.Parse(context.Background(), st.Name, []stacks.File{{Name: st.Name + ".yml", Content: st.Compose}}, nil, answers)
		if err != nil {
			t.Fatalf("%s: %v", st.Name, err)
		}
		for _, s := range svcs {
			key := st.Name + "/" + s.Name
			want, ok := placement[key]
			if !ok {
				t.Errorf("%s: a service the test does not know; say where it goes", key)
				continue
			}
			seen++
			lc := s.Spec.LaunchConfig
			var got []string
			if stacks.LabelBool(lc.Labels, "scheduler.global") {
				got = append(got, "global")
			}
			if v, ok := stacks.Label(lc.Labels, "scheduler.affinity:host_label"); ok {
				got = append(got, v)
			}
			if g := strings.Join(got, " "); g != want {
				t.Errorf("%s placed %q, want %q", key, g, want)
			}
			if !strings.HasSuffix(lc.Image, ":v1") {
				t.Errorf("%s: image %q is not the answer's version", key, lc.Image)
			}
			if lc.NetworkMode != "host" {
				t.Errorf("%s: network_mode %q, want host", key, lc.NetworkMode)
			}
			for _, a := range lc.Command {
				if strings.Contains(a, "${") {
					t.Errorf("%s: unfilled %q", key, a)
				}
			}
		}
	}
	if seen != len(placement) {
		t.Errorf("saw %d services, want %d", seen, len(placement))
	}
	if _, err := Get("nope"); err == nil || !strings.Contains(err.Error(), "infra") {
		t.Errorf("Get(nope) = %v, want an error listing the stacks", err)
	}
}

// The kubelet runs in the host's PID namespace, and its volumes keep their
// propagation and read-only options.
func TestKubeletLaunchConfig(t *testing.T) {
	st, _ := Get("kubernetes")
	svcs, err := stacks.Parse(context.Background(), "kubernetes", []stacks.File{{Name: "k.yml", Content: st.Compose}}, nil, answers)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range svcs {
		if s.Name != "kubelet" {
			continue
		}
		lc := s.Spec.LaunchConfig
		if lc.Pid != "host" || !lc.Privileged {
			t.Errorf("kubelet pid %q privileged %v", lc.Pid, lc.Privileged)
		}
		if !contains(lc.Volumes, "/lib/modules:/lib/modules:ro") {
			t.Errorf("volumes %v lack /lib/modules read-only", lc.Volumes)
		}
		if !contains(lc.Command, "--apiserver=https://10.0.0.1:6443") {
			t.Errorf("command %v", lc.Command)
		}
		return
	}
	t.Fatal("no kubelet service")
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
