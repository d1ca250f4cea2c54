package main

import (
	"context"
	"fmt"
	"io"
	"time"

	dockerclient "github.com/docker/docker/client"
)

// runImage: drover image push REF... | ls.
func runImage(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "push" && args[0] != "ls") {
		return usageError{"usage: drover image push IMAGE... (from this host's Docker Engine to the engine) | drover image ls"}
	}
	fs, cf := newCLIFlags("drover image "+args[0], stderr)
	c, err := cf.connect(fs, args[1:])
	if c == nil {
		return err // nil after -h
	}
	if args[0] == "ls" {
		imgs, err := c.Images(ctx)
		if err != nil {
			return err
		}
		var rows [][]string
		for _, im := range imgs {
			rows = append(rows, []string{im.Name, fmt.Sprintf("%.1f MB", float64(im.Size)/1e6), im.SHA256[:12], im.Stored.Format(time.RFC3339)})
		}
		return cf.print(stdout, imgs, []string{"IMAGE", "SIZE", "SHA256", "STORED"}, rows)
	}
	if fs.NArg() == 0 {
		return usageError{"drover image push: name the images to push"}
	}
	docker, err := dockerclient.NewClientWithOpts(dockerclient.FromEnv, dockerclient.WithAPIVersionNegotiation())
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer docker.Close()
	for _, ref := range fs.Args() {
		start := time.Now()
		fmt.Fprintf(stdout, "%s: saving from Docker and uploading...\n", ref)
		rc, err := docker.ImageSave(ctx, []string{ref})
		if err != nil {
			return fmt.Errorf("%s: docker save: %w", ref, err)
		}
		info, err := c.PushImage(ctx, ref, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", ref, err)
		}
		fmt.Fprintf(stdout, "%s: in the engine (%.1f MB, sha256 %s) in %s; agents that lack it load it from there\n",
			ref, float64(info.Size)/1e6, info.SHA256[:12], time.Since(start).Round(100*time.Millisecond))
	}
	return nil
}
