// Package privileged gives a container what docker run --privileged gives
// on machines where --privileged cannot work. Docker 20.10 hands a
// privileged container every capability the kernel knows; on a machine
// whose root lacks one (our VMs have no CAP_SYS_RESOURCE) runc then fails
// with "unable to apply caps: operation not permitted". There the container
// gets every capability this machine has, no seccomp, AppArmor or SELinux
// confinement, unmasked /proc, every device, and /sys and the cgroup
// hierarchies read-write, which is what privileged means.
package privileged

import (
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types/container"
)

// capNames are the capabilities by number (linux/capability.h).
var capNames = []string{"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE",
	"SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
	"SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"}

var (
	once    sync.Once
	missing []string
)

// Missing lists the capabilities (Docker's names) the kernel knows and this
// process's bounding set lacks: those --privileged would ask for in vain.
func Missing() []string {
	once.Do(func() {
		missing = missingFrom(readFile("/proc/self/status"), readFile("/proc/sys/kernel/cap_last_cap"))
	})
	return missing
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func missingFrom(status, lastCap string) []string {
	var bnd uint64
	found := false
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			if n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64); err == nil {
				bnd, found = n, true
			}
		}
	}
	last, err := strconv.Atoi(strings.TrimSpace(lastCap))
	if !found || err != nil {
		return nil
	}
	var out []string
	// Docker 20.10 knows capabilities up to AUDIT_READ (37): it neither
	// adds later ones with ALL nor accepts them in CapDrop.
	for i := 0; i <= last && i <= 37; i++ {
		if bnd&(1<<i) == 0 {
			out = append(out, capNames[i])
		}
	}
	return out
}

// Apply makes hc privileged: --privileged itself where this machine allows
// it, else its equivalent without the missing capabilities.
func Apply(hc *container.HostConfig) {
	applyWith(hc, Missing())
}

func applyWith(hc *container.HostConfig, missing []string) {
	if len(missing) == 0 {
		hc.Privileged = true
		return
	}
	hc.Privileged = false
	hc.CapAdd = []string{"ALL"}
	hc.CapDrop = append([]string(nil), missing...)
	hc.SecurityOpt = append(hc.SecurityOpt, "seccomp=unconfined", "apparmor=unconfined", "label=disable")
	// Nothing of /proc masked or read-only (the CLI's systempaths=unconfined).
	hc.MaskedPaths, hc.ReadonlyPaths = []string{}, []string{}
	hc.Resources.DeviceCgroupRules = append(hc.Resources.DeviceCgroupRules, "a *:* rwm")
	hc.Binds = append(hc.Binds, "/dev:/dev", "/sys:/sys", "/sys/fs/cgroup:/sys/fs/cgroup")
}

// DockerRunArgs are the docker run flags Apply stands for.
func DockerRunArgs() []string {
	if len(Missing()) == 0 {
		return []string{"--privileged"}
	}
	var hc container.HostConfig
	Apply(&hc)
	args := []string{"--cap-add", "ALL"}
	for _, c := range hc.CapDrop {
		args = append(args, "--cap-drop", c)
	}
	for _, s := range hc.SecurityOpt {
		args = append(args, "--security-opt", s)
	}
	args = append(args, "--security-opt", "systempaths=unconfined")
	for _, r := range hc.Resources.DeviceCgroupRules {
		args = append(args, "--device-cgroup-rule", r)
	}
	for _, b := range hc.Binds {
		args = append(args, "-v", b)
	}
	return args
}
