package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// helpTexts are commands' descriptions and examples, keyed by the name
// their flag set (or cobra command) carries.
var helpTexts = map[string]string{
	"drover stack": `Stacks: compose files (or Kubernetes templates) deployed, upgraded, rolled back and removed as one unit.

Commands:
  up NAME        create or upgrade a stack from its files, and wait until it is active
  ls             list stacks
  rm NAME        remove a stack and everything it made
  rollback NAME  go back to the files before the last change

Examples:
  drover stack up shop -f docker-compose.yml -f rancher-compose.yml --answers answers.txt
  drover stack up es --template ./es-cluster/7 --dry-run
  drover stack up web --kind kubernetes --namespace web -f app.yaml
  drover stack ls -o wide`,
	"drover stack up NAME": `Create or upgrade a stack and wait until it is active and healthy; each
container's state is shown as it changes, and a container that fails (its
image missing, a crash loop) stops the wait at once, naming it.

Examples:
  drover stack up shop -f docker-compose.yml -f rancher-compose.yml --answers answers.txt
  drover stack up shop -f docker-compose.yml -f docker-compose.prod.yml   # merged in order
  drover stack up es --template ./es-cluster/7 --answers answers.txt --dry-run
  drover stack up web --kind kubernetes --namespace web -f app.yaml -f ./more/
  drover stack up demo --kind kubernetes -f ./chart --answers values.txt`,
	"drover stack ls": `List stacks.

Examples:
  drover stack ls
  drover stack ls -o wide -l team=a
  drover stack ls -o name
  drover stack ls --watch`,
	"drover stack rm NAME": `Remove a stack: its services and containers (or, for a Kubernetes-template
stack, its Kubernetes objects), waiting until they are gone.

Example:
  drover stack rm shop`,
	"drover stack rollback NAME": `Go back to the stack's files before its last change.

Example:
  drover stack rollback shop`,
	"drover host": `Hosts: the machines agents run on.

Examples:
  drover host ls
  drover host ls -o wide -l zone=a
  drover host ls --watch`,
	"drover host ls": `List hosts: state, address, Docker version, containers, labels.

Examples:
  drover host ls
  drover host ls -o yaml
  drover host ls -l zone=a --watch`,
	"drover service": `Services: the scaled sets of containers (and load balancers, aliases,
external services) stacks declare.

Examples:
  drover service ls --stack shop
  drover service ls -o wide`,
	"drover service ls": `List services.

Examples:
  drover service ls
  drover service ls --stack shop -o wide
  drover service ls -l io.rancher.stack.name=shop -o name`,
	"drover ps": `List containers.

Examples:
  drover ps
  drover ps --stack shop -o wide
  drover ps -l io.drover.service.name=web --watch`,
	"drover inspect KIND NAME": `Print one object of the engine as YAML (or -o json): a stack, service,
container, host, network, certificate, API key or registration token, by
name or id.

Examples:
  drover inspect stack shop
  drover inspect container shop-web-1 -o json
  drover inspect host h-6sn3xk2yqf4d`,
}

// newRoot is the drover command tree. Each command parses its own flags
// (pflag: flags anywhere, --help everywhere); cobra gives the command
// list, help, suggestions and shell completion.
func newRoot(ctx context.Context, stdout, stderr io.Writer, runErr *error) *cobra.Command {
	root := &cobra.Command{
		Use:   "drover",
		Short: "Kubernetes on plain hosts, bridged to an infrastructure engine",
		Long: `drover runs an engine (drover server) that manages hosts and stacks of compose-format
services, Kubernetes as one of those stacks (drover up), and the bridges between the two.`,
		Example: `  drover up                                   # Kubernetes on this host
  drover stack up shop -f docker-compose.yml  # a compose stack
  drover ps --stack shop -o wide
  drover host ls --watch`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	for _, c := range commands() {
		c := c
		sub := &cobra.Command{
			Use:                c.name,
			Short:              c.summary,
			DisableFlagParsing: true, // the command's own flag set parses (and helps)
			RunE: func(cmd *cobra.Command, args []string) error {
				*runErr = c.run(ctx, args, stdout, stderr)
				return nil
			},
			ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
				return c.subcommands, cobra.ShellCompDirectiveNoFileComp
			},
		}
		if h, ok := helpTexts["drover "+c.name]; ok {
			sub.Long = c.summary + "\n\n" + h
		}
		root.AddCommand(sub)
	}
	return root
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stdout)
		return usageError{"no command given"}
	}
	var runErr error
	root := newRoot(ctx, stdout, stderr, &runErr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		msg := err.Error()
		if strings.HasPrefix(msg, "unknown command") || strings.HasPrefix(msg, "unknown flag") || strings.Contains(msg, "flag needs") {
			return usageError{strings.ReplaceAll(strings.TrimSpace(msg), "\n", " ")}
		}
		return err
	}
	return runErr
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: drover COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-18s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "  completion         shell completion scripts (bash, zsh, fish, powershell)\n  help               show this text\n\nRun 'drover COMMAND --help' for a command's flags and examples.")
}
