package main

// Keeps deploy/ honest: the example configuration, the systemd units and the
// compose file name only real flags, document every flag of the commands
// they run, and their command lines parse with the real command tree.

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/cmd/internal/deploytest"
)

const deployDir = "../../deploy"

// flagsOf returns the command's flags by environment variable.
func flagsOf(t *testing.T, command string) map[string]cli.Flag {
	t.Helper()
	out := map[string]cli.Flag{}
	for _, c := range newApp(nil, io.Discard, io.Discard).Commands {
		if c.Name == command {
			for _, f := range c.Flags {
				out[f.(cli.DocGenerationFlag).GetEnvVars()[0]] = f
			}
			return out
		}
	}
	t.Fatalf("no command %q", command)
	return nil
}

// parseWithEnv runs kurier's real parser on args with exactly env set and
// returns what the command's action would see, flag by flag.
func parseWithEnv(t *testing.T, env map[string]string, args ...string) (map[string]string, error) {
	t.Helper()
	return deploytest.Parse(t, func(stderr io.Writer) *cli.App { return newApp(nil, io.Discard, stderr) }, env, args...)
}

// runtimeEnvFiles maps each example configuration to its command.
var runtimeEnvFiles = map[string]string{
	"kurier-relay.env": "relay",
	"kurier-eps.env":   "eps",
	"kurier-proxy.env": "proxy",
}

func TestDeployEnvFiles(t *testing.T) {
	for file, command := range runtimeEnvFiles {
		t.Run(file, func(t *testing.T) {
			path := filepath.Join(deployDir, "config", file)
			lines := deploytest.ReadEnvFile(t, path)
			flags := flagsOf(t, command)
			seen := map[string]bool{}
			active := map[string]string{}
			for _, l := range lines {
				if _, ok := flags[l.Key]; !ok {
					t.Errorf("%s:%d: $%s is no flag of kurier %s", path, l.Line, l.Key, command)
					continue
				}
				if seen[l.Key] {
					t.Errorf("%s:%d: $%s appears twice", path, l.Line, l.Key)
				}
				seen[l.Key] = true
				if l.Active {
					active[l.Key] = l.Value
				}
			}
			for v, f := range flags {
				if !seen[v] {
					t.Errorf("%s lacks $%s (--%s)", path, v, f.Names()[0])
				}
			}
			// The settings parse, and a commented-out value is the default.
			if _, err := parseWithEnv(t, active, "kurier", command); err != nil {
				t.Errorf("kurier %s with %s: %v", command, file, err)
			}
			defaults, err := parseWithEnv(t, nil, "kurier", command)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range lines {
				if l.Active || flags[l.Key] == nil {
					continue
				}
				got, err := parseWithEnv(t, map[string]string{l.Key: l.Value}, "kurier", command)
				name := flags[l.Key].Names()[0]
				if err != nil || got[name] != defaults[name] {
					t.Errorf("%s:%d: #%s=%s is not the default of --%s (%q): %q, %v", path, l.Line, l.Key, l.Value, name, defaults[name], got[name], err)
				}
			}
		})
	}
}

// unit is the part of a systemd unit the tests look at.
type unit map[string][]string

func readUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if k, v, ok := strings.Cut(l, "="); ok && !strings.HasPrefix(l, "#") {
			u[k] = append(u[k], v)
		}
	}
	return u
}

