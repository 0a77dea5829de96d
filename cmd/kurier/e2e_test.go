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
func build(t *testing.T, dir, pkg string) string {
	t.Helper()
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, "github.com/kurier-net/kurier/"+pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// runCmd runs a command to completion and returns its stdout.
func runCmd(t *testing.T, name string, args ...string) string {
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

func start(t *testing.T, name string, args ...string) *daemon {
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
func (d *daemon) stop(t *testing.T) {
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
func freePort(t *testing.T, network string) string {
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

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReadmeFlow(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatal("curl not installed: .ci/run installs it")
	}
	dir := t.TempDir()
	ctl, kurier := build(t, dir, "cmd/kurierctl"), build(t, dir, "cmd/kurier")
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("correct horse battery staple\n"), 0o600)
	caDir := filepath.Join(dir, "ca")

	// The operator sets up the CA (keys encrypted) and serves it.
	var initRes struct {
		Fingerprint string `json:"root_fingerprint"`
	}
	if err := json.Unmarshal([]byte(runCmd(t, ctl, "ca", "init", "--network", "e2e.kurier", "--dir", caDir, "--passphrase-file", pass, "--json")), &initRes); err != nil {
		t.Fatal(err)
	}
	caSrv := start(t, ctl, "ca", "serve", "--dir", caDir, "--listen", "127.0.0.1:0", "--passphrase-file", pass)
	addrRE := regexp.MustCompile(`"?msg"?[=:]"?serving"?.*?"?addr"?[=:]"?(127\.0\.0\.1:\d+)`)
	var caAddr string
	waitFor(t, "the CA to listen", 60*time.Second, func() bool {
		if m := addrRE.FindStringSubmatch(caSrv.log()); m != nil {
			caAddr = m[1]
			return true
		}
		return false
	})
	caURL := "https://" + caAddr

	// Members: a relay with real loopback endpoints, and a health office.
	pub, pairing, ctlTCP, ctlUDP := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "udp")
	token := func(args ...string) string {
		var res struct {
			Token string `json:"token"`
		}
		out := runCmd(t, ctl, append([]string{"member", "add", "--dir", caDir, "--passphrase-file", pass, "--json"}, args...)...)
		if err := json.Unmarshal([]byte(out), &res); err != nil || res.Token == "" {
			t.Fatalf("member add output %q: %v", out, err)
		}
		f := filepath.Join(dir, args[0]+".token")
		os.WriteFile(f, []byte(res.Token), 0o600)
		return f
	}
	relayTok := token("r1", "--role", "relay", "--display-name", "Relay 1",
		"--relay-public", pub, "--relay-pairing", pairing, "--relay-control", ctlUDP, "--relay-control-tcp", ctlTCP)
	officeTok := token("hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt 1")

	relaySt, officeSt := filepath.Join(dir, "r1"), filepath.Join(dir, "hd-1")
	runCmd(t, kurier, "enroll", "--ca", caURL, "--fingerprint", initRes.Fingerprint, "--token-file", relayTok, "--dir", relaySt)
	out := runCmd(t, kurier, "enroll", "--ca", caURL, "--fingerprint", initRes.Fingerprint, "--token-file", officeTok, "--dir", officeSt, "--json")
	if !strings.Contains(out, "spiffe://e2e.kurier/health-office/hd-1") {
		t.Fatalf("enroll --json: %s", out)
	}
	runCmd(t, ctl, "directory", "sign", "--dir", caDir, "--passphrase-file", pass)

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

	common := func(admin string) []string {
		return []string{"--directory-interval", "500ms", "--log-format", "text", "--admin", admin, "--drain-timeout", "5s"}
	}
	relayAdmin := freePort(t, "tcp")
	rl := start(t, kurier, append([]string{"relay", "--state", relaySt, "--public", pub, "--pairing", pairing,
		"--control", ctlUDP, "--control-tcp", ctlTCP}, common(relayAdmin)...)...)
	px := start(t, kurier, append([]string{"proxy", "--state", officeSt, "--route", "self=" + ln.Addr().String()}, common("")...)...)

	// curl, pinned to the office's own key, through the relay.
	host, port, _ := net.SplitHostPort(pub)
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
	resp, err := http.Get("http://" + relayAdmin + "/metrics")
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
	if resp, err := http.Get("http://" + relayAdmin + "/readyz"); err != nil || resp.StatusCode != 200 {
		t.Errorf("relay /readyz: %v %v", resp, err)
	}

	// kurier status reports the member in good standing.
	if st := runCmd(t, kurier, "status", "--state", officeSt, "--json"); !strings.Contains(st, `"standing": "ok"`) {
		t.Errorf("status: %s", st)
	}

	// Revocation re-signs the directory; the relay and the office's proxy
	// pick it up within a poll and the office is cut off.
	runCmd(t, ctl, "member", "revoke", "hd-1", "--dir", caDir, "--passphrase-file", pass, "--reason", "e2e test")
	waitFor(t, "the revocation to cut the office off", 30*time.Second, func() bool {
		_, err := curlOnce()
		return err != nil
	})

	// Both daemons drain and exit cleanly on SIGTERM.
	px.stop(t)
	rl.stop(t)
	caSrv.stop(t)
	for _, d := range []*daemon{rl, px} {
		if strings.Contains(d.log(), "level=ERROR") {
			t.Errorf("%s logged errors:\n%s", d.cmd.Path, grepLines(d.log(), "level=ERROR"))
		}
	}
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
