package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	flag "github.com/spf13/pflag"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
	"github.com/drover/drover/scheduler"
	"github.com/drover/drover/stacks"
)

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }
func (s *stringList) Type() string       { return "file" }

// cliFlags are what every client command takes.
type cliFlags struct {
	engine   engineFlagSet
	output   *string
	selector *string
	watch    *bool
}

func newCLIFlags(name string, stderr io.Writer) (*flag.FlagSet, *cliFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cf := &cliFlags{engine: engineFlags(fs)}
	none := ""
	cf.output = &none
	fs.Usage = func() { printUsage(fs) }
	return fs, cf
}

// newListFlags are a listing's flags, as kubectl's: -o, -l, --watch.
func newListFlags(name string, stderr io.Writer) (*flag.FlagSet, *cliFlags) {
	fs, cf := newCLIFlags(name, stderr)
	cf.output = fs.StringP("output", "o", "", "output: wide, json, yaml or name (default: a table)")
	cf.selector = fs.StringP("selector", "l", "", "label selector: k=v, k!=v, k (comma separated)")
	cf.watch = fs.BoolP("watch", "w", false, "after the listing, print each row that changes (until Ctrl-C)")
	return fs, cf
}

// printUsage is a command's --help: what it is for, its flags.
func printUsage(fs *flag.FlagSet) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage:\n  %s [flags]\n", fs.Name())
	if h, ok := helpTexts[fs.Name()]; ok {
		fmt.Fprintf(w, "\n%s\n", h)
	}
	fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsages())
}

func parseCLI(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return errHelp
		}
		return usageError{err.Error()}
	}
	return nil
}

var errHelp = errors.New("help shown")

// connect parses args and makes the engine client. It returns a nil client
// and a nil error when -h was asked for (the usage is printed), and a nil
// client and the error when the flags or the credentials are wrong.
func (cf *cliFlags) connect(fs *flag.FlagSet, args []string) (*client.Client, error) {
	if err := parseCLI(fs, args); err != nil {
		if err == errHelp {
			return nil, nil
		}
		return nil, err
	}
	return cf.client()
}

func (cf *cliFlags) client() (*client.Client, error) {
	c, err := cf.engine.client()
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return c, nil
}

// print writes rows as a table, or v as JSON or YAML.
func (cf *cliFlags) print(w io.Writer, v any, header []string, rows [][]string) error {
	switch *cf.output {
	case "name":
		for _, r := range rows {
			fmt.Fprintln(w, r[0])
		}
		return nil
	case "json":
		b, _ := json.MarshalIndent(v, "", "  ")
		_, err := fmt.Fprintln(w, string(b))
		return err
	case "yaml":
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	case "table", "", "wide":
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, r := range rows {
			fmt.Fprintln(tw, strings.Join(r, "\t"))
		}
		return tw.Flush()
	}
	return usageError{fmt.Sprintf("-o %q: use wide, json, yaml or name", *cf.output)}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runStack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "Usage:\n  drover stack up|ls|rm|rollback [flags]\n\n"+helpTexts["drover stack"])
		return nil
	}
	if len(args) == 0 {
		return usageError{"usage: drover stack up|ls|rm|rollback ... (drover stack --help)"}
	}
	switch args[0] {
	case "up":
		return stackUp(ctx, args[1:], stdout, stderr)
	case "ls", "list":
		return stackLs(ctx, args[1:], stdout, stderr)
	case "rm", "remove":
		return stackRm(ctx, args[1:], stdout, stderr)
	case "rollback":
		return stackRollback(ctx, args[1:], stdout, stderr)
	}
	return usageError{fmt.Sprintf("unknown stack command %q: use up, ls, rm or rollback", args[0])}
}

