package main

// End to end with the real binaries, following the README: an operator runs
// kurierctl (CA, members, directory), members run kurier (enroll, relay,
// proxy), and curl reaches the office's HTTPS server through the relay.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// build compiles a command of this module into dir.
func build(t testing.TB, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/kurier-net/kurier/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// runCmd runs a command to completion and returns its stdout.
func runCmd(t testing.TB, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// daemon is a long-running child process whose stderr is kept.
type daemon struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs bytes.Buffer
	done chan error
}

func (d *daemon) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.Write(b)
}

func (d *daemon) log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.logs.String()
}

func start(t testing.TB, name string, args ...string) *daemon {
	t.Helper()
	d := &daemon{done: make(chan error, 1)}
	d.cmd = exec.Command(name, args...)
	d.cmd.Stdout, d.cmd.Stderr = d, d
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		<-d.done
		if t.Failed() {
			t.Logf("%s log:\n%s", filepath.Base(name), d.log())
		}
	})
	return d
}

// stop sends SIGTERM and waits for a clean exit.
func (d *daemon) stop(t testing.TB) {
	t.Helper()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err // for the cleanup
		if err != nil {
			t.Errorf("%s exited with %v after SIGTERM\n%s", d.cmd.Path, err, d.log())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("%s did not stop within 30s of SIGTERM", d.cmd.Path)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB, network string) string {
	t.Helper()
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		return pc.LocalAddr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// e2eNet is a network run from the binaries: a CA, a relay and enrolled
// members.
type e2eNet struct {
	dir, ctl, kurier, pass, caDir, caURL, fingerprint string
	caSrv                                             *daemon
	pub, pairing, ctlTCP, ctlUDP, relayAdmin          string
	relaySt                                           string
	relay                                             *daemon
}

// setupNetwork builds both binaries, sets up and serves the CA (keys
// encrypted), adds and enrols a relay and the given members, signs the
// directory and starts the relay.
func setupNetwork(t testing.TB, members ...[]string) (*e2eNet, map[string]string) {
	t.Helper()
	n := &e2eNet{dir: t.TempDir()}
	n.ctl, n.kurier = build(t, n.dir, "cmd/kurierctl"), build(t, n.dir, "cmd/kurier")
	n.pass = filepath.Join(n.dir, "pass")
	os.WriteFile(n.pass, []byte("correct horse battery staple\n"), 0o600)
	n.caDir = filepath.Join(n.dir, "ca")
	var initRes struct {
		Fingerprint string `json:"root_fingerprint"`
	}
	if err := json.Unmarshal([]byte(runCmd(t, n.ctl, "ca", "init", "--network", "e2e.kurier", "--dir", n.caDir, "--passphrase-file", n.pass, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	n.fingerprint = initRes.Fingerprint
	n.caSrv = start(t, n.ctl, "ca", "serve", "--dir", n.caDir, "--listen", "127.0.0.1:0", "--passphrase-file", n.pass)
	addrRE := regexp.MustCompile(`"?msg"?[=:]"?serving"?.*?"?addr"?[=:]"?(127\.0\.0\.1:\d+)`)
	waitFor(t, "the CA to listen", 60*time.Second, func() bool {
		if m := addrRE.FindStringSubmatch(n.caSrv.log()); m != nil {
			n.caURL = "https://" + m[1]
			return true
		}
		return false
	})
	n.pub, n.pairing, n.ctlTCP, n.ctlUDP = freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp")
	token := func(args ...string) string {
		var res struct {
			Token string `json:"token"`
		}
		out := runCmd(t, n.ctl, append([]string{"member", "add", "--dir", n.caDir, "--passphrase-file", n.pass, "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Token == "" {
			t.Fatalf("member add output %q: %v", out, err)
		}
		f := filepath.Join(n.dir, args[0]+".token")
		os.WriteFile(f, []byte(res.Token), 0o600)
		return f
	}
	relayTok := token("r1", "--role", "relay", "--display-name", "Relay 1",
		"--relay-public", n.pub, "--relay-pairing", n.pairing, "--relay-control", n.ctlUDP, "--relay-control-tcp", n.ctlTCP)
	states := map[string]string{}
	for _, m := range members {
		tok := token(m...)
		states[m[0]] = filepath.Join(n.dir, m[0])
		runCmd(t, n.kurier, "enroll", "--ca", n.caURL, "--fingerprint", n.fingerprint, "--token-file", tok, "--dir", states[m[0]])
	}
	n.relaySt = filepath.Join(n.dir, "r1")
	runCmd(t, n.kurier, "enroll", "--ca", n.caURL, "--fingerprint", n.fingerprint, "--token-file", relayTok, "--dir", n.relaySt)
	runCmd(t, n.ctl, "directory", "sign", "--dir", n.caDir, "--passphrase-file", n.pass)
	n.relayAdmin = freePort(t, "tcp")
	n.relay = start(t, n.kurier, append([]string{"relay", "--state", n.relaySt, "--public", n.pub, "--pairing", n.pairing,
		"--control", n.ctlUDP, "--control-tcp", n.ctlTCP}, daemonArgs(n.relayAdmin)...)...)
	return n, states
}

func daemonArgs(admin string) []string {
	return []string{"--directory-interval", "500ms", "--log-format", "text", "--admin", admin, "--drain-timeout", "5s"}
}

func TestReadmeFlow(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not installed: .ci/run installs it")
	}
	n, states := setupNetwork(t, []string{"hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt 1"})
	officeSt := states["hd-1"]
	if st := runCmd(t, n.kurier, "status", "--state", officeSt, "--json"); !strings.Contains(st, "spiffe://e2e.kurier/health-office/hd-1") {
		t.Fatalf("status: %s", st)
	}

	// The office's local HTTPS service, with the office's own certificate.
	officeCert, err := tls.LoadX509KeyPair(filepath.Join(officeSt, "cert.pem"), filepath.Join(officeSt, "key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Gesundheitsamt 1 says hello\n")
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{officeCert}}}
	go web.ServeTLS(ln, "", "")
	defer web.Close()
	px := start(t, n.kurier, append([]string{"proxy", "--state", officeSt, "--route", "self=" + ln.Addr().String()}, daemonArgs("")...)...)

	// curl, pinned to the office's own key, through the relay.
	host, port, _ := net.SplitHostPort(n.pub)
	roots := filepath.Join(officeSt, "roots.pem")
	pin := "sha256//" + pki.Pin(officeCert.Leaf)
	curlOnce := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b, err := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--cacert", roots, "--pinnedpubkey", pin,
			"--resolve", "hd-1.e2e.kurier:"+port+":"+host, "https://hd-1.e2e.kurier:"+port+"/").CombinedOutput()
		return string(b), err
	}
	var got string
	waitFor(t, "curl to reach the office through the relay", 30*time.Second, func() bool {
		got, err = curlOnce()
		return err == nil
	})
	if got != "Gesundheitsamt 1 says hello\n" {
		t.Fatalf("curl got %q", got)
	}

	// The admin listener serves metrics and readiness.
	resp, err := http.Get("http://" + n.relayAdmin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`relay_connections_total{result="routed"}`, "kurier_directory_version 1", "relay_pairing_duration_seconds_bucket"} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("relay metrics lack %q", want)
		}
	}
	if resp, err := http.Get("http://" + n.relayAdmin + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("relay /readyz: %v %v", resp, err)
	}

	// kurier status reports the member in good standing.
	if st := runCmd(t, n.kurier, "status", "--state", officeSt, "--json"); !strings.Contains(st, `"standing": "ok"`) {
		t.Errorf("status: %s", st)
	}

	// Revocation re-signs the directory; the relay and the office's proxy
	// pick it up within a poll and the office is cut off.
	runCmd(t, n.ctl, "member", "revoke", "hd-1", "--dir", n.caDir, "--passphrase-file", n.pass, "--reason", "e2e test")
	waitFor(t, "the revocation to cut the office off", 30*time.Second, func() bool {
		_, err := curlOnce()
		return err != nil
	})

	// Both daemons drain and exit cleanly on SIGTERM.
	px.stop(t)
	n.relay.stop(t)
	n.caSrv.stop(t)
	for _, d := range []*daemon{n.relay, px} {
		if strings.Contains(d.log(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", d.cmd.Path, grepLines(d.log(), "level=ERROR"))
		}
	}
}

// TestEPSBinaries runs two endpoint servers as processes: the vendor's
// software calls the office synchronously and sends it a message; the
// office's software polls and answers.
func TestEPSBinaries(t *testing.T) {
	n, states := setupNetwork(t,
		[]string{"hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt 1", "--service", "submit"},
		[]string{"vendor-a", "--role", "provider", "--display-name", "Vendor A", "--service", "guest-lists"})
	officeAPI, vendorAPI := freePort(t, "tcp"), freePort(t, "tcp")
	token := filepath.Join(n.dir, "api-token")
	os.WriteFile(token, []byte("s3cret-api-token\n"), 0o600)
	office := start(t, n.kurier, append([]string{"eps", "--state", states["hd-1"], "--listen", officeAPI, "--token-file", token}, daemonArgs("")...)...)
	vendor := start(t, n.kurier, append([]string{"eps", "--state", states["vendor-a"], "--listen", vendorAPI}, daemonArgs("")...)...)

	call := apiCall
	// The office's API needs its token.
	var lastErr error
	defer func() {
		if t.Failed() {
			t.Logf("last API error: %v", lastErr)
		}
	}()
	waitFor(t, "the office's API", 30*time.Second, func() bool {
		_, lastErr = call(officeAPI, "s3cret-api-token", "_ping", nil)
		return lastErr == nil
	})
	if _, err := call(officeAPI, "", "_ping", nil); err == nil {
		t.Error("the office's API answered without its token")
	}
	// The office's software polls and answers whatever arrives.
	answered := make(chan map[string]any, 4)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			res, err := call(officeAPI, "s3cret-api-token", "_poll", map[string]any{"wait": 2})
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			msgs, _ := res["messages"].([]any)
			for _, raw := range msgs {
				m := raw.(map[string]any)
				call(officeAPI, "s3cret-api-token", "_ack", map[string]any{"message_id": m["message_id"], "from": m["from"], "result": map[string]any{"received": m["params"]}})
				answered <- m
			}
		}
	}()
	var res map[string]any
	waitFor(t, "a synchronous call from the vendor to reach the office", 30*time.Second, func() bool {
		var err error
		res, err = call(vendorAPI, "", "hd-1.submit", map[string]any{"case": "A-17"})
		return err == nil
	})
	if got := fmt.Sprint(res["received"]); !strings.Contains(got, "A-17") {
		t.Errorf("sync result %v", res)
	}
	if m := <-answered; m["from"] != "vendor-a" || m["sync"] != true {
		t.Errorf("office software saw %v", m)
	}
	sent, err := call(vendorAPI, "", "_send", map[string]any{"to": "hd-1", "service": "submit", "params": map[string]any{"case": "A-18"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the async message to be delivered", 30*time.Second, func() bool {
		st, err := call(vendorAPI, "", "_message", map[string]any{"message_id": sent["message_id"]})
		return err == nil && st["status"] == "delivered"
	})
	cancel()
	office.stop(t)
	vendor.stop(t)
	n.relay.stop(t)
}

// apiCall calls method on an endpoint server's local API at api (host:port)
// with the bearer token tok (if not empty), as plain HTTP and JSON, as any
// office's software would, and returns the result object or the JSON-RPC
// error.
func apiCall(api, tok string, method string, params any) (map[string]any, error) {
	msg := map[string]any{"jsonrpc": "2.0", "id": 1, "method": method}
	if params != nil { // JSON-RPC: params, if present, is an object or array
		msg["params"] = params
	}
	body, _ := json.Marshal(msg)
	req, _ := http.NewRequest("POST", "http://"+api+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Result map[string]any `json:"result"`
		Error  map[string]any `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("HTTP %d: %v", resp.StatusCode, err)
	}
	if r.Error != nil {
		return nil, fmt.Errorf("%v", r.Error)
	}
	return r.Result, nil
}

func grepLines(s, sub string) string {
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), sub) {
			fmt.Fprintln(&b, sc.Text())
		}
	}
	return b.String()
}
