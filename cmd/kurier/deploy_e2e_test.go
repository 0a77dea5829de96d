package main

// The compose network's bootstrap, run for real on loopback: the scripts of
// deploy/compose/ with the built binaries, then the CA, two relays and two
// endpoint servers configured only by deploy/config/*.env and the few
// variables compose.yaml overrides, until the vendor's software reaches the
// office's through the relays.

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/cmd/internal/deploytest"
)

// envFileVars returns the variables an env file sets.
func envFileVars(t *testing.T, file string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range deploytest.ReadEnvFile(t, filepath.Join(deployDir, "config", file)) {
		if l.Active {
			out[l.Key] = l.Value
		}
	}
	return out
}

// environ is the test process's environment without KURIER_ variables,
// plus vars.
func environ(vars ...map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KURIER_") {
			env = append(env, kv)
		}
	}
	for _, m := range vars {
		for k, v := range m {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// startEnv starts a daemon with the given environment.
func startEnv(t *testing.T, env []string, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{done: make(chan error, 1)}
	d.cmd = exec.Command(name, args...)
	d.cmd.Env = env
	d.cmd.Stdout, d.cmd.Stderr = d, d
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("%s %s log:\n%s", filepath.Base(name), strings.Join(args, " "), d.log())
		}
	})
	return d
}

func runScript(t *testing.T, env []string, script string, args ...string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{filepath.Join(deployDir, "compose", script)}, args...)...)
	cmd.Env = env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", script, strings.Join(args, " "), err, out)
	}
}

// relayPorts finds ports free on both relay addresses.
func relayPorts(t *testing.T, hosts ...string) (tcp, udp []string) {
	t.Helper()
	free := func(network, port string) bool {
		for _, h := range hosts {
			addr := net.JoinHostPort(h, port)
			if network == "udp" {
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					return false
				}
				pc.Close()
			} else {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					return false
				}
				ln.Close()
			}
		}
		return true
	}
	pick := func(network string, also string) string {
		for range 100 {
			_, port, _ := net.SplitHostPort(freePort(t, network))
			if free(network, port) && (also == "" || free(also, port)) {
				return port
			}
		}
		t.Fatal("no free port on the relay addresses")
		return ""
	}
	// public, pairing, control-tcp (TCP); control (UDP); gossip (TCP and UDP)
	return []string{pick("tcp", ""), pick("tcp", ""), pick("tcp", ""), pick("tcp", "udp")}, []string{pick("udp", "")}
}