// stackUp creates or upgrades a stack from its files and waits, showing
// progress, until it is active and healthy or fails.
func stackUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover stack up NAME", stderr)
	var files stringList
	fs.VarP(&files, "file", "f", "compose file (docker-compose.yml), and optionally a rancher-compose.yml; repeatable")
	answersFile := fs.String("answers", "", "answers for ${VAR}: a YAML/JSON map or KEY=VALUE lines")
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the stack to be active and healthy (0: do not wait)")
	kind := fs.String("kind", api.StackCompose, "compose, or kubernetes: -f names Kubernetes YAML files, folders of them, or a Helm chart folder, applied by kubectld")
	namespace := fs.String("namespace", "", "kind kubernetes: the namespace of the stack's objects (default: default; made if missing)")
	templateDir := fs.String("template", "", "a Rancher catalog version folder: its docker-compose.yml[.tpl] and rancher-compose.yml, answers from --answers then the questions' defaults")
	dryRun := fs.Bool("dry-run", false, "print the services the files make (or every error) and write nothing")
	name, rest := splitName(args)
	if err := parseCLI(fs, rest); err != nil {
		if err == errHelp {
			return nil
		}
		return err
	}
	name, err := nameArg(fs, name)
	if err != nil {
		return err
	}
	if name == "" {
		return usageError{"usage: drover stack up NAME -f docker-compose.yml [-f rancher-compose.yml] [--answers FILE]  |  drover stack up NAME --kind kubernetes [--namespace NS] -f app.yaml|DIR [-f more.yaml] [--answers FILE]"}
	}
	switch *kind {
	case api.StackCompose:
		if *namespace != "" {
			return usageError{"--namespace is for --kind kubernetes"}
		}
	case api.StackKubernetes:
		return kubeStackUp(ctx, cf, name, *namespace, files, *answersFile, *wait, stderr)
	default:
		return usageError{fmt.Sprintf("--kind %q: want compose or kubernetes", *kind)}
	}
	var compose []stacks.File
	var rancher *stacks.File
	if *templateDir != "" {
		if len(files) > 0 {
			return usageError{"give --template DIR or -f files, not both"}
		}
		var err error
		if compose, rancher, err = readTemplateDir(*templateDir); err != nil {
			return err
		}
	} else {
		if len(files) == 0 {
			files = append(files, "docker-compose.yml")
			if _, err := os.Stat("rancher-compose.yml"); err == nil {
				files = append(files, "rancher-compose.yml")
			}
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			sf := stacks.File{Name: f, Content: b}
			if strings.Contains(filepath.Base(f), "rancher-compose") {
				if rancher != nil {
					return usageError{fmt.Sprintf("two rancher-compose files (%s, %s): give one", rancher.Name, f)}
				}
				rancher = &sf
			} else {
				compose = append(compose, sf)
			}
		}
	}
	if len(compose) == 0 {
		return usageError{"no compose file: give -f docker-compose.yml (more -f files override it in order)"}
	}
	answers, err := readAnswers(*answersFile)
	if err != nil {
		return err
	}
	// Parse here first, so errors name the user's own file names.
	res, err := stacks.ParseFull(ctx, name, compose, rancher, answers)
	if err != nil {
		return err
	}
	for _, w := range res.Warnings {
		fmt.Fprintln(stderr, "warning: "+w.String())
	}
	want := res.Services
	if *dryRun {
		return printDryRun(stdout, name, res)
	}
	c, err := cf.client()
	if err != nil {
		return err
	}
	spec := api.StackSpec{Kind: api.StackCompose, Compose: string(compose[0].Content), Answers: answers}
	if filepath.Base(compose[0].Name) != "docker-compose.yml" {
		spec.ComposeName = filepath.Base(compose[0].Name)
	}
	for _, o := range compose[1:] {
		spec.Overrides = append(spec.Overrides, string(o.Content))
	}
	if rancher != nil {
		spec.RancherCompose = string(rancher.Content)
	}
	st, err := upsertStack(ctx, c, name, spec, nil, stderr)
	if err != nil {
		return err
	}
	if *wait == 0 {
		return nil
	}
	return waitStack(ctx, c, st, want, *wait, stderr)
}

// nameArg is the command's NAME, given before or after its flags; more
// arguments are a usage error.
func nameArg(fs *flag.FlagSet, name string) (string, error) {
	rest := fs.Args()
	if name == "" && len(rest) > 0 {
		name, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", usageError{fmt.Sprintf("%s: unexpected arguments %q", fs.Name(), rest)}
	}
	return name, nil
}

