package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const rootfsScript = "images/node/rootfs.sh"

// buildNode makes drover/node:<version> from the Debian base layer, the
// drover binary, bin/kube and the pause image's archive.
func buildNode(version, kube string) error {
	tag := "drover/node:" + version
	start := time.Now()
	if _, err := os.Stat(kube); err != nil {
		return fmt.Errorf("%s: %s is missing: build it first (make kube)", tag, kube)
	}
	base, err := debianBase("node", "")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "drover-node-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := compile(tag, "./cmd/drover", version, filepath.Join(dir, "drover")); err != nil {
		return err
	}
	if err := copyFile(kube, filepath.Join(dir, "kube")); err != nil {
		return err
	}
	pause := "drover/pause:" + version
	if out, err := exec.Command("docker", "save", "-o", filepath.Join(dir, "pause.tar"), pause).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: docker save %s (build it first): %v\n%s", tag, pause, err, out)
	}
	h := sha256.New()
	io.WriteString(h, base+"\n")
	for _, f := range []string{"drover", "kube"} {
		sum, err := fileSum(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		io.WriteString(h, f+" "+sum+"\n")
	}
	// The archive's bytes vary with nothing; the image id names the content.
	pid, _ := exec.Command("docker", "image", "inspect", "-f", "{{.Id}}", pause).Output()
	io.WriteString(h, "pause "+strings.TrimSpace(string(pid))+"\n")
	df := fmt.Sprintf(`FROM %s
COPY drover kube /usr/local/bin/
COPY pause.tar /usr/share/drover/images/pause.tar
RUN ln -sf /usr/local/bin/drover /usr/lib/cni/drover && mkdir -p /etc/cni/net.d /var/lib/drover
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
`, base)
	return dockerBuild(tag, "node", dir, df, hex.EncodeToString(h.Sum(nil)), start)
}

// debianBase makes a Debian layer (drover/<name>-base) once per version of
// rootfs.sh and package list (empty: the node's).
func debianBase(name, packages string) (string, error) {
	script, err := os.ReadFile(rootfsScript)
	if err != nil {
		return "", err
	}
	if packages != "" {
		script = append(script, "\n# packages: "+packages...)
	}
	sum := sha256.Sum256(script)
	tag := "drover/" + name + "-base:" + hex.EncodeToString(sum[:6])
	if err := exec.Command("docker", "image", "inspect", tag).Run(); err == nil {
		fmt.Fprintf(os.Stderr, "images: %s: up to date\n", tag)
		return tag, nil
	}
	dir, err := os.MkdirTemp("/var/tmp", "drover-node-base-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	tar := filepath.Join(dir, "rootfs.tar")
	fmt.Fprintf(os.Stderr, "images: %s: making the Debian root file system (debootstrap)\n", tag)
	cmd := exec.Command("bash", rootfsScript, tar)
	cmd.Env = append(os.Environ(), "ROOTFS_PACKAGES="+packages)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s: %s: %w", tag, rootfsScript, err)
	}
	fmt.Fprintf(os.Stderr, "images: %s: importing\n", tag)
	var errb bytes.Buffer
	imp := exec.Command("docker", "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", tar, tag)
	imp.Stderr = &errb
	if err := imp.Run(); err != nil {
		return "", fmt.Errorf("%s: docker import: %v: %s", tag, err, errb.String())
	}
	return tag, nil
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// buildLB makes drover/lb-haproxy:<version>: Debian's haproxy and the drover
// binary, running drover lb.
func buildLB(version string) error {
	tag := "drover/lb-haproxy:" + version
	start := time.Now()
	base, err := debianBase("lb", "haproxy ca-certificates")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "drover-lb-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := compile(tag, "./cmd/drover", version, filepath.Join(dir, "drover")); err != nil {
		return err
	}
	bin, err := fileSum(filepath.Join(dir, "drover"))
	if err != nil {
		return err
	}
	h := sha256.Sum256([]byte(base + "\n" + bin))
	df := fmt.Sprintf(`FROM %s
COPY drover /usr/local/bin/drover
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENTRYPOINT ["/usr/local/bin/drover", "lb"]
`, base)
	return dockerBuild(tag, "lb-haproxy", dir, df, hex.EncodeToString(h[:]), start)
}
