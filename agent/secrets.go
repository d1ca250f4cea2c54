package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drover/drover/api"
)

// SecretsMount is where a container finds what its labels asked for:
// credentials.json (api.LabelAgentRole) and NAME.crt, NAME.key
// (api.LabelCertificates).
const SecretsMount = "/run/drover"

var safeName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// wantsSecrets says whether a container's labels ask to be handed secrets.
func wantsSecrets(labels map[string]string) bool {
	return api.ContainerAgentRole(labels) != "" || labels[api.LabelCertificates] != ""
}

// writeSecrets asks the engine for a container's secrets and writes them to
// a directory of the agent's state (mode 0700, files 0600), which the
// container gets read-only at SecretsMount. It returns the directory and
// the environment that points at them.
func (a *Agent) writeSecrets(ctx context.Context, c *api.Container) (dir string, env []string, err error) {
	sec, err := a.eng.ContainerSecrets(ctx, c.ID)
	if err != nil {
		return "", nil, fmt.Errorf("reading the secrets its labels ask for: %w", err)
	}
	files := map[string][]byte{}
	if cr := sec.Credentials; cr != nil {
		// The engine as this agent reaches it: the server may not know the
		// address hosts use.
		cr.URL = a.eng.URL()
		b, _ := json.MarshalIndent(cr, "", "  ")
		files["credentials.json"] = b
		env = append(env, "DROVER_URL="+cr.URL, "DROVER_ACCESS_KEY="+cr.AccessKey, "DROVER_SECRET_KEY="+cr.SecretKey,
			"DROVER_CREDENTIALS="+SecretsMount+"/credentials.json")
	}
	addCertificates(files, sec.Certificates)
	dir = a.secretsDir(c.ID)
	if _, err := WriteAtomic(dir, files); err != nil {
		return "", nil, err
	}
	a.certsSeen(c.ID, a.certFingerprint(c))
	return dir, env, nil
}

func addCertificates(files map[string][]byte, certs []api.SecretCertificate) {
	for _, sc := range certs {
		files[sc.Name+".crt"] = []byte(sc.Cert)
		if sc.Key != "" {
			files[sc.Name+".key"] = []byte(sc.Key)
		}
	}
}

func (a *Agent) secretsDir(containerID string) string {
	return filepath.Join(a.opts.StateDir, "secrets", containerID)
}

// dropSecrets removes the secrets of containers no longer placed here.
func (a *Agent) dropSecrets(desired map[string]*api.Container) {
	entries, _ := os.ReadDir(filepath.Join(a.opts.StateDir, "secrets"))
	for _, e := range entries {
		if desired[e.Name()] == nil {
			os.RemoveAll(filepath.Join(a.opts.StateDir, "secrets", e.Name()))
			a.certsSeen(e.Name(), "")
		}
	}
}

