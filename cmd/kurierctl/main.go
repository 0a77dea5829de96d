// Command kurierctl is the Kurier network operator's tool: it creates and
// serves the network CA, enrols and manages members, and signs, verifies and
// inspects the member directory.
//
//	kurierctl ca init --network kurier.example --dir /srv/kurier-ca --dns-name ca.kurier.example
//	kurierctl ca serve --dir /srv/kurier-ca --listen :8443
//	kurierctl member add hd-berlin --dir /srv/kurier-ca --role health-office --display-name "GA Berlin"
//	kurierctl directory sign --dir /srv/kurier-ca
//
// Results go to stdout (as JSON with --json), diagnostics to stderr. Exit
// codes: 0 success, 1 failure, 2 usage error. See docs/pki.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/kurier-net/kurier/cmd/internal/buildinfo"
	"github.com/kurier-net/kurier/cmd/internal/cliflag"
)

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// env is everything kurierctl takes from its surroundings, so tests can
// replace it.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	// lookupEnv reads an environment variable.
	lookupEnv func(string) (string, bool)
	// now is the clock for tokens, member records and directories.
	now func() time.Time
	// readPassword prompts on the terminal and reads a line without echo.
	// It is nil when stdin is not a terminal.
	readPassword func(prompt string) ([]byte, error)
	// onListen, if not nil, is told the address `ca serve` listens on.
	onListen func(net.Addr)
}

// run runs kurierctl with args (args[0] is the program name) and returns the
// exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr, lookupEnv: os.LookupEnv, now: time.Now}
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		e.readPassword = func(prompt string) ([]byte, error) {
			fmt.Fprint(stderr, prompt)
			defer fmt.Fprintln(stderr)
			return term.ReadPassword(int(f.Fd()))
		}
	}
	return e.run(ctx, args)
}

// usageError is a mistake in how kurierctl was called; it exits with 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// errReported is returned by an action that already printed its failure
// (for example as JSON); run exits 1 without printing more.
var errReported = errors.New("failure already reported")

func (e *env) run(ctx context.Context, args []string) int {
	app := e.app()
	if len(args) == 0 {
		args = []string{"kurierctl"}
	}
	err := app.RunContext(ctx, reorderArgs(app, args))
	if err == nil {
		return 0
	}
	if errors.Is(err, errReported) {
		return 1
	}
	if ue, ok := errors.AsType[*usageError](err); ok {
		fmt.Fprintf(e.stderr, "kurierctl: %s\nRun 'kurierctl --help' or add --help to a command for usage.\n", ue.msg)
		return 2
	}
	fmt.Fprintf(e.stderr, "kurierctl: %v\n", err)
	return 1
}

func (e *env) app() *cli.App {
	app := &cli.App{
		Name:  "kurierctl",
		Usage: "operate a Kurier network: its CA, its members and its signed directory",
		Description: `kurierctl runs the network CA and manages the network's members and directory.
Commands read as noun, then verb. Results go to stdout; --json makes them
machine-readable. Diagnostics go to stderr. Exit codes: 0 success, 1 failure,
2 usage error.

The CA passphrase is taken from --passphrase-file, else from the environment
variable KURIER_CA_PASSPHRASE, else asked for on the terminal.`,
		Writer:          e.stdout,
		ErrWriter:       e.stderr,
		Version:         buildinfo.String(),
		HideHelpCommand: true,
		// kurierctl decides exit codes itself; urfave/cli must never exit.
		ExitErrHandler: func(*cli.Context, error) {},
		Action:         groupAction,
		Commands: []*cli.Command{
			e.caCommand(),
			e.memberCommand(),
			e.directoryCommand(),
			e.demoCommand(),
		},
	}
	app.OnUsageError = onUsageError
	for _, c := range app.Commands {
		setUsageHandlers(c)
	}
	cliflag.SetEnvVars(app.Commands, func(path, flag string) string {
		if envCommands[path] {
			return envVar(flag)
		}
		return "" // the others have at most --dir's $KURIER_CA_DIR, set by dirFlag
	})
	return app
}

// envCommands are the commands whose every flag may come from the
// environment: the long-running ones, configured by a service manager.
// Other commands take only $KURIER_CA_DIR (and the passphrase), so what an
// operator changes is always on the command line.
var envCommands = map[string]bool{"ca serve": true}

// envVar is the environment variable of flag name: KURIER_CA_ and the name
// in capitals with - as _, e.g. --drain-timeout is KURIER_CA_DRAIN_TIMEOUT.
// The prefix keeps them apart from kurier's KURIER_* variables.
func envVar(name string) string {
	return "KURIER_CA_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

func onUsageError(_ *cli.Context, err error, _ bool) error {
	return &usageError{msg: err.Error()}
}

func setUsageHandlers(c *cli.Command) {
	c.OnUsageError = onUsageError
	c.HideHelpCommand = true
	if len(c.Subcommands) > 0 && c.Action == nil {
		c.Action = groupAction
	}
	for _, s := range c.Subcommands {
		setUsageHandlers(s)
	}
}

// groupAction runs for a command group called without a known subcommand.
func groupAction(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("unknown command %q", c.Args().First())
	}
	cli.ShowSubcommandHelp(c)
	return usagef("missing command")
}

// reorderArgs moves the flags of the leaf command named in args in front of
// its positional arguments, so `member show hd-1 --json` works as well as
// `member show --json hd-1` (urfave/cli v2 stops parsing flags at the first
// positional argument). Everything after "--" stays positional.
func reorderArgs(app *cli.App, args []string) []string {
	cmds := app.Commands
	var leaf *cli.Command
	i := 1
	for i < len(args) {
		var next *cli.Command
		for _, c := range cmds {
			if c.HasName(args[i]) {
				next = c
				break
			}
		}
		if next == nil {
			break
		}
		leaf, cmds = next, next.Subcommands
		i++
	}
	if leaf == nil || len(leaf.Subcommands) > 0 {
		return args
	}
	isBool := map[string]bool{"help": true, "h": true}
	for _, f := range leaf.Flags {
		if _, ok := f.(*cli.BoolFlag); ok {
			for _, n := range f.Names() {
				isBool[n] = true
			}
		}
	}
	out := append([]string(nil), args[:i]...)
	var pos []string
	rest := args[i:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		switch {
		case a == "--":
			pos = append(pos, rest[j:]...)
			j = len(rest)
		case strings.HasPrefix(a, "-") && a != "-":
			out = append(out, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && !isBool[name] && j+1 < len(rest) {
				j++
				out = append(out, rest[j])
			}
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) > 0 && pos[0] != "--" {
		out = append(out, "--")
	}
	return append(out, pos...)
}
