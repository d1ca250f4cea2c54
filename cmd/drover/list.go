package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	flag "github.com/spf13/pflag"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// row is one line of a listing: its object's id, the columns, and the
// extra columns of -o wide.
type row struct {
	id         string
	cols, wide []string
}

// listing is what a listing command shows.
type listing struct {
	header, wideHeader []string
	// fetch lists the objects (v is what -o json|yaml prints).
	fetch func(ctx context.Context, opts client.ListOptions) (rows []row, v any, err error)
}

// runListing parses a listing's flags, prints it, and with --watch keeps
// printing the rows that change.
func runListing(ctx context.Context, fs *flag.FlagSet, cf *cliFlags, args []string, stdout io.Writer, l listing) error {
	c, err := cf.connect(fs, args)
	if c == nil {
		return err // nil after -h
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("%s takes no arguments (got %q); filter with -l", fs.Name(), fs.Args())}
	}
	opts := client.ListOptions{LabelSelector: *cf.selector}
	if opts.LabelSelector != "" {
		if _, err := api.ParseSelector(opts.LabelSelector); err != nil {
			return usageError{fmt.Sprintf("-l %q: %v", opts.LabelSelector, err)}
		}
	}
	switch *cf.output {
	case "", "table", "wide", "json", "yaml", "name":
	default:
		return usageError{fmt.Sprintf("-o %q: use wide, json, yaml or name", *cf.output)}
	}
	rows, v, err := l.fetch(withClient(ctx, c), opts)
	if err != nil {
		return err
	}
	if !*cf.watch {
		return printRows(stdout, cf, l, rows, v, true)
	}
	if *cf.output == "json" || *cf.output == "yaml" {
		return usageError{"--watch prints rows: use it with the table, -o wide or -o name"}
	}
	seen := map[string]string{}
	for _, r := range rows {
		seen[r.id] = strings.Join(r.cols, "\t")
	}
	if err := printRows(stdout, cf, l, rows, nil, true); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		rows, _, err := l.fetch(withClient(ctx, c), opts)
		if err != nil {
			return err
		}
		var changed []row
		now := map[string]bool{}
		for _, r := range rows {
			now[r.id] = true
			if line := strings.Join(r.cols, "\t"); seen[r.id] != line {
				seen[r.id] = line
				changed = append(changed, r)
			}
		}
		for id, line := range seen {
			if !now[id] {
				cols := strings.Split(line, "\t")
				cols = append(cols[:1], "(deleted)")
				changed = append(changed, row{id: id, cols: cols})
				delete(seen, id)
			}
		}
		if len(changed) > 0 {
			printRows(stdout, cf, l, changed, nil, false)
		}
	}
}

func printRows(w io.Writer, cf *cliFlags, l listing, rows []row, v any, header bool) error {
	switch *cf.output {
	case "json", "yaml":
		return cf.print(w, v, nil, nil)
	case "name":
		for _, r := range rows {
			fmt.Fprintln(w, r.cols[0])
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	wide := *cf.output == "wide"
	if header {
		h := l.header
		if wide {
			h = append(append([]string{}, h...), l.wideHeader...)
		}
		fmt.Fprintln(tw, strings.Join(h, "\t"))
	}
	for _, r := range rows {
		cols := r.cols
		if wide {
			cols = append(append([]string{}, cols...), r.wide...)
		}
		fmt.Fprintln(tw, strings.Join(cols, "\t"))
	}
	return tw.Flush()
}

type clientKey struct{}

func withClient(ctx context.Context, c *client.Client) context.Context {
	return context.WithValue(ctx, clientKey{}, c)
}

func clientFrom(ctx context.Context) *client.Client { return ctx.Value(clientKey{}).(*client.Client) }

func labelString(m map[string]string) string {
	var l []string
	for k, v := range m {
		l = append(l, k+"="+v)
	}
	sort.Strings(l)
	return orDash(strings.Join(l, ","))
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func stackListing() listing {
	return listing{
		header:     []string{"NAME", "KIND", "STATE", "HEALTH", "MESSAGE"},
		wideHeader: []string{"ID", "AGE", "LABELS"},
		fetch: func(ctx context.Context, opts client.ListOptions) ([]row, any, error) {
			list, _, err := clientFrom(ctx).Stacks().List(ctx, opts)
			if err != nil {
				return nil, nil, err
			}
			var rows []row
			for _, s := range list {
				rows = append(rows, row{s.ID, []string{s.Name, orDash(s.Spec.Kind), orDash(s.Status.State), orDash(s.Status.Health), orDash(s.Status.Message)},
					[]string{s.ID, age(s.CreatedAt), labelString(s.Labels)}})
			}
			return rows, list, nil
		},
	}
}

func serviceListing(stack *string) listing {
	return listing{
		header:     []string{"NAME", "STACK", "KIND", "SCALE", "STATE", "HEALTH", "ENDPOINTS"},
		wideHeader: []string{"ID", "IMAGE", "AGE", "MESSAGE"},
		fetch: func(ctx context.Context, opts client.ListOptions) ([]row, any, error) {
			c := clientFrom(ctx)
			names, err := stackNames(ctx, c, *stack, &opts)
			if err != nil {
				return nil, nil, err
			}
			list, _, err := c.Services().List(ctx, opts)
			if err != nil {
				return nil, nil, err
			}
			sort.Slice(list, func(i, j int) bool {
				return names[list[i].Spec.StackID]+"/"+list[i].Name < names[list[j].Spec.StackID]+"/"+list[j].Name
			})
			var rows []row
			for _, s := range list {
				scale := "-"
				switch {
				case s.Spec.Global:
					scale = "global"
				case s.Spec.Scale != nil:
					scale = fmt.Sprint(*s.Spec.Scale)
				}
				var eps []string
				for _, e := range s.Status.PublicEndpoints {
					eps = append(eps, fmt.Sprintf("%s:%d", e.IP, e.Port))
				}
				image := "-"
				if s.Spec.LaunchConfig != nil && s.Spec.LaunchConfig.Image != "" {
					image = s.Spec.LaunchConfig.Image
				}
				rows = append(rows, row{s.ID, []string{s.Name, orDash(names[s.Spec.StackID]), orDash(s.Spec.Kind), scale, orDash(s.Status.State), orDash(s.Status.Health), orDash(strings.Join(eps, ","))},
					[]string{s.ID, image, age(s.CreatedAt), orDash(s.Status.Message)}})
			}
			return rows, list, nil
		},
	}
}

// stackNames maps stack ids to names and, when stack names one, narrows
// opts to it.
func stackNames(ctx context.Context, c *client.Client, stack string, opts *client.ListOptions) (map[string]string, error) {
	sts, _, err := c.Stacks().List(ctx, client.ListOptions{})
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	for _, s := range sts {
		names[s.ID] = s.Name
		if stack != "" && s.Name == stack {
			opts.StackID = s.ID
		}
	}
	if stack != "" && opts.StackID == "" {
		return nil, fmt.Errorf("no stack named %q", stack)
	}
	return names, nil
}

func containerListing(stack *string) listing {
	return listing{
		header:     []string{"NAME", "STACK", "SERVICE", "HOST", "IMAGE", "STATE", "HEALTH", "IP"},
		wideHeader: []string{"ID", "STARTS", "AGE", "MESSAGE"},
		fetch: func(ctx context.Context, opts client.ListOptions) ([]row, any, error) {
			c := clientFrom(ctx)
			names, err := stackNames(ctx, c, *stack, &opts)
			if err != nil {
				return nil, nil, err
			}
			ctrs, _, err := c.Containers().List(ctx, opts)
			if err != nil {
				return nil, nil, err
			}
			hosts, _, _ := c.Hosts().List(ctx, client.ListOptions{})
			hostName := map[string]string{}
			for _, h := range hosts {
				hostName[h.ID] = h.Name
			}
			svcs, _, _ := c.Services().List(ctx, client.ListOptions{StackID: opts.StackID})
			svcName := map[string]string{}
			for _, s := range svcs {
				svcName[s.ID] = s.Name
			}
			sort.Slice(ctrs, func(i, j int) bool { return ctrs[i].Name < ctrs[j].Name })
			var rows []row
			for _, ct := range ctrs {
				image := ""
				if ct.Spec.LaunchConfig != nil {
					image = ct.Spec.LaunchConfig.Image
				}
				rows = append(rows, row{ct.ID, []string{ct.Name, orDash(names[ct.Spec.StackID]), orDash(svcName[ct.Spec.ServiceID]), orDash(hostName[ct.Spec.HostID]), orDash(image), orDash(ct.Status.State), orDash(ct.Status.Health), orDash(ct.Status.PrimaryIP)},
					[]string{ct.ID, fmt.Sprint(ct.Status.StartCount), age(ct.CreatedAt), orDash(ct.Status.Message)}})
			}
			return rows, ctrs, nil
		},
	}
}

func hostListing() listing {
	return listing{
		header:     []string{"NAME", "STATE", "IP", "DOCKER", "CONTAINERS", "LABELS"},
		wideHeader: []string{"ID", "SUBNET", "AGE", "MESSAGE"},
		fetch: func(ctx context.Context, opts client.ListOptions) ([]row, any, error) {
			c := clientFrom(ctx)
			hosts, _, err := c.Hosts().List(ctx, opts)
			if err != nil {
				return nil, nil, err
			}
			ctrs, _, err := c.Containers().List(ctx, client.ListOptions{})
			if err != nil {
				return nil, nil, err
			}
			count := map[string]int{}
			for _, ct := range ctrs {
				count[ct.Spec.HostID]++
			}
			var rows []row
			for _, h := range hosts {
				state := h.Status.State
				if h.Spec.Unschedulable {
					state += ",cordoned"
				}
				rows = append(rows, row{h.ID, []string{h.Name, state, orDash(h.Status.AgentIP), orDash(h.Status.DockerVersion), fmt.Sprint(count[h.ID]), labelString(h.Labels)},
					[]string{h.ID, orDash(h.Status.Subnet), age(h.CreatedAt), orDash(h.Status.Message)}})
			}
			return rows, hosts, nil
		},
	}
}