func splitName(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

func readAnswers(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	var m map[string]any
	if yaml.Unmarshal(b, &m) == nil && len(m) > 0 {
		for k, v := range m {
			out[k] = fmt.Sprint(v)
		}
		return out, nil
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: %q is not KEY=VALUE", path, i+1, line)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// waitStack polls the stack and its services and prints each change until
// the stack is active and healthy, fails, or time runs out.
func waitStack(ctx context.Context, c *client.Client, st *api.Stack, want []stacks.Service, limit time.Duration, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	last := map[string]string{}
	for {
		cur, err := c.Stacks().Get(ctx, st.ID)
		if err != nil {
			return err
		}
		svcs, _, err := c.Services().List(ctx, client.ListOptions{StackID: st.ID})
		if err != nil {
			return err
		}
		ctrs, _, _ := c.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		running := map[string][2]int{}
		for _, ct := range ctrs {
			r := running[ct.Spec.ServiceID]
			r[1]++
			if ct.Status.State == api.ContainerRunning || (ct.Status.State == api.ContainerStopped && ct.Spec.LaunchConfig != nil && ct.Spec.LaunchConfig.StartOnce) {
				r[0]++
			}
			running[ct.Spec.ServiceID] = r
		}
		// Each container's state as it changes, and a failure named at
		// once: one in error that will not come back by itself (its
		// image missing, say), or one crash-looping.
		sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Name < ctrs[j].Name })
		for _, ct := range ctrs {
			if ct.Spec.HostID == "" && ct.Status.State == "" {
				continue
			}
			line := fmt.Sprintf("%s: %s", ct.Name, orDash(ct.Status.State))
			if ct.Status.Message != "" {
				line += ": " + ct.Status.Message
			}
			if last[ct.ID] != line {
				fmt.Fprintln(w, "    "+line)
				last[ct.ID] = line
			}
			if failed(&ct) {
				return fmt.Errorf("stack %s: container %s failed: %s", cur.Name, ct.Name, orDash(ct.Status.Message))
			}
		}
		sort.Slice(svcs, func(i, j int) bool { return svcs[i].Name < svcs[j].Name })
		for _, s := range svcs {
			line := fmt.Sprintf("%s: %s, %s (%d/%d running)", s.Name, orDash(s.Status.State), orDash(s.Status.Health), running[s.ID][0], running[s.ID][1])
			if s.Status.Message != "" {
				line += ": " + s.Status.Message
			}
			if last[s.ID] != line {
				fmt.Fprintln(w, "  "+line)
				last[s.ID] = line
			}
		}
		// Done only once the stack controller has applied these files: the
		// services are exactly the ones parsed here.
		settled := cur.Status.State != "" && servicesMatch(svcs, want, st.ID)
		switch {
		case settled && cur.Status.State == "error" && cur.Revision > st.Revision:
			return fmt.Errorf("stack %s failed: %s", cur.Name, cur.Status.Message)
		case settled && cur.Status.State == "active" && cur.Status.Health == "healthy" && allCurrent(svcs, ctrs):
			fmt.Fprintf(w, "stack %s is active and healthy (%s)\n", cur.Name, cur.Status.Message)
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stack %s not healthy after %s: %s %s %s", cur.Name, limit, cur.Status.State, cur.Status.Health, cur.Status.Message)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func servicesMatch(have []api.Service, want []stacks.Service, stackID string) bool {
	if len(have) != len(want) {
		return false
	}
	byName := map[string]*api.Service{}
	for i := range have {
		byName[have[i].Name] = &have[i]
	}
	for _, w := range want {
		h := byName[w.Name]
		spec := w.Spec
		spec.StackID = stackID
		if h == nil {
			return false
		}
		a, _ := json.Marshal(h.Spec)
		b, _ := json.Marshal(spec)
		if string(a) != string(b) {
			return false
		}
	}
	return true
}

// allCurrent reports whether every service runs exactly what its spec says:
// each active, at its count, every container running (or done, if it starts
// once) and none left from before an upgrade.
func allCurrent(svcs []api.Service, ctrs []api.Container) bool {
	byID := map[string]*api.Service{}
	for i := range svcs {
		byID[svcs[i].ID] = &svcs[i]
		if svcs[i].Status.State != "active" {
			return false
		}
	}
	units := map[string]map[string]bool{}
	for i := range ctrs {
		ct := &ctrs[i]
		svc := byID[ct.Spec.ServiceID]
		if svc == nil {
			continue
		}
		if scheduler.Outdated(svc, ct) || !scheduler.Ready(svc, ct) {
			return false
		}
		if units[svc.ID] == nil {
			units[svc.ID] = map[string]bool{}
		}
		units[svc.ID][ct.Spec.DeploymentUnit] = true
	}
	for _, s := range svcs {
		if s.Spec.Kind != api.ServiceContainer {
			continue
		}
		want := 1
		if s.Spec.Scale != nil {
			want = *s.Spec.Scale
		}
		if (s.Spec.Global && len(units[s.ID]) == 0) || (!s.Spec.Global && len(units[s.ID]) != want) {
			return false
		}
	}
	return true
}

func stackLs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newListFlags("drover stack ls", stderr)
	return runListing(ctx, fs, cf, args, stdout, stackListing())
}

// stackRollback re-applies the stack's previous files; its containers are
// replaced in batches like any upgrade. Rolling back twice returns to where
// it started.
func stackRollback(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover stack rollback NAME", stderr)
	wait := fs.Duration("wait", 5*time.Minute, "how long to wait for the stack to be active and healthy (0: do not wait)")
	c, st, err := namedStack(ctx, fs, cf, args)
	if err != nil || st == nil {
		return err
	}
	if st.Status.PreviousSpec == nil {
		return fmt.Errorf("stack %s has no previous version to roll back to", st.Name)
	}
	st.Spec = *st.Status.PreviousSpec
	if st.Spec.Kind == api.StackKubernetes {
		updated, err := c.Stacks().Update(ctx, st.ID, st)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "stack %s rolled back\n", st.Name)
		if *wait == 0 {
			return nil
		}
		return waitKubeStack(ctx, c, updated, *wait, stderr)
	}
	want, err := stacks.ParseSpec(ctx, st.Name, st.Spec)
	if err != nil {
		return fmt.Errorf("the previous version no longer parses: %w", err)
	}
	updated, err := c.Stacks().Update(ctx, st.ID, st)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "stack %s rolled back\n", st.Name)
	if *wait == 0 {
		return nil
	}
	return waitStack(ctx, c, updated, want, *wait, stderr)
}

