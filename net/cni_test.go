package overlay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/drover/drover/internal/testenv"
)

// cniCall runs the drover binary as a CNI plugin, the way a container
// runtime does: CNI_* in the environment, the network configuration on
// stdin, inside the host's network namespace (nsenter, as the runtime runs
// in the host's). It returns stdout and the exit error.
func cniCall(t *testing.T, host netns.NsHandle, command, id, podNS, conf string) ([]byte, error) {
	t.Helper()
	bin := testenv.DroverBinary(t)
	cmd := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/fd/%d", os.Getpid(), int(host)), "--", bin)
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(bin), "PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	if podNS != "" {
		cmd.Env = append(cmd.Env, "CNI_NETNS="+podNS)
	}
	cmd.Stdin = strings.NewReader(conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %v: %s %s", command, err, out.Bytes(), errb.Bytes())
	}
	return out.Bytes(), err
}

// pluginConf is the conflist's plugin entry, with the name and version a
// runtime adds, and extra members.
func pluginConf(t *testing.T, conflist []byte, extra map[string]any) string {
	t.Helper()
	var cl struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	must(t, json.Unmarshal(conflist, &cl))
	p := cl.Plugins[0]
	p["cniVersion"], p["name"] = cl.CNIVersion, cl.Name
	for k, v := range extra {
		p[k] = v
	}
	b, _ := json.Marshal(p)
	return string(b)
}

func TestIntegrationCNIPlugin(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nsenter"); err != nil {
		t.Fatal("nsenter (util-linux) is needed to run the plugin in a host namespace: apt-get install util-linux")
	}
	l := newLab(t)
	h := l.addHost("a", 1, "10.42.9.0/24")
	l.program(h)
	listen(t, h.ns, ServiceIP+":80")
	ipamDir := t.TempDir()
	// The conflist says 1.0.0 (containerd 1.6/1.7 take no later); a 1.1
	// runtime sends 1.1.0, which STATUS and GC need. Both are exercised:
	// conf10 adds pod2 below.
	conf := pluginConf(t, Conflist(h.subnet, 1450, ipamDir), map[string]any{"cniVersion": "1.1.0"})
	conf10 := pluginConf(t, Conflist(h.subnet, 1450, ipamDir), nil)
	if !strings.Contains(conf10, `"cniVersion":"1.0.0"`) {
		t.Fatalf("the conflist's version: %s", conf10)
	}
	nsPath := func(ns netns.NsHandle) string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), int(ns)) }

	if out, err := cniCall(t, h.ns, "VERSION", "", "", `{"cniVersion":"1.1.0"}`); err != nil || !strings.Contains(string(out), `"1.1.0"`) {
		t.Fatalf("VERSION: %s %v", out, err)
	}
	if _, err := cniCall(t, h.ns, "STATUS", "", "", conf); err != nil {
		t.Fatalf("STATUS with the bridge up: %v", err)
	}
	add := func(id string, pod netns.NsHandle) net.IP {
		t.Helper()
		c := conf
		if id == "pod2" {
			c = conf10
		}
		out, err := cniCall(t, h.ns, "ADD", id, nsPath(pod), c)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			IPs []struct{ Address, Gateway string }
			DNS struct{ Nameservers []string }
		}
		must(t, json.Unmarshal(out, &res))
		if len(res.IPs) != 1 || len(res.DNS.Nameservers) != 1 || res.DNS.Nameservers[0] != ServiceIP || res.IPs[0].Gateway != "10.42.9.1" {
			t.Fatalf("ADD %s answered %s", id, out)
		}
		ip, _, err := net.ParseCIDR(res.IPs[0].Address)
		must(t, err)
		return ip
	}
	pod1, pod2 := newNS(t), newNS(t)
	ip1, ip2 := add("pod1", pod1), add("pod2", pod2)
	if !h.subnet.Contains(ip1) || !h.subnet.Contains(ip2) || ip1.Equal(ip2) {
		t.Fatalf("pods got %s and %s, want two addresses of %s", ip1, ip2, h.subnet)
	}
	// Real traffic: pod to pod on the bridge, pod to the host's 169.254.169.250.
	listen(t, pod2, ip2.String()+":8080")
	c, err := dial(pod1, ip2.String()+":8080")
	if err != nil {
		t.Fatalf("pod1 -> pod2: %v", err)
	}
	if from, err := ask(c); err != nil || !strings.HasPrefix(from, ip1.String()+":") {
		t.Fatalf("pod2 saw %q (%v), want %s", from, err, ip1)
	}
	c.Close()
	if c, err := dial(pod1, ServiceIP+":80"); err != nil {
		t.Fatalf("pod1 -> %s: %v", ServiceIP, err)
	} else {
		c.Close()
	}
	// ADD again (a retried call) keeps the address.
	if again := add("pod1", pod1); !again.Equal(ip1) {
		t.Fatalf("a repeated ADD of pod1 moved it from %s to %s", ip1, again)
	}
	// drover net restarted over its state: CHECK still holds.
	h.prog.Close()
	h.prog = nil
	if e, s, m := l.program(h); e+s+m != 0 {
		t.Fatalf("re-programming under running pods made %d changes", e+s+m)
	}
	if _, err := cniCall(t, h.ns, "CHECK", "pod1", nsPath(pod1), conf); err != nil {
		t.Fatalf("CHECK pod1: %v", err)
	}
	// GC: the runtime has only pod1 now.
	gc := pluginConf(t, Conflist(h.subnet, 1450, ipamDir), map[string]any{"cniVersion": "1.1.0", "cni.dev/valid-attachments": []any{map[string]any{"containerID": "pod1", "ifname": "eth0"}}})
	if _, err := cniCall(t, h.ns, "GC", "", "", gc); err != nil {
		t.Fatalf("GC: %v", err)
	}
	ipam, _ := NewIPAM(ipamDir, h.subnet)
	if used, _ := ipam.InUse(); len(used) != 1 || used[ip1.String()] == "" {
		t.Fatalf("after GC keeping pod1: addresses in use %v", used)
	}
	if _, err := h.h.LinkByName(hostVethName("pod2", "eth0")); err == nil {
		t.Fatal("GC left pod2's host veth")
	}
	// DEL is idempotent, and frees the address.
	for i := 0; i < 2; i++ {
		if _, err := cniCall(t, h.ns, "DEL", "pod1", nsPath(pod1), conf); err != nil {
			t.Fatalf("DEL pod1 (call %d): %v", i+1, err)
		}
	}
	if used, _ := ipam.InUse(); len(used) != 0 {
		t.Fatalf("after DEL: addresses in use %v", used)
	}
	if _, err := h.h.LinkByName(hostVethName("pod1", "eth0")); err == nil {
		t.Fatal("DEL left pod1's host veth")
	}
	// Without the bridge, STATUS says the plugin cannot serve.
	br, _ := h.h.LinkByName(BridgeName)
	must(t, h.h.LinkDel(br))
	if out, err := cniCall(t, h.ns, "STATUS", "", "", conf); err == nil || !strings.Contains(string(out), `"code": 50`) && !strings.Contains(string(out), `"code":50`) {
		t.Fatalf("STATUS without the bridge: %s %v; want code 50", out, err)
	}
}
