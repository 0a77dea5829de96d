// Command kurier is Kurier's runtime binary: a member enrols with it, and it
// runs the public relay, the private proxy and the endpoint server. It talks
// to the network CA over HTTP only; the CA itself is kurierctl's.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/cmd/internal/buildinfo"
	"github.com/kurier-net/kurier/cmd/internal/cliflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ error }

func usagef(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// run is the whole program; main only wires it to the process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := newApp(stdin, stdout, stderr).RunContext(ctx, args)
	switch {
	case err == nil:
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "kurier: %v\n(see kurier --help)\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "kurier: %v\n", err)
		return 1
	}
}

// newApp builds the command tree, every flag with its environment variable.
func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:  "kurier",
		Usage: "Kurier runtime: enrol a member, run a relay, a private proxy or an endpoint server",
		Description: `Kurier moves contact data between health offices and app vendors through
relays that cannot read it. Every long-running command keeps its
certificate fresh and follows the signed member directory on its own.

Getting started on a member's machine:
   kurier enroll --ca https://ca.example:9000 --fingerprint <root sha256> \
       --token <one-time token> --dir /var/lib/kurier
   kurier relay --state /var/lib/kurier            (a relay operator)
   kurier proxy --state /var/lib/kurier --route hd-1.net=127.0.0.1:8443

Every flag may also be given as an environment variable, shown in [$...]
after it: KURIER_ and the flag's name in capitals with - as _ (e.g.
--directory-interval is KURIER_DIRECTORY_INTERVAL). A flag given on the
command line wins over its variable. See deploy/config/ for examples.`,
		Version:         buildinfo.String(),
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // run decides the exit code
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
		Commands: []*cli.Command{
			enrollCommand(),
			relayCommand(),
			proxyCommand(),
			epsCommand(),
			statusCommand(),
		},
	}
	cliflag.SetEnvVars(app.Commands, func(path, flag string) string {
		return envVar(path[strings.LastIndex(path, " ")+1:], flag) // the command's own name
	})
	return app
}

// envPrefix starts the name of every environment variable kurier reads.
const envPrefix = "KURIER_"

// commandScopedFlags are flags whose name means different things in
// different commands; their variables carry the command's name, e.g.
// --token-file is KURIER_ENROLL_TOKEN_FILE (the enrolment token) for
// enroll and KURIER_EPS_TOKEN_FILE (the local API's bearer token) for eps.
// Every other flag means the same wherever it appears and has one variable.
var commandScopedFlags = map[string]bool{"token-file": true}

// envVar is the environment variable of flag name in command cmd.
func envVar(cmd, name string) string {
	v := envPrefix
	if commandScopedFlags[name] {
		v += envName(cmd) + "_"
	}
	return v + envName(name)
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }
