package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

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
	dir = a.secretsDir(c.ID)
	tmp := dir + ".new"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		return "", nil, err
	}
	write := func(name string, b []byte) error {
		if !safeName.MatchString(name) {
			return fmt.Errorf("secret file name %q is not allowed", name)
		}
		return os.WriteFile(filepath.Join(tmp, name), b, 0o600)
	}
	if cr := sec.Credentials; cr != nil {
		// The engine as this agent reaches it: the server may not know the
		// address hosts use.
		cr.URL = a.eng.URL()
		b, _ := json.MarshalIndent(cr, "", "  ")
		if err := write("credentials.json", b); err != nil {
			return "", nil, err
		}
		env = append(env, "DROVER_URL="+cr.URL, "DROVER_ACCESS_KEY="+cr.AccessKey, "DROVER_SECRET_KEY="+cr.SecretKey,
			"DROVER_CREDENTIALS="+SecretsMount+"/credentials.json")
	}
	for _, sc := range sec.Certificates {
		if err := write(sc.Name+".crt", []byte(sc.Cert)); err != nil {
			return "", nil, err
		}
		if sc.Key != "" {
			if err := write(sc.Name+".key", []byte(sc.Key)); err != nil {
				return "", nil, err
			}
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", nil, err
	}
	return dir, env, nil
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
		}
	}
}
