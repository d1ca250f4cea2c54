package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/kubectld/manifest"
)

// kubeStackUp stores Kubernetes templates (files, folders of them, or one
// Helm chart folder) and answers in a stack of kind kubernetes; kubectld
// applies them. Missing ${VAR} answers and bad YAML are caught here, with
// the user's own file names, before anything is sent.
func kubeStackUp(ctx context.Context, cf *cliFlags, name, namespace string, files stringList, answersFile string, wait time.Duration, stderr io.Writer) error {
	if len(files) == 0 {
		return usageError{"--kind kubernetes needs -f: Kubernetes YAML files, a folder of them, or a Helm chart folder"}
	}
	templates := map[string]string{}
	chart := false
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return err
		}
		if !fi.IsDir() {
			if err := addTemplate(templates, filepath.Base(f), f); err != nil {
				return err
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(f, "Chart.yaml")); err == nil {
			if len(files) > 1 {
				return usageError{fmt.Sprintf("%s is a Helm chart: give it alone with -f (values go in --answers)", f)}
			}
			chart = true
		}
		err = filepath.WalkDir(f, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, _ := filepath.Rel(f, p)
			rel = filepath.ToSlash(rel)
			if strings.HasPrefix(rel, ".") || strings.Contains(rel, "/.") {
				return nil // .helmignore, editor files
			}
			if !chart && !manifest.IsManifest(rel) {
				return nil
			}
			return addTemplate(templates, rel, p)
		})
		if err != nil {
			return err
		}
	}
	answers, err := readAnswers(answersFile)
	if err != nil {
		return err
	}
	if !chart {
		docs, err := manifest.Render(templates, answers)
		if err != nil {
			return err
		}
		if len(docs) == 0 {
			return fmt.Errorf("%s: no Kubernetes objects in the files", strings.Join(files, ", "))
		}
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	spec := api.StackSpec{Kind: api.StackKubernetes, Templates: templates, Answers: answers, Namespace: namespace}
	st, err := upsertStack(ctx, c, name, spec, func(cur *api.Stack, spec *api.StackSpec) error {
		if cur.Spec.Kind != api.StackKubernetes {
			return fmt.Errorf("stack %s exists and is a %s stack; choose another name", name, cur.Spec.Kind)
		}
		if !cur.HasTemplates() && cur.Spec.Namespace != "" {
			// The engine stack of an existing namespace (kubernetes-agent's):
			// it takes the templates, and keeps its namespace.
			if spec.Namespace == "" {
				spec.Namespace = cur.Spec.Namespace
			}
			if spec.Namespace != cur.Spec.Namespace {
				return fmt.Errorf("stack %s stands for namespace %s: deploy into it (--namespace %s) or choose another stack name", name, cur.Spec.Namespace, cur.Spec.Namespace)
			}
		}
		return nil
	}, stderr)
	if err != nil {
		return err
	}
	if wait == 0 {
		return nil
	}
	return waitKubeStack(ctx, c, st, wait, stderr)
}

func addTemplate(templates map[string]string, name, path string) error {
	if _, dup := templates[name]; dup {
		return usageError{fmt.Sprintf("two files named %s: rename one", name)}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	templates[name] = string(b)
	return nil
}

// waitKubeStack waits until kubectld has applied this generation of the
// stack, printing its phase as it changes; it fails at once on an error.
func waitKubeStack(ctx context.Context, c *client.Client, st *api.Stack, limit time.Duration, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := ""
	for {
		cur, err := c.Stacks().Get(ctx, st.ID)
		if err != nil {
			return err
		}
		current := cur.Status.ObservedGeneration >= st.Generation
		line := orDash(cur.Status.State) + ": " + cur.Status.Message
		if !current {
			line = "waiting for kubectld to apply generation " + fmt.Sprint(st.Generation)
		}
		if line != last {
			fmt.Fprintln(w, "  "+line)
			last = line
		}
		switch {
		case current && cur.Status.State == "error":
			return fmt.Errorf("stack %s failed: %s", cur.Name, cur.Status.LastError)
		case current && cur.Status.State == "active":
			for _, o := range cur.Status.Objects {
				fmt.Fprintln(w, "  "+o.String())
			}
			fmt.Fprintf(w, "stack %s is active (%s)\n", cur.Name, cur.Status.Message)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stack %s not applied after %s: is kubectld running (drover kubectld, or the kubernetes stack)? %s", cur.Name, limit, line)
		case <-time.After(300 * time.Millisecond):
		}
	}
}