// namedStack parses a "COMMAND NAME [flags]" command line and finds the
// stack. A nil stack with a nil error means help was shown.
func namedStack(ctx context.Context, fs *flag.FlagSet, cf *cliFlags, args []string) (*client.Client, *api.Stack, error) {
	name, rest := splitName(args)
	if err := parseCLI(fs, rest); err != nil {
		if err == errHelp {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	name, err := nameArg(fs, name)
	if err != nil {
		return nil, nil, err
	}
	if name == "" {
		return nil, nil, usageError{"usage: " + fs.Name()}
	}
	c, err := cf.client()
	if err != nil {
		return nil, nil, err
	}
	list, _, err := c.Stacks().List(ctx, client.ListOptions{Name: name})
	if err != nil {
		return nil, nil, err
	}
	if len(list) == 0 {
		return nil, nil, fmt.Errorf("no stack named %q", name)
	}
	return c, &list[0], nil
}

func stackRm(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover stack rm NAME", stderr)
	wait := fs.Duration("wait", 2*time.Minute, "how long to wait until the stack, its services and their containers are gone (0: do not wait)")
	c, st, err := namedStack(ctx, fs, cf, args)
	if err != nil || st == nil {
		return err
	}
	if _, err := c.Stacks().Delete(ctx, st.ID); err != nil {
		return err
	}
	if *wait == 0 {
		fmt.Fprintf(stdout, "stack %s is being removed, with its services and containers\n", st.Name)
		return nil
	}
	// Deletion finishes in the background (the garbage collector removes
	// the services and containers first): wait for it, as kubectl delete does.
	deadline := time.Now().Add(*wait)
	last := ""
	for {
		if _, err := c.Stacks().Get(ctx, st.ID); api.IsNotFound(err) {
			fmt.Fprintf(stdout, "stack %s removed, with its services and containers\n", st.Name)
			return nil
		} else if err != nil {
			return err
		}
		svcs, _, _ := c.Services().List(ctx, client.ListOptions{StackID: st.ID})
		ctrs, _, _ := c.Containers().List(ctx, client.ListOptions{StackID: st.ID})
		if msg := fmt.Sprintf("removing stack %s: %d services, %d containers left", st.Name, len(svcs), len(ctrs)); msg != last {
			fmt.Fprintln(stderr, msg)
			last = msg
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stack %s is still being removed after %s; it will go on in the background (drover stack ls shows it until then)", st.Name, *wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func runHost(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runList(ctx, "host", args, stdout, stderr, func(*flag.FlagSet) listing { return hostListing() })
}

func runService(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return runList(ctx, "service", args, stdout, stderr, func(fs *flag.FlagSet) listing {
		return serviceListing(fs.String("stack", "", "only this stack's services"))
	})
}

func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "help" }

func runPs(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newListFlags("drover ps", stderr)
	stack := fs.String("stack", "", "only this stack's containers")
	return runListing(ctx, fs, cf, args, stdout, containerListing(stack))
}

// readTemplateDir reads a Rancher catalog version folder as it is.
func readTemplateDir(dir string) ([]stacks.File, *stacks.File, error) {
	var compose []stacks.File
	for _, n := range []string{"docker-compose.yml.tpl", "docker-compose.yml", "docker-compose.yaml"} {
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err == nil {
			compose = append(compose, stacks.File{Name: n, Content: b})
			break
		}
	}
	if len(compose) == 0 {
		return nil, nil, fmt.Errorf("%s: no docker-compose.yml or docker-compose.yml.tpl", dir)
	}
	for _, n := range []string{"rancher-compose.yml", "rancher-compose.yaml"} {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			return compose, &stacks.File{Name: n, Content: b}, nil
		}
	}
	return compose, nil, nil
}

// printDryRun shows what a stack's files make, without writing anything.
func printDryRun(w io.Writer, name string, res *stacks.Result) error {
	out := map[string]any{"stack": name, "services": res.Services}
	if res.Catalog != nil {
		out["catalog"] = map[string]string{"name": res.Catalog.Name, "version": res.Catalog.Version}
	}
	if len(res.Answers) > 0 {
		out["answers"] = res.Answers
	}
	b, err := yaml.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// failed says whether a container is in error for good: not about to be
// restarted, or restarted 3 times already (a crash loop).
func failed(ct *api.Container) bool {
	if ct.Status.State != api.ContainerError {
		return false
	}
	return !strings.Contains(ct.Status.Message, "restarting in") || ct.Status.StartCount >= 3
}

// upsertStack creates the stack NAME with spec, or gives the existing one
// that spec; check, when set, may refuse (or adjust spec for) the one
// there.
func upsertStack(ctx context.Context, c *client.Client, name string, spec api.StackSpec, check func(cur *api.Stack, spec *api.StackSpec) error, stderr io.Writer) (*api.Stack, error) {
	existing, _, err := c.Stacks().List(ctx, client.ListOptions{Name: name})
	if err != nil {
		return nil, err
	}
	if len(existing) == 0 {
		st, err := c.Stacks().Create(ctx, &api.Stack{Meta: api.Meta{Name: name}, Spec: spec})
		if err == nil {
			fmt.Fprintf(stderr, "stack %s created\n", name)
		}
		return st, err
	}
	next := existing[0]
	if check != nil {
		if err := check(&next, &spec); err != nil {
			return nil, err
		}
	}
	next.Spec = spec
	st, err := c.Stacks().Update(ctx, next.ID, &next)
	if err == nil {
		fmt.Fprintf(stderr, "stack %s updated\n", name)
	}
	return st, err
}

// runList serves "drover KIND ls" (and its --help).
func runList(ctx context.Context, kind string, args []string, stdout, stderr io.Writer, extra func(fs *flag.FlagSet) listing) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "Usage:\n  drover "+kind+" ls [flags]\n\n"+helpTexts["drover "+kind])
		return nil
	}
	if len(args) == 0 || (args[0] != "ls" && args[0] != "list") {
		return usageError{"usage: drover " + kind + " ls [-o wide|json|yaml|name] [-l SELECTOR] [--watch] (drover " + kind + " --help)"}
	}
	fs, cf := newListFlags("drover "+kind+" ls", stderr)
	return runListing(ctx, fs, cf, args[1:], stdout, extra(fs))
}