func TestDeploySystemdUnits(t *testing.T) {
	for file, command := range runtimeEnvFiles {
		name := strings.TrimSuffix(file, ".env")
		t.Run(name, func(t *testing.T) {
			u := readUnit(t, filepath.Join(deployDir, "systemd", name+".service"))
			if got := u["ExecStart"]; len(got) != 1 || got[0] != "/usr/local/bin/kurier "+command {
				t.Errorf("ExecStart=%q, want /usr/local/bin/kurier %s (everything else in the env file)", got, command)
			}
			if got := u["EnvironmentFile"]; len(got) != 1 || got[0] != "/etc/kurier/"+file {
				t.Errorf("EnvironmentFile=%q, want /etc/kurier/%s", got, file)
			}
			env := map[string]string{}
			for _, l := range deploytest.ReadEnvFile(t, filepath.Join(deployDir, "config", file)) {
				if l.Active {
					env[l.Key] = l.Value
				}
			}
			argv := append([]string{"kurier"}, strings.Fields(u["ExecStart"][0])[1:]...)
			got, err := parseWithEnv(t, env, argv...)
			if err != nil {
				t.Fatalf("ExecStart with %s: %v", file, err)
			}
			if sd := u["StateDirectory"]; len(sd) != 1 || got["state"] != "/var/lib/"+sd[0] {
				t.Errorf("StateDirectory=%q but the state is %q", sd, got["state"])
			}
			drain, _ := time.ParseDuration(got["drain-timeout"])
			stop, err := time.ParseDuration(strings.Join(u["TimeoutStopSec"], ""))
			if err != nil || stop < drain+10*time.Second {
				t.Errorf("TimeoutStopSec=%q, want at least the drain timeout %v + 10s", u["TimeoutStopSec"], drain)
			}
			for _, k := range []string{"DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices", "LockPersonality", "MemoryDenyWriteExecute", "RestrictNamespaces"} {
				if v := u[k]; len(v) != 1 || v[0] != "yes" {
					t.Errorf("%s=%q, want yes", k, v)
				}
			}
			for k, want := range map[string]string{"ProtectSystem": "strict", "SystemCallArchitectures": "native", "Restart": "on-failure", "KillSignal": "SIGTERM"} {
				if v := u[k]; len(v) != 1 || v[0] != want {
					t.Errorf("%s=%q, want %s", k, v, want)
				}
			}
			if command == "relay" {
				if v := u["LimitNOFILE"]; len(v) != 1 || v[0] != "131072" {
					t.Errorf("LimitNOFILE=%q, want 131072", v)
				}
				port := got["public"][strings.LastIndex(got["public"], ":")+1:]
				needCap := len(port) < 4 || port < "1024" && len(port) == 4
				if hasCap := slices.Contains(u["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE"); hasCap != needCap {
					t.Errorf("public port %s but CapabilityBoundingSet=%q", port, u["CapabilityBoundingSet"])
				}
			} else if v := u["CapabilityBoundingSet"]; len(v) != 1 || v[0] != "" {
				t.Errorf("CapabilityBoundingSet=%q, want empty", v)
			}
		})
	}
}

// service is the part of a compose service the tests look at.
type service struct {
	image, entrypoint []string
	command           []string
	envFiles          []string
	env               map[string]string
}

// readCompose reads deploy/compose.yaml. It understands the plain subset
// the file is written in (no anchors): two-space indentation, commands and
// env_file as JSON arrays, environment as a map.
func readCompose(t *testing.T) map[string]*service {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "<<:") || strings.Contains(string(b), "*") && regexp.MustCompile(`:\s*\*\w`).Match(b) {
		t.Fatal("compose.yaml uses YAML anchors, which this test does not follow")
	}
	svcs := map[string]*service{}
	var cur *service
	inServices, inEnv := false, false
	jsonList := func(s string) []string {
		var l []string
		if err := json.Unmarshal([]byte(s), &l); err != nil {
			t.Fatalf("compose.yaml: %q is not a JSON list: %v", s, err)
		}
		return l
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		key, val, _ := strings.Cut(strings.TrimSpace(l), ":")
		val = strings.TrimSpace(val)
		switch {
		case indent == 0:
			inServices = key == "services"
			cur = nil
		case !inServices:
		case indent == 2:
			cur = &service{env: map[string]string{}}
			svcs[key] = cur
		case indent == 4:
			inEnv = key == "environment"
			switch key {
			case "image":
				cur.image = []string{val}
			case "entrypoint":
				cur.entrypoint = jsonList(val)
			case "command":
				cur.command = jsonList(val)
			case "env_file":
				cur.envFiles = jsonList(val)
			}
		case indent == 6 && inEnv:
			cur.env[key] = strings.Trim(val, `"`)
		}
	}
	return svcs
}

