package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// agentKey is what the agent keeps between runs: the key the engine issued
// for its host, and which engine and host name it belongs to.
type agentKey struct {
	Server    string `json:"server"`
	Name      string `json:"name"`
	HostID    string `json:"hostId"`
	AccessKey string `json:"accessKey"`
	SecretKey string `json:"secretKey"`
}

const agentKeyFile = "agent-key.json"

// loadAgentKey returns the kept key for this engine and host name, or nil.
func loadAgentKey(dir, server, name string) *agentKey {
	b, err := os.ReadFile(filepath.Join(dir, agentKeyFile))
	if err != nil {
		return nil
	}
	var k agentKey
	if json.Unmarshal(b, &k) != nil || k.Server != server || k.Name != name || k.AccessKey == "" || k.SecretKey == "" {
		return nil
	}
	return &k
}

// saveAgentKey writes the key readable by this user only, replacing the file
// in one rename so a crash leaves the old key or the new one.
func saveAgentKey(dir string, k agentKey) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(k, "", "  ")
	tmp, err := os.CreateTemp(dir, agentKeyFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, agentKeyFile)); err != nil {
		return fmt.Errorf("keeping the agent key: %w", err)
	}
	return nil
}

// Preregister registers a host with a token, as its agent would, and keeps
// the agent key in stateDir, so an agent started later with that state
// directory needs no token. It returns a client with the agent key (which
// may read the engine's images: drover up --join loads the agent's own
// image with it).
func Preregister(ctx context.Context, stateDir, server, token string, req api.RegisterRequest) (*client.Client, *api.Host, error) {
	if k := loadAgentKey(stateDir, server, req.Name); k != nil {
		c := client.New(server, k.AccessKey, k.SecretKey)
		h, err := c.Hosts().Get(ctx, k.HostID)
		if err == nil {
			return c, h, nil
		}
		if !api.IsStatus(err, http.StatusUnauthorized) && !api.IsNotFound(err) {
			return nil, nil, err
		}
	}
	req.Token = token
	resp, err := client.New(server, "", "").Register(ctx, req)
	if err != nil {
		return nil, nil, err
	}
	if err := saveAgentKey(stateDir, agentKey{Server: server, Name: req.Name, HostID: resp.Host.ID, AccessKey: resp.AccessKey, SecretKey: resp.SecretKey}); err != nil {
		return nil, nil, err
	}
	return client.New(server, resp.AccessKey, resp.SecretKey), &resp.Host, nil
}

// KeptClient is a client with the agent key kept in stateDir (nil if none):
// the agent replaces its key each time it registers, so whoever shares its
// state directory reads the key anew.
func KeptClient(stateDir, server, name string) *client.Client {
	k := loadAgentKey(stateDir, server, name)
	if k == nil {
		return nil
	}
	return client.New(server, k.AccessKey, k.SecretKey)
}
