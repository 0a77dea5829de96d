package main

// Keeps deploy/ honest on kurierctl's side: the CA's example configuration
// and unit, and the kurierctl command lines of the compose bootstrap.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

const deployDir = "../../deploy"

// parseCtl runs kurierctl's real parser on args with exactly env set (other
// KURIER_ variables cleared) and every action replaced by one that records
// the flags' values.
func parseCtl(t *testing.T, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "KURIER_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var stdout, stderr bytes.Buffer
	app := newCLITest(t).env(&stdout, &stderr).app()
	got := map[string]string{}
	var capture func(cmds []*cli.Command)
	capture = func(cmds []*cli.Command) {
		for _, cmd := range cmds {
			if len(cmd.Subcommands) == 0 {
				cmd.Action = func(c *cli.Context) error {
					for _, f := range cmd.Flags {
						got[f.Names()[0]] = fmt.Sprint(c.Value(f.Names()[0]))
					}
					return nil
				}
			}
			capture(cmd.Subcommands)
		}
	}
	capture(app.Commands)
	if err := app.Run(reorderArgs(app, args)); err != nil {
		return nil, fmt.Errorf("%w %s", err, stderr.String())
	}
	return got, nil
}

var envRE = regexp.MustCompile(`^(#?)([A-Z][A-Z0-9_]*)=(.*)$`)

func TestDeployCAConfig(t *testing.T) {
	path := filepath.Join(deployDir, "config", "kurierctl-ca.env")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	serve := map[string]string{} // variable → flag
	for _, c := range newCLITest(t).env(nil, nil).app().Commands[0].Subcommands {
		if c.Name == "serve" {
			for _, f := range c.Flags {
				serve[f.(cli.DocGenerationFlag).GetEnvVars()[0]] = f.Names()[0]
			}
		}
	}
	defaults, err := parseCtl(t, nil, "kurierctl", "ca", "serve")
	if err != nil {
		t.Fatal(err)
	}
	active := map[string]string{}
	seen := map[string]bool{}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		m := envRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		flag, ok := serve[m[2]]
		if !ok {
			t.Errorf("%s:%d: $%s is no flag of kurierctl ca serve", path, i+1, m[2])
			continue
		}
		seen[m[2]] = true
		if !strings.HasPrefix(lines[i-1], "# ") {
			t.Errorf("%s:%d: $%s has no comment above it", path, i+1, m[2])
		}
		if m[1] == "" {
			active[m[2]] = m[3]
			continue
		}
		got, err := parseCtl(t, map[string]string{m[2]: m[3]}, "kurierctl", "ca", "serve")
		if err != nil || got[flag] != defaults[flag] {
			t.Errorf("%s:%d: #%s=%s is not the default of --%s (%q): %q, %v", path, i+1, m[2], m[3], flag, defaults[flag], got[flag], err)
		}
	}
	for v, f := range serve {
		if !seen[v] {
			t.Errorf("%s lacks $%s (--%s)", path, v, f)
		}
	}

	// The unit runs exactly `kurierctl ca serve` with that file, and its
	// state directory is the CA directory.
	unit, err := os.ReadFile(filepath.Join(deployDir, "systemd", "kurierctl-ca.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nExecStart=/usr/local/bin/kurierctl ca serve\n", "\nEnvironmentFile=/etc/kurier/kurierctl-ca.env\n", "\nDynamicUser=yes\n", "\nCapabilityBoundingSet=\n"} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("kurierctl-ca.service lacks %q", strings.TrimSpace(want))
		}
	}
	got, err := parseCtl(t, active, "kurierctl", "ca", "serve")
	if err != nil {
		t.Fatal(err)
	}
	sd := regexp.MustCompile(`\nStateDirectory=(\S+)\n`).FindSubmatch(unit)
	if sd == nil || got["dir"] != "/var/lib/"+string(sd[1]) {
		t.Errorf("the CA directory is %q but the unit's StateDirectory is %q", got["dir"], sd)
	}
}

// TestDeployComposeCtl checks the KURIER_CA_ variables of compose.yaml and
// that every kurierctl command line of the bootstrap scripts parses.
func TestDeployComposeCtl(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s+(KURIER_CA_[A-Z_]+):`).FindAllSubmatch(b, -1) {
		if _, err := parseCtl(t, map[string]string{string(m[1]): "x"}, "kurierctl", "ca", "serve"); err != nil {
			t.Errorf("compose.yaml: $%s: %v", m[1], err)
		}
		name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(string(m[1]), "KURIER_CA_"), "_", "-"))
		if envVar(name) != string(m[1]) || !slices.Contains(serveFlagNames(t), name) {
			t.Errorf("compose.yaml: $%s is no flag of kurierctl ca serve", m[1])
		}
	}
	files, _ := filepath.Glob(filepath.Join(deployDir, "compose", "*.sh"))
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, l := range strings.Split(text, "\n") {
			l = strings.TrimSpace(l)
			if !strings.HasPrefix(l, "kurierctl ") {
				continue
			}
			if i := strings.IndexAny(l, ";|>&"); i >= 0 {
				l = l[:i]
			}
			argv := expandWords(l)
			n++
			if _, err := parseCtl(t, map[string]string{"KURIER_CA_DIR": "/ca"}, argv...); err != nil {
				t.Errorf("%s: %s: %v", filepath.Base(f), l, err)
			}
		}
	}
	if n < 3 {
		t.Errorf("only %d kurierctl command lines in deploy/compose/*.sh", n)
	}
}

func serveFlagNames(t *testing.T) []string {
	var out []string
	for _, c := range newCLITest(t).env(nil, nil).app().Commands[0].Subcommands {
		if c.Name == "serve" {
			for _, f := range c.Flags {
				out = append(out, f.Names()[0])
			}
		}
	}
	return out
}

// expandWords splits a simple shell command into words; a quoted word that
// expands at run time ("$x", "$x:$y") becomes "X".
func expandWords(s string) []string {
	var out []string
	for _, w := range regexp.MustCompile(`"[^"]*"|\S+`).FindAllString(s, -1) {
		if strings.Contains(w, "$") {
			w = "X"
		}
		out = append(out, strings.Trim(w, `"`))
	}
	return out
}
