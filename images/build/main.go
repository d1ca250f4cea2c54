// Command build makes the images drover's stacks run, from this repository
// alone (no registry exists here): each is FROM scratch with one static Go
// binary. An image is built again only when its binary changed: the
// binary's SHA-256 is kept as the image's label io.drover.content, and an
// image that carries the same one is left alone.
//
//	drover/drover:<version>  the drover binary (every drover daemon)
//	drover/pause:<version>   holds a pod's namespaces (images/pause)
//	drover/etcd:<version>    etcd's own server, at the version drover embeds (images/etcd)
//	drover/node:<version>    a Kubernetes node and test host: a Debian rootfs
//	                         (images/node/rootfs.sh: containerd, runc, iptables,
//	                         ...) with bin/kube, the drover binary and the pause
//	                         image's archive (imported into containerd at start)
//	drover/lb-haproxy:<version>  Debian's haproxy and the drover binary (drover lb)
//
// The node image's Debian layer (drover/node-base:<hash of rootfs.sh>) is
// made once with debootstrap and kept; the rest is rebuilt when its inputs'
// hash (the label io.drover.content) changes.
//
// Usage: go run ./images/build [-version V] [-kube bin/kube] [-list] [image ...]
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Image is one image this command makes.
type Image struct {
	Name       string // drover/<Name>:<version>
	Package    string // the Go main package
	Binary     string // its path in the image
	Entrypoint []string
}

// Images are every image, in build order.
var Images = []Image{
	{Name: "drover", Package: "./cmd/drover", Binary: "/drover", Entrypoint: []string{"/drover"}},
	{Name: "pause", Package: "./images/pause", Binary: "/pause", Entrypoint: []string{"/pause"}},
	{Name: "etcd", Package: "./images/etcd", Binary: "/usr/local/bin/etcd", Entrypoint: []string{"/usr/local/bin/etcd"}},
}

func main() {
	version := flag.String("version", "", "image tag (default: git describe, or dev)")
	list := flag.Bool("list", false, "print the image names and exit")
	kube := flag.String("kube", "bin/kube", "the kube binary the node image holds (make kube)")
	flag.Parse()
	if *version == "" {
		*version = gitVersion()
	}
	want := map[string]bool{}
	for _, a := range flag.Args() {
		want[strings.TrimPrefix(strings.TrimSuffix(a, ":"+*version), "drover/")] = true
	}
	if *list {
		for _, im := range Images {
			fmt.Printf("drover/%s:%s\n", im.Name, *version)
		}
		fmt.Printf("drover/node:%s\ndrover/lb-haproxy:%s\n", *version, *version)
		return
	}
	for _, im := range Images {
		if len(want) > 0 && !want[im.Name] {
			continue
		}
		if err := build(im, *version); err != nil {
			fmt.Fprintln(os.Stderr, "images:", err)
			os.Exit(1)
		}
	}
	if len(want) == 0 || want["node"] {
		if err := buildNode(*version, *kube); err != nil {
			fmt.Fprintln(os.Stderr, "images:", err)
			os.Exit(1)
		}
	}
	if len(want) == 0 || want["lb-haproxy"] {
		if err := buildLB(*version); err != nil {
			fmt.Fprintln(os.Stderr, "images:", err)
			os.Exit(1)
		}
	}
}

func gitVersion() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "dev"
	}
	return strings.TrimSpace(string(out))
}

// build compiles im's binary and builds its image unless an image with the
// same binary is already there.
func build(im Image, version string) error {
	tag := "drover/" + im.Name + ":" + version
	start := time.Now()
	dir, err := os.MkdirTemp("", "drover-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, filepath.Base(im.Binary))
	if err := compile(tag, im.Package, version, bin); err != nil {
		return err
	}
	sum, err := fileSum(bin)
	if err != nil {
		return err
	}
	var df bytes.Buffer
	fmt.Fprintf(&df, "FROM scratch\nCOPY %s %s\nENTRYPOINT [%q", filepath.Base(im.Binary), im.Binary, im.Entrypoint[0])
	for _, a := range im.Entrypoint[1:] {
		fmt.Fprintf(&df, ", %q", a)
	}
	df.WriteString("]\n")
	return dockerBuild(tag, im.Name, dir, df.String(), sum, start)
}

// compile builds a Go main package, static, with drover's version in it.
func compile(tag, pkg, version, out string) error {
	fmt.Fprintf(os.Stderr, "images: %s: compiling %s\n", tag, pkg)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X main.version="+version, "-o", out, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: go build %s: %v\n%s", tag, pkg, err, out)
	}
	return nil
}

// dockerBuild builds dir with dockerfile as tag, labelled with the hash of
// its inputs, unless an image of that tag carries the same hash already.
func dockerBuild(tag, name, dir, dockerfile, sum string, start time.Time) error {
	if have, _ := exec.Command("docker", "image", "inspect", "-f", `{{index .Config.Labels "io.drover.content"}}`, tag).Output(); strings.TrimSpace(string(have)) == sum {
		fmt.Fprintf(os.Stderr, "images: %s: up to date (%s)\n", tag, sum[:12])
		return nil
	}
	dockerfile += fmt.Sprintf("LABEL io.drover.content=%s io.drover.image=%s\n", sum, name)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "images: %s: building the image\n", tag)
	if out, err := exec.Command("docker", "build", "-q", "-t", tag, dir).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: docker build: %v\n%s", tag, err, out)
	}
	fmt.Fprintf(os.Stderr, "images: %s: built in %s (%s)\n", tag, time.Since(start).Round(100*time.Millisecond), sum[:12])
	return nil
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
