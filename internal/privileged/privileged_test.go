package privileged

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
)

func TestMissingFrom(t *testing.T) {
	status := "Name:\tx\nCapBnd:\t000001fffeffffff\n"
	if got := missingFrom(status, "40\n"); strings.Join(got, ",") != "SYS_RESOURCE" {
		t.Fatalf("missing = %v, want [SYS_RESOURCE]", got)
	}
	if got := missingFrom("CapBnd:\t000001ffffffffff\n", "40"); len(got) != 0 {
		t.Fatalf("full set: missing = %v", got)
	}
	// Inside a container of Docker 20.10: PERFMON, BPF and
	// CHECKPOINT_RESTORE are gone too, and Docker does not know them.
	if got := missingFrom("CapBnd:\t0000003ffeffffff\n", "40"); strings.Join(got, ",") != "SYS_RESOURCE" {
		t.Fatalf("in a container: missing = %v", got)
	}
	if got := missingFrom("CapBnd:\t000000000000000f\n", "3"); len(got) != 0 {
		t.Fatalf("an older kernel's full set: missing = %v", got)
	}
	if got := missingFrom("garbage", "40"); got != nil {
		t.Fatalf("unreadable status: %v", got)
	}
}

func TestApply(t *testing.T) {
	var hc container.HostConfig
	applyWith(&hc, nil)
	if !hc.Privileged || len(hc.CapAdd) != 0 {
		t.Fatalf("nothing missing: %+v", hc)
	}
	hc = container.HostConfig{Binds: []string{"/a:/a"}}
	applyWith(&hc, []string{"SYS_RESOURCE"})
	if hc.Privileged || strings.Join(hc.CapAdd, ",") != "ALL" || strings.Join(hc.CapDrop, ",") != "SYS_RESOURCE" {
		t.Fatalf("caps: %+v", hc)
	}
	if strings.Join(hc.Binds, " ") != "/a:/a /dev:/dev /sys:/sys /sys/fs/cgroup:/sys/fs/cgroup" {
		t.Fatalf("binds: %v", hc.Binds)
	}
}

// On this machine, a container made so can do what privileged containers
// do: make a cgroup, see every device, mount.
func TestIntegrationPrivilegedContainer(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the Docker Engine")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatal("the docker CLI is missing; this test needs a Docker Engine")
	}
	img, err := exec.Command("docker", "images", "-q", "drover/node-base").Output()
	if err != nil || len(strings.Fields(string(img))) == 0 {
		t.Fatal("no drover/node-base image: build the images first (make images; make test does)")
	}
	args := append([]string{"run", "--rm"}, DockerRunArgs()...)
	args = append(args, "--entrypoint", "/bin/sh", strings.Fields(string(img))[0], "-c",
		"mkdir /sys/fs/cgroup/memory/drover-privileged-test && rmdir /sys/fs/cgroup/memory/drover-privileged-test && test -e /dev/kmsg && mount -t tmpfs none /mnt && echo ok")
	out, err := exec.Command("docker", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Fatalf("docker %v: %v\n%s", args, err, out)
	}
}
