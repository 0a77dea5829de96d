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
	"syscall"

	"github.com/urfave/cli/v2"
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
   kurier proxy --state /var/lib/kurier --route hd-1.net=127.0.0.1:8443`,
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
	err := app.RunContext(ctx, args)
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
