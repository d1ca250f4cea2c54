package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/drover/drover/api"
	"github.com/drover/drover/client"
)

// runInspect prints one engine object, found by name or id.
func runInspect(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, cf := newCLIFlags("drover inspect KIND NAME", stderr)
	out := fs.StringP("output", "o", "yaml", "output: yaml or json")
	cf.output = out
	c, err := cf.connect(fs, args)
	if c == nil {
		return err // nil after -h
	}
	if fs.NArg() != 2 {
		return usageError{"usage: drover inspect KIND NAME (kinds: stack, service, container, host, network, certificate, apikey, registrationtoken)"}
	}
	if *out != "yaml" && *out != "json" {
		return usageError{fmt.Sprintf("-o %q: use yaml or json", *out)}
	}
	kind, name := strings.TrimSuffix(strings.ToLower(fs.Arg(0)), "s"), fs.Arg(1)
	var obj any
	switch kind {
	case "stack":
		obj, err = findOne(ctx, c.Stacks(), "st-", name)
	case "service", "svc":
		obj, err = findOne(ctx, c.Services(), "svc-", name)
	case "container", "ctr":
		obj, err = findOne(ctx, c.Containers(), "c-", name)
	case "host":
		obj, err = findOne(ctx, c.Hosts(), "h-", name)
	case "network", "net":
		obj, err = findOne(ctx, c.Networks(), "net-", name)
	case "certificate", "cert":
		obj, err = findOne(ctx, c.Certificates(), "cert-", name)
	case "apikey":
		obj, err = findOne(ctx, c.APIKeys(), "", name)
	case "registrationtoken":
		obj, err = findOne(ctx, c.RegistrationTokens(), "", name)
	default:
		return usageError{fmt.Sprintf("drover inspect: unknown kind %q (stack, service, container, host, network, certificate, apikey, registrationtoken)", fs.Arg(0))}
	}
	if err != nil {
		return err
	}
	return cf.print(stdout, obj, nil, nil)
}

// findOne gets an object by id (when name looks like one) or by name.
func findOne[T any](ctx context.Context, r *client.Resource[T], prefix, name string) (*T, error) {
	if prefix != "" && strings.HasPrefix(name, prefix) {
		if o, err := r.Get(ctx, name); err == nil {
			return o, nil
		} else if !api.IsNotFound(err) {
			return nil, err
		}
	}
	list, _, err := r.List(ctx, client.ListOptions{Name: name})
	if err != nil {
		return nil, err
	}
	if len(list) == 0 {
		if o, err := r.Get(ctx, name); err == nil {
			return o, nil
		}
		return nil, fmt.Errorf("no %s named %q", strings.TrimSuffix(r.Collection(), "s"), name)
	}
	return &list[0], nil
}
