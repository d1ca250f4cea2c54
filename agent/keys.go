package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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
