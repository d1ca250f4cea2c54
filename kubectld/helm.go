package kubectld

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"time"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/release"
	"helm.sh/helm/v3/pkg/storage/driver"
	"helm.sh/helm/v3/pkg/strvals"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"github.com/drover/drover/api"
	"github.com/drover/drover/kubectld/manifest"
)

// labelSpec is a Helm release label naming the stack spec a revision
// installed: a rollback of the stack becomes a Helm rollback to the
// revision that installed the spec rolled back to.
const labelSpec = "drover-spec"

// helmRunner installs, upgrades, rolls back and uninstalls a chart stack
// as one Helm release (named after the stack, stored as Secrets in the
// stack's namespace), through the Helm Go SDK.
type helmRunner struct {
	kubeconfig string
	wrap       func(*rest.Config) *rest.Config
	applier    *Applier
	log        *slog.Logger
	timeout    time.Duration
}

func (h *helmRunner) config(ns string) (*action.Configuration, error) {
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &h.kubeconfig
	flags.Namespace = &ns
	flags.WrapConfigFn = h.wrap
	cfg := new(action.Configuration)
	logf := func(format string, v ...any) { h.log.Debug(fmt.Sprintf(format, v...), "source", "helm") }
	if err := cfg.Init(flags, ns, "secret", logf); err != nil {
		return nil, fmt.Errorf("helm: %w", err)
	}
	return cfg, nil
}

// loadChart builds a chart from a stack's files (paths relative to the
// chart folder).
func loadChart(files map[string]string) (*chart.Chart, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var bf []*loader.BufferedFile
	for _, n := range names {
		bf = append(bf, &loader.BufferedFile{Name: n, Data: []byte(files[n])})
	}
	c, err := loader.LoadFiles(bf)
	if err != nil {
		return nil, fmt.Errorf("loading the Helm chart: %w", err)
	}
	return c, nil
}

// chartValues turns answers into values as `helm --set` does
// ("image.tag=1.2" sets image: {tag: "1.2"}).
func chartValues(answers map[string]string) (map[string]any, error) {
	vals := map[string]any{}
	keys := make([]string, 0, len(answers))
	for k := range answers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := strvals.ParseInto(k+"="+answers[k], vals); err != nil {
			return nil, fmt.Errorf("answer %s: %w", k, err)
		}
	}
	return vals, nil
}

func (h *helmRunner) sync(ctx context.Context, st *api.Stack, ns string) ([]api.KubeObject, *releaseInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	cfg, err := h.config(ns)
	if err != nil {
		return nil, nil, err
	}
	chrt, err := loadChart(st.Spec.Templates)
	if err != nil {
		return nil, nil, err
	}
	vals, err := chartValues(st.Spec.Answers)
	if err != nil {
		return nil, nil, err
	}
	name, want := st.Name, specHash(st.Spec)
	hist, err := action.NewHistory(cfg).Run(name)
	if err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
		return nil, nil, fmt.Errorf("helm history %s: %w", name, err)
	}
	sort.Slice(hist, func(i, j int) bool { return hist[i].Version > hist[j].Version })
	deployed := false
	for _, r := range hist {
		if r.Info.Status == release.StatusDeployed || r.Info.Status == release.StatusSuperseded {
			deployed = true
		}
	}
	var rel *release.Release
	changed := true
	switch {
	case len(hist) > 0 && hist[0].Info.Status == release.StatusDeployed && hist[0].Labels[labelSpec] == want:
		rel, changed = hist[0], false
	case !deployed:
		if len(hist) > 0 {
			// Only failed attempts: start over, as `helm install --replace` would.
			if _, err := action.NewUninstall(cfg).Run(name); err != nil && !errors.Is(err, driver.ErrReleaseNotFound) {
				return nil, nil, fmt.Errorf("helm: clearing the failed release %s: %w", name, err)
			}
		}
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.Labels = name, ns, map[string]string{labelSpec: want}
		in.Description = "drover stack " + st.Name + " generation " + fmt.Sprint(st.Generation)
		rel, err = in.RunWithContext(ctx, chrt, vals)
		if err != nil {
			return nil, nil, fmt.Errorf("helm install %s: %w", name, err)
		}
		h.log.Info("helm release installed", "release", name, "namespace", ns, "revision", rel.Version)
	default:
		target := 0
		for _, r := range hist[1:] {
			if r.Labels[labelSpec] == want && (r.Info.Status == release.StatusSuperseded || r.Info.Status == release.StatusDeployed) {
				target = r.Version
				break
			}
		}
		if target > 0 {
			rb := action.NewRollback(cfg)
			rb.Version = target
			if err := rb.Run(name); err != nil {
				return nil, nil, fmt.Errorf("helm rollback %s to revision %d: %w", name, target, err)
			}
			last, err := cfg.Releases.Last(name)
			if err != nil {
				return nil, nil, fmt.Errorf("helm: reading release %s: %w", name, err)
			}
			rel = last
			h.log.Info("helm release rolled back", "release", name, "to", target, "revision", rel.Version)
		} else {
			up := action.NewUpgrade(cfg)
			up.Namespace, up.Labels = ns, map[string]string{labelSpec: want}
			up.Description = "drover stack " + st.Name + " generation " + fmt.Sprint(st.Generation)
			rel, err = up.RunWithContext(ctx, name, chrt, vals)
			if err != nil {
				return nil, nil, fmt.Errorf("helm upgrade %s: %w", name, err)
			}
			h.log.Info("helm release upgraded", "release", name, "revision", rel.Version)
		}
	}
	objs, err := h.objects(rel.Manifest, ns)
	if err != nil {
		return nil, nil, err
	}
	return objs, &releaseInfo{name: rel.Name, revision: rel.Version, changed: changed}, nil
}

// objects lists what a release's manifest holds.
func (h *helmRunner) objects(text, ns string) ([]api.KubeObject, error) {
	docs, err := manifest.Decode("release manifest", []byte(text))
	if err != nil {
		return nil, err
	}
	var out []api.KubeObject
	for _, d := range docs {
		o := d.Object
		gvk := o.GroupVersionKind()
		ons := o.GetNamespace()
		if m, err := h.applier.mapper.RESTMapping(gvk.GroupKind(), gvk.Version); err == nil {
			if m.Scope.Name() != meta.RESTScopeNameNamespace {
				ons = ""
			} else if ons == "" {
				ons = ns
			}
		}
		out = append(out, api.KubeObject{APIVersion: o.GetAPIVersion(), Kind: o.GetKind(), Namespace: ons, Name: o.GetName()})
	}
	sortObjects(out)
	return out, nil
}

func (h *helmRunner) uninstall(ctx context.Context, st *api.Stack, ns string) error {
	cfg, err := h.config(ns)
	if err != nil {
		return err
	}
	un := action.NewUninstall(cfg)
	un.Timeout = h.timeout
	if _, err := un.Run(st.Name); err != nil && !errors.Is(err, driver.ErrReleaseNotFound) && !strings.Contains(err.Error(), "not found") {
		return fmt.Errorf("helm uninstall %s: %w", st.Name, err)
	}
	return nil
}
