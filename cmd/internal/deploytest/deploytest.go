// Package deploytest holds what the binaries' tests share to keep deploy/
// honest against the real command lines: reading the example env files
// and running the real flag parser with exactly a given environment.
package deploytest

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// Line is one variable of an env file: set, or commented out to show its
// default.
type Line struct {
	Key, Value string
	Active     bool
	Line       int // 1-based
}

var lineRE = regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)

// ReadEnvFile parses an env file and fails t for a line that is neither a
// comment nor VAR=value, a quoted value (systemd and compose read quotes
// differently), and a variable without a comment above it.
func ReadEnvFile(t *testing.T, path string) []Line {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	var out []Line
	for i, l := range lines {
		m := lineRE.FindStringSubmatch(l)
		if m == nil {
			if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
				continue
			}
			t.Errorf("%s:%d: neither a comment nor VAR=value: %q", path, i+1, l)
			continue
		}
		if strings.ContainsAny(m[3], `"'`) {
			t.Errorf("%s:%d: quoted value; systemd and compose read quotes differently", path, i+1)
		}
		out = append(out, Line{Key: m[2], Value: m[3], Active: m[1] == "", Line: i + 1})
		j := i - 1
		for j >= 0 && lineRE.MatchString(lines[j]) {
			j--
		}
		if j < 0 || !strings.HasPrefix(lines[j], "# ") {
			t.Errorf("%s:%d: $%s has no comment above it", path, i+1, m[2])
		}
	}
	return out
}

// Parse runs the real parser of the app newApp makes (writing errors to
// stderr) on args with exactly env set (every other KURIER_ variable
// cleared for the rest of the test), every action replaced by one that
// records its flags' values, and returns them.
func Parse(t *testing.T, newApp func(stderr io.Writer) *cli.App, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KURIER_") {
			t.Setenv(k, "") // restored after the test
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var stderr strings.Builder
	app := newApp(&stderr)
	got := map[string]string{}
	var capture func(cmds []*cli.Command)
	capture = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			cmd.Action = func(c *cli.Context) error {
				for _, f := range cmd.Flags {
					n := f.Names()[0]
					got[n] = fmt.Sprint(c.Value(n))
				}
				return nil
			}
			capture(cmd.Subcommands)
		}
	}
	capture(app.Commands)
	if err := app.Run(args); err != nil {
		return nil, fmt.Errorf("%w %s", err, stderr.String())
	}
	return got, nil
}