func TestDeployCompose(t *testing.T) {
	svcs := readCompose(t)
	bootstrap, err := os.ReadFile(filepath.Join(deployDir, "compose", "bootstrap.sh"))
	if err != nil {
		t.Fatal(err)
	}
	defaultPort := func(v string) string {
		m := regexp.MustCompile(v + `:-(\d+)\}`).FindSubmatch(bootstrap)
		if m == nil {
			t.Fatalf("bootstrap.sh has no default for %s", v)
		}
		return string(m[1])
	}
	daemons := 0
	for name, s := range svcs {
		if len(s.image) == 0 {
			t.Errorf("service %s has no image", name)
			continue
		}
		switch s.image[0] {
		case "kurier:local":
			daemons++
			command := s.command[0]
			env := map[string]string{}
			for _, f := range s.envFiles {
				if want := "./config/kurier-" + command + ".env"; f != want {
					t.Errorf("%s: env_file %s, want %s", name, f, want)
				}
				for _, l := range deploytest.ReadEnvFile(t, filepath.Join(deployDir, f)) {
					if l.Active {
						env[l.Key] = l.Value
					}
				}
			}
			flags := flagsOf(t, command)
			for k, v := range s.env {
				if _, ok := flags[k]; !ok && strings.HasPrefix(k, "KURIER_") {
					t.Errorf("%s: $%s is no flag of kurier %s", name, k, command)
				}
				env[k] = v
			}
			got, err := parseWithEnv(t, env, append([]string{"kurier"}, s.command...)...)
			if err != nil {
				t.Errorf("%s: kurier %s: %v", name, strings.Join(s.command, " "), err)
				continue
			}
			if got["state"] != "/var/lib/kurier" {
				t.Errorf("%s: state %q, want the image's volume /var/lib/kurier", name, got["state"])
			}
			if command == "relay" {
				// What the relay listens on is what bootstrap.sh publishes.
				for flag, v := range map[string]string{"public": "RELAY_PUBLIC_PORT", "pairing": "RELAY_PAIRING_PORT", "control": "RELAY_CONTROL_PORT", "control-tcp": "RELAY_CONTROL_TCP_PORT", "gossip": "RELAY_GOSSIP_PORT"} {
					if want := ":" + defaultPort(v); got[flag] != want {
						t.Errorf("%s: --%s %q, but the directory says port %s", name, flag, got[flag], want)
					}
				}
			}
		case "kurierctl:local":
		case "kurier-tools:local":
			for k := range s.env {
				if strings.HasPrefix(k, "KURIER_") && !strings.HasPrefix(k, "KURIER_CA_") {
					if _, ok := flagsOf(t, "enroll")[k]; !ok {
						t.Errorf("%s: $%s is no flag of kurier enroll", name, k)
					}
				}
			}
			if len(s.command) == 0 || !strings.HasPrefix(s.command[0], "/usr/local/lib/kurier/") {
				t.Errorf("%s: command %q is not one of deploy/compose/*.sh", name, s.command)
			}
		default:
			t.Errorf("%s: unknown image %s", name, s.image[0])
		}
	}
	if daemons != 4 {
		t.Errorf("%d kurier daemons in compose.yaml, want 4 (two relays, two endpoint servers)", daemons)
	}
	// Every kurier command line in the bootstrap scripts parses.
	for _, argv := range scriptCommands(t, "kurier") {
		if _, err := parseWithEnv(t, nil, argv...); err != nil {
			t.Errorf("%s: %v", strings.Join(argv, " "), err)
		}
	}
}

// scriptCommands returns the command lines of deploy/compose/*.sh that run
// bin, with shell words that expand (quoted "$x", $(...)) replaced by a
// placeholder.
func scriptCommands(t *testing.T, bin string) [][]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(deployDir, "compose", "*.sh"))
	if len(files) == 0 {
		t.Fatal("no deploy/compose/*.sh")
	}
	start := regexp.MustCompile(`(^|\s)` + bin + `\s`)
	var out [][]string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.ReplaceAll(string(b), "\\\n", " ")
		for _, l := range strings.Split(text, "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "#") {
				continue
			}
			loc := start.FindStringIndex(l)
			if loc == nil {
				continue
			}
			cmd := l[loc[0]:]
			if i := strings.IndexAny(cmd, ";|>&"); i >= 0 {
				cmd = cmd[:i]
			}
			argv := shellWords(cmd)
			if len(argv) > 1 {
				out = append(out, argv)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s command lines in deploy/compose/*.sh", bin)
	}
	return out
}

// shellWords splits a simple command: double-quoted words, $(...) kept
// whole; a word that expands at run time becomes "X".
func shellWords(s string) []string {
	var out []string
	var w strings.Builder
	inQ, depth, expands, any := false, 0, false, false
	flush := func() {
		if any {
			if expands {
				out = append(out, "X")
			} else {
				out = append(out, w.String())
			}
		}
		w.Reset()
		expands, any = false, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' && depth == 0:
			inQ, any = !inQ, true
		case c == '$':
			expands, any = true, true
			if i+1 < len(s) && s[i+1] == '(' {
				depth++
				i++
			}
		case c == ')' && depth > 0:
			depth--
		case (c == ' ' || c == '\t') && !inQ && depth == 0:
			flush()
		default:
			w.WriteByte(c)
			any = true
		}
	}
	flush()
	return out
}
