package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// No registry: an image uploaded to the engine is loaded by the agent of a
// host that lacks it, and only admin and service keys may upload.
func TestIntegrationImagesFromTheEngine(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	ref := fmt.Sprintf("drover-test-app:engine-%d", time.Now().UnixNano())
	if out, err := exec.Command("docker", "tag", "drover-test-app:v1", ref).CombinedOutput(); err != nil {
		t.Fatalf("docker tag: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("docker", "rmi", ref).Run() })
	archive, err := exec.Command("docker", "save", ref).Output()
	if err != nil {
		t.Fatalf("docker save: %v", err)
	}
	info, err := c.eng.PushImage(ctx, ref, bytes.NewReader(archive))
	if err != nil || info.Size != int64(len(archive)) {
		t.Fatalf("pushing %s: %+v %v", ref, info, err)
	}
	if imgs, err := c.eng.Images(ctx); err != nil || len(imgs) != 1 || imgs[0].Name != ref {
		t.Fatalf("the engine's images: %+v %v", imgs, err)
	}
	// This host's Docker no longer has it.
	if out, err := exec.Command("docker", "rmi", ref).CombinedOutput(); err != nil {
		t.Fatalf("docker rmi: %v %s", err, out)
	}
	c.startAgent("img", nil)
	waitHosts(t, c, 1)
	st, err := c.eng.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: "img"}, Spec: api.StackSpec{Compose: "services:\n  web:\n    image: " + ref + "\n"}})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the container running from the engine's image", 60*time.Second, func() error {
		ctrs, _, err := c.eng.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil || len(ctrs) != 1 || ctrs[0].Status.State != api.ContainerRunning {
			return fmt.Errorf("%v %v", ctrs, err)
		}
		return nil
	})
	if out, err := exec.Command("docker", "image", "inspect", "-f", "{{.Id}}", ref).Output(); err != nil || !strings.HasPrefix(string(out), "sha256:") {
		t.Fatalf("%s is not on this host after the agent ran it: %v", ref, err)
	}
	// An agent key may download, not upload.
	key, err := c.eng.APIKeys().Create(ctx, &api.APIKey{Spec: api.APIKeySpec{Role: api.RoleAgent, HostID: c.hostIDs()["img"]}})
	if err != nil {
		t.Fatal(err)
	}
	agentKey := client.New(c.srv.URL(), key.ID, key.Status.SecretKey)
	if rc, err := agentKey.ImageArchive(ctx, ref); err != nil {
		t.Fatalf("an agent downloading an image: %v", err)
	} else {
		rc.Close()
	}
	if _, err := agentKey.PushImage(ctx, "evil:1", bytes.NewReader(archive)); !api.IsStatus(err, 403) {
		t.Fatalf("an agent uploading an image: want 403, got %v", err)
	}
	if _, err := c.eng.PushImage(ctx, "../../etc/passwd", bytes.NewReader(archive)); !api.IsStatus(err, 422) {
		t.Fatalf("an image named ../../etc/passwd: want 422, got %v", err)
	}
}
