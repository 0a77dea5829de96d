package main

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// TestEnvVarsEveryFlag checks that every flag of every command has exactly
// one environment variable, named by envVar, and that a variable shared by
// several commands stands for flags of the same name, type and default.
func TestEnvVarsEveryFlag(t *testing.T) {
	type use struct{ cmd, flag, typ, def string }
	byVar := map[string][]use{}
	n := 0
	for _, cmd := range newApp(nil, io.Discard, io.Discard).Commands {
		for _, f := range cmd.Flags {
			name := f.Names()[0]
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				t.Errorf("%s --%s: %T has no environment variables", cmd.Name, name, f)
				continue
			}
			got := df.GetEnvVars()
			if want := envVar(cmd.Name, name); len(got) != 1 || got[0] != want {
				t.Errorf("%s --%s: environment variables %q, want [%s]", cmd.Name, name, got, want)
				continue
			}
			byVar[got[0]] = append(byVar[got[0]], use{cmd.Name, name, fmt.Sprintf("%T", f), df.GetValue()})
			n++
		}
	}
	if n < 40 {
		t.Errorf("only %d flags seen; is the command tree complete?", n)
	}
	for v, uses := range byVar {
		for _, u := range uses[1:] {
			if u.flag != uses[0].flag || u.typ != uses[0].typ || u.def != uses[0].def {
				t.Errorf("$%s stands for %+v and %+v: give the flag a command-scoped variable (commandScopedFlags)", v, uses[0], u)
			}
		}
	}
	// The scoped flag really is scoped: --token-file is two things.
	for _, v := range []string{"KURIER_ENROLL_TOKEN_FILE", "KURIER_EPS_TOKEN_FILE"} {
		if len(byVar[v]) != 1 {
			t.Errorf("$%s: %+v, want exactly one flag", v, byVar[v])
		}
	}
}

// TestEnvVarsSetFlags sets every flag of every command through its
// environment variable only, runs the real command-line parser, and checks
// the values the command's action sees; then that the command line wins.
func TestEnvVarsSetFlags(t *testing.T) {
	for _, proto := range newApp(nil, io.Discard, io.Discard).Commands {
		t.Run(proto.Name, func(t *testing.T) {
			want := map[string]any{}
			for i, f := range proto.Flags {
				name := f.Names()[0]
				var val string
				switch f.(type) {
				case *cli.StringFlag:
					val = "env-" + name
					want[name] = val
				case *cli.BoolFlag:
					val = "true"
					want[name] = true
				case *cli.DurationFlag:
					d := time.Duration(i+1)*time.Minute + 7*time.Second
					val = d.String()
					want[name] = d
				case *cli.IntFlag:
					want[name] = 1000 + i
					val = fmt.Sprint(1000 + i)
				case *cli.StringSliceFlag:
					val = "a-" + name + ",b-" + name
					want[name] = []string{"a-" + name, "b-" + name}
				default:
					t.Fatalf("--%s: no test value for %T", name, f)
				}
				v := envVar(proto.Name, name)
				t.Setenv(v, val)
			}

			got := runCaptured(t, proto.Name)
			for name, w := range want {
				if g := got[name]; fmt.Sprint(g) != fmt.Sprint(w) {
					t.Errorf("--%s from $%s = %v, want %v", name, envVar(proto.Name, name), g, w)
				}
			}

			// A flag on the command line wins over its variable.
			name := proto.Flags[0].Names()[0]
			got = runCaptured(t, proto.Name, "--"+name+"=cli-value")
			if got[name] != "cli-value" {
				t.Errorf("--%s=cli-value with $%s set: got %v", name, envVar(proto.Name, name), got[name])
			}
		})
	}
}

// runCaptured runs kurier's real app with the named command's action
// replaced by one that records the value of every flag.
func runCaptured(t *testing.T, command string, args ...string) map[string]any {
	t.Helper()
	var stderr bytes.Buffer
	app := newApp(nil, io.Discard, &stderr)
	got := map[string]any{}
	ran := false
	for _, cmd := range app.Commands {
		if cmd.Name != command {
			continue
		}
		cmd.Action = func(c *cli.Context) error {
			ran = true
			for _, f := range cmd.Flags {
				name := f.Names()[0]
				switch f.(type) {
				case *cli.StringFlag:
					got[name] = c.String(name)
				case *cli.BoolFlag:
					got[name] = c.Bool(name)
				case *cli.DurationFlag:
					got[name] = c.Duration(name)
				case *cli.IntFlag:
					got[name] = c.Int(name)
				case *cli.StringSliceFlag:
					got[name] = slices.Clone(c.StringSlice(name))
				}
			}
			return nil
		}
	}
	if err := app.Run(append([]string{"kurier", command}, args...)); err != nil || !ran {
		t.Fatalf("kurier %s %s: err %v, action ran %v\n%s", command, strings.Join(args, " "), err, ran, stderr.String())
	}
	return got
}

// TestEnvVarsInHelp checks that --help names the variables.
func TestEnvVarsInHelp(t *testing.T) {
	var out bytes.Buffer
	if code := run(t.Context(), []string{"kurier", "eps", "--help"}, nil, &out, io.Discard); code != 0 {
		t.Fatalf("kurier eps --help: exit %d", code)
	}
	for _, want := range []string{"[$KURIER_STATE]", "[$KURIER_EPS_TOKEN_FILE]", "[$KURIER_DRAIN_TIMEOUT]"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("kurier eps --help lacks %s:\n%s", want, out.String())
		}
	}
}

// TestEnvVarReachesAction checks end to end, with the real action, that a
// variable is what the command works with: status reads the state
// directory named by $KURIER_STATE.
func TestEnvVarReachesAction(t *testing.T) {
	dir := t.TempDir() + "/not-enrolled"
	t.Setenv("KURIER_STATE", dir)
	var stderr bytes.Buffer
	code := run(t.Context(), []string{"kurier", "status"}, nil, io.Discard, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), dir) {
		t.Errorf("kurier status with $KURIER_STATE=%s: exit %d, %q; want exit 1 naming the directory", dir, code, stderr.String())
	}
	t.Setenv("KURIER_STATE", "")
	stderr.Reset()
	if code := run(t.Context(), []string{"kurier", "status"}, nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "--state required") {
		t.Errorf("kurier status without a state: exit %d, %q; want the usage error", code, stderr.String())
	}
}
