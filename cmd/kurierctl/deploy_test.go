package main

// Keeps deploy/ honest on kurierctl's side: the CA's example configuration
// and unit, and the kurierctl command lines of the compose bootstrap.

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/cmd/internal/deploytest"
)

const deployDir = "../../deploy"

// parseCtl runs kurierctl's real parser on args with exactly env set and
// returns the flags' values as the command's action would see them.
func parseCtl(t *testing.T, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	c := newCLITest(t)
	newApp := func(stderr io.Writer) *cli.App {
		e := c.env(nil, nil)
		e.stderr = stderr
		return e.app()
	}
	return deploytest.Parse(t, newApp, env, reorderArgs(newApp(io.Discard), args)...)
}

func TestDeployCAConfig(t *testing.T) {
	path := filepath.Join(deployDir, "config", "kurierctl-ca.env")
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
	for _, l := range deploytest.ReadEnvFile(t, path) {
		flag, ok := serve[l.Key]
		if !ok {
			t.Errorf("%s:%d: $%s is no flag of kurierctl ca serve", path, l.Line, l.Key)
			continue
		}
		seen[l.Key] = true
		if l.Active {
			active[l.Key] = l.Value
			continue
		}
		got, err := parseCtl(t, map[string]string{l.Key: l.Value}, "kurierctl", "ca", "serve")
		if err != nil || got[flag] != defaults[flag] {
			t.Errorf("%s:%d: #%s=%s is not the default of --%s (%q): %q, %v", path, l.Line, l.Key, l.Value, flag, defaults[flag], got[flag], err)
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