// certFingerprint names the revisions of the certificates a container's
// labels ask for, as this agent's cache of certificates holds them: when
// it changes (drover cert rotate, a certificate replaced), the container's
// files are written anew. "" when it asks for none.
func (a *Agent) certFingerprint(c *api.Container) string {
	names := c.AllLabels()[api.LabelCertificates]
	if names == "" || a.certs == nil {
		return ""
	}
	revs := map[string]int64{}
	for _, cert := range a.certs.List() {
		revs[cert.Name] = cert.Revision
	}
	var parts []string
	for _, n := range strings.Split(names, ",") {
		if n = strings.TrimSpace(n); n != "" {
			n = strings.ReplaceAll(n, "{host}", a.host.Name)
			parts = append(parts, n+"@"+strconv.FormatInt(revs[n], 10))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func (a *Agent) certsSeen(containerID, fp string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if fp == "" {
		delete(a.certFP, containerID)
		return
	}
	a.certFP[containerID] = fp
}

// refreshCertificates keeps the certificate files of this host's containers
// current without restarting them: on a change of the engine's
// certificates (and every few minutes, for a change missed while the agent
// was down) it rereads those whose certificates changed and swaps the
// files in place. Kubernetes' components reload certificate files
// (the apiserver's serving and client CA files, the kubelet's serving
// certificate, every client-go client given files), so a rotation reaches
// them with no downtime.
func (a *Agent) refreshCertificates(ctx context.Context) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		if a.certs.HasSynced() && a.ctrs.HasSynced() {
			a.refreshOnce(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-a.certKick:
			time.Sleep(100 * time.Millisecond) // a rotation changes many at once
		case <-t.C:
			// Forget what was seen: reread every container once.
			a.mu.Lock()
			clear(a.certFP)
			a.mu.Unlock()
		}
	}
}

func (a *Agent) refreshOnce(ctx context.Context) {
	for _, c := range a.ctrs.List() {
		fp := a.certFingerprint(c)
		if fp == "" {
			continue
		}
		dir := a.secretsDir(c.ID)
		if _, err := os.Lstat(filepath.Join(dir, dataLink)); err != nil {
			continue // not created here yet: writeSecrets will write them
		}
		a.mu.Lock()
		seen := a.certFP[c.ID]
		a.mu.Unlock()
		if seen == fp {
			continue
		}
		changed, err := a.rewriteCertificates(ctx, c, dir)
		if err != nil {
			a.log.Warn("certificates not refreshed", "container", c.Name, "err", err)
			a.metrics.certRefreshes.WithLabelValues("error").Inc()
			continue
		}
		a.certsSeen(c.ID, fp)
		if changed {
			a.log.Info("certificates refreshed in place", "container", c.Name, "certificates", fp)
			a.metrics.certRefreshes.WithLabelValues("changed").Inc()
		}
	}
}

// rewriteCertificates rereads a container's certificates and swaps them in,
// keeping its other files (its credentials) as they are.
func (a *Agent) rewriteCertificates(ctx context.Context, c *api.Container, dir string) (bool, error) {
	certs, err := a.eng.ContainerCertificates(ctx, c.ID)
	if err != nil {
		return false, err
	}
	files, err := readSecretFiles(dir)
	if err != nil {
		return false, err
	}
	for name := range files {
		if strings.HasSuffix(name, ".crt") || strings.HasSuffix(name, ".key") {
			delete(files, name)
		}
	}
	addCertificates(files, certs)
	return WriteAtomic(dir, files)
}

// The layout of a secrets directory, as the kubelet writes secret volumes:
// every file is a symlink NAME -> ..data/NAME, and ..data a symlink to the
// directory of the current version. A new version is a new directory and
// one rename of ..data, so a reader sees the old certificate and key or
// the new ones, never a new certificate beside an old key.
const (
	dataLink      = "..data"
	versionPrefix = "..v"
)

// WriteAtomic makes dir hold exactly files, swapping all of them at once.
// It reports whether anything changed (nothing is written when nothing
// did). dir itself stays the same directory: a container that has it
// bind-mounted sees the new files.
func WriteAtomic(dir string, files map[string][]byte) (bool, error) {
	for name := range files {
		if !safeName.MatchString(name) || strings.HasPrefix(name, "..") {
			return false, fmt.Errorf("secret file name %q is not allowed", name)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, err
	}
	if old, err := readSecretFiles(dir); err == nil && sameFiles(old, files) {
		return false, nil
	}
	version := fmt.Sprintf("%s%d", versionPrefix, time.Now().UnixNano())
	vdir := filepath.Join(dir, version)
	if err := os.Mkdir(vdir, 0o700); err != nil {
		return false, err
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(vdir, name), b, 0o600); err != nil {
			os.RemoveAll(vdir)
			return false, err
		}
	}
	previous, _ := os.Readlink(filepath.Join(dir, dataLink))
	if err := swapLink(dir, dataLink, version); err != nil {
		os.RemoveAll(vdir)
		return false, err
	}
	// The names, each a link through ..data (made once, kept after).
	for name := range files {
		target := filepath.Join(dataLink, name)
		if t, err := os.Readlink(filepath.Join(dir, name)); err == nil && t == target {
			continue
		}
		if err := swapLink(dir, name, target); err != nil {
			return false, err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		n := e.Name()
		switch {
		case n == dataLink || n == version:
		case n == previous:
			// Removed a moment later, not now: a reader that resolved
			// ..data just before the swap still finds it. Its removal is
			// what tells file watchers (the apiserver's, the kubelet's,
			// which watch the files the names lead to) to reload.
			time.AfterFunc(OldVersionGrace, func() { os.RemoveAll(filepath.Join(dir, n)) })
		case strings.HasPrefix(n, versionPrefix), files[n] == nil:
			os.RemoveAll(filepath.Join(dir, n))
		}
	}
	return true, nil
}

// OldVersionGrace is how long a replaced version of a secrets directory
// stays readable.
var OldVersionGrace = time.Second

// swapLink points dir/name at target in one rename.
func swapLink(dir, name, target string) error {
	tmp := filepath.Join(dir, ".."+name+".tmp")
	os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, name))
}

// readSecretFiles reads the current version of a secrets directory.
func readSecretFiles(dir string) (map[string][]byte, error) {
	vdir := filepath.Join(dir, dataLink)
	entries, err := os.ReadDir(vdir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(vdir, e.Name()))
		if err != nil {
			return nil, err
		}
		out[e.Name()] = b
	}
	return out, nil
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}