func TestDeployComposeSequence(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "bin")
	os.Mkdir(bin, 0o755)
	build(t, bin, "cmd/kurier")
	build(t, bin, "cmd/kurierctl")
	etc := filepath.Join(tmp, "etc")
	os.Mkdir(etc, 0o700)
	hosts := []string{"127.0.0.2", "127.0.0.3"}
	tcp, udp := relayPorts(t, hosts...)
	caAddr := freePort(t, "tcp")
	_, caPort, _ := net.SplitHostPort(caAddr)
	caDir := filepath.Join(tmp, "ca", "ca")
	os.Mkdir(filepath.Dir(caDir), 0o700)
	base := map[string]string{"PATH": bin + string(os.PathListSeparator) + os.Getenv("PATH"), "BOOTSTRAP_DIR": etc}

	// 1. bootstrap.sh, as the compose service runs it.
	runScript(t, environ(base, map[string]string{
		"KURIER_CA_DIR": caDir, "NETWORK": "kurier.test", "CA_NAME": "127.0.0.1",
		"RELAY_1_HOST": hosts[0], "RELAY_2_HOST": hosts[1],
		"RELAY_PUBLIC_PORT": tcp[0], "RELAY_PAIRING_PORT": tcp[1], "RELAY_CONTROL_TCP_PORT": tcp[2],
		"RELAY_GOSSIP_PORT": tcp[3], "RELAY_CONTROL_PORT": udp[0],
	}), "bootstrap.sh")

	// 2. The CA, configured by its env file only.
	caEnv := envFileVars(t, "kurierctl-ca.env")
	caEnv["KURIER_CA_DIR"], caEnv["KURIER_CA_LISTEN"] = caDir, caAddr
	startEnv(t, environ(caEnv), filepath.Join(bin, "kurierctl"), "ca", "serve")

	// 3. enroll.sh per node (it waits for the CA), then publish.sh.
	nodes := []string{"relay-1", "relay-2", "hd-1", "vendor-a"}
	for _, n := range nodes {
		runScript(t, environ(base, map[string]string{"KURIER_DIR": filepath.Join(tmp, n), "CA_URL": "https://127.0.0.1:" + caPort}), "enroll.sh", n)
	}
	runScript(t, environ(base, map[string]string{"KURIER_CA_DIR": caDir}), "publish.sh")

	// 4. The daemons: env file, then what compose.yaml overrides, with
	// loopback addresses for the container-wide ones.
	svcs := readCompose(t)
	daemonEnv := func(svc, node string) map[string]string {
		s := svcs[svc]
		env := envFileVars(t, "kurier-"+s.command[0]+".env")
		for k, v := range s.env {
			env[k] = v
		}
		env["KURIER_STATE"] = filepath.Join(tmp, node)
		env["KURIER_ADMIN"] = freePort(t, "tcp")
		env["KURIER_DIRECTORY_INTERVAL"] = "500ms"
		env["KURIER_DRAIN_TIMEOUT"] = "5s"
		return env
	}
	var relays []map[string]string
	for i, n := range nodes[:2] {
		env := daemonEnv(n, n)
		h := hosts[i]
		env["KURIER_PUBLIC"], env["KURIER_PAIRING"], env["KURIER_CONTROL_TCP"] = h+":"+tcp[0], h+":"+tcp[1], h+":"+tcp[2]
		env["KURIER_CONTROL"], env["KURIER_GOSSIP"] = h+":"+udp[0], h+":"+tcp[3]
		env["KURIER_GOSSIP_KEY_FILE"] = filepath.Join(etc, filepath.Base(env["KURIER_GOSSIP_KEY_FILE"]))
		if j := env["KURIER_JOIN"]; j != "" { // relay-N:<gossip port>
			var n int
			if _, err := fmt.Sscanf(j, "relay-%d:", &n); err != nil || n < 1 || n > 2 {
				t.Fatalf("relay %d: KURIER_JOIN %q", i+1, j)
			}
			env["KURIER_JOIN"] = hosts[n-1] + ":" + tcp[3]
		}
		relays = append(relays, env)
		startEnv(t, environ(env), filepath.Join(bin, "kurier"), svcs[n].command...)
	}
	apis := map[string]string{}
	for _, n := range nodes[2:] {
		env := daemonEnv("eps-"+n, n)
		if env["KURIER_LISTEN"] != "0.0.0.0:5555" {
			t.Fatalf("eps-%s: KURIER_LISTEN %q; this test assumes compose's 0.0.0.0:5555", n, env["KURIER_LISTEN"])
		}
		env["KURIER_LISTEN"] = freePort(t, "tcp")
		env["KURIER_EPS_TOKEN_FILE"] = filepath.Join(etc, filepath.Base(env["KURIER_EPS_TOKEN_FILE"]))
		apis[n] = env["KURIER_LISTEN"]
		startEnv(t, environ(env), filepath.Join(bin, "kurier"), svcs["eps-"+n].command...)
	}

	// The relays form one cluster.
	var lastMetrics []byte
	defer func() {
		if t.Failed() {
			t.Logf("last relay metrics:\n%s", grepLines(string(lastMetrics), "relay_cluster"))
		}
	}()
	waitFor(t, "the relays to form a cluster", 30*time.Second, func() bool {
		for _, r := range relays {
			resp, err := http.Get("http://" + r["KURIER_ADMIN"] + "/metrics")
			if err != nil {
				return false
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			lastMetrics = b
			if !regexp.MustCompile(`(?m)^relay_cluster_members 2$`).Match(b) {
				return false
			}
		}
		return true
	})

	// The vendor's software calls the office's synchronously; the office's
	// software polls and answers.
	call := func(node, method string, params any) (map[string]any, error) {
		tok, err := os.ReadFile(filepath.Join(etc, node+".api-token"))
		if err != nil {
			return nil, err
		}
		return apiCall(apis[node], strings.TrimSpace(string(tok)), method, params)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			res, err := call("hd-1", "_poll", map[string]any{"wait": 1})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			msgs, _ := res["messages"].([]any)
			for _, raw := range msgs {
				m := raw.(map[string]any)
				call("hd-1", "_ack", map[string]any{"message_id": m["message_id"], "from": m["from"], "result": map[string]any{"seen": m["params"]}})
			}
		}
	}()
	var res map[string]any
	var lastErr error
	waitFor(t, "a call from vendor-a to reach hd-1 through the relays", 40*time.Second, func() bool {
		res, lastErr = call("vendor-a", "hd-1.index-cases", map[string]any{"case": "C-1"})
		return lastErr == nil
	})
	if !strings.Contains(fmt.Sprint(res["seen"]), "C-1") {
		t.Errorf("hd-1 answered %v", res)
	}
}
