package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"
)

// TestEnvVarsServeFlags checks that every flag of the long-running
// commands has exactly one environment variable, KURIER_CA_<FLAG>, and
// that other commands gained none beyond $KURIER_CA_DIR.
func TestEnvVarsServeFlags(t *testing.T) {
	var stdout, stderr bytes.Buffer
	e := newCLITest(t).env(&stdout, &stderr)
	seen := 0
	var walk func(cmds []*cli.Command, path string)
	walk = func(cmds []*cli.Command, path string) {
		for _, cmd := range cmds {
			full := strings.TrimSpace(path + " " + cmd.Name)
			for _, f := range cmd.Flags {
				name := f.Names()[0]
				var got []string
				if df, ok := f.(cli.DocGenerationFlag); ok {
					got = df.GetEnvVars()
				}
				var want []string
				switch {
				case envCommands[full]:
					want = []string{envVar(name)}
					seen++
				case name == "dir" && !strings.HasPrefix(full, "directory verify") && !strings.HasPrefix(full, "directory show") && !strings.HasPrefix(full, "directory diff"):
					want = []string{"KURIER_CA_DIR"}
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("kurierctl %s --%s: environment variables %q, want %q", full, name, got, want)
				}
			}
			walk(cmd.Subcommands, full)
		}
	}
	walk(e.app().Commands, "")
	if seen != 6 {
		t.Errorf("saw %d flags of ca serve, want 6", seen)
	}
}

// TestEnvVarsConfigureServe runs `ca serve` configured by its environment
// variables alone: the CA directory, the passphrase file and the listen
// address come from the environment, and a bad log level from the
// environment is refused like a bad flag.
func TestEnvVarsConfigureServe(t *testing.T) {
	c := newCLITest(t)
	c.now = time.Now()
	c.init()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	want := ln.Addr().String()
	ln.Close()
	t.Setenv("KURIER_CA_DIR", c.dir)
	t.Setenv("KURIER_CA_PASSPHRASE_FILE", c.passFile)
	t.Setenv("KURIER_CA_LISTEN", want)
	t.Setenv("KURIER_CA_DRAIN_TIMEOUT", "2s")
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := adminLn.Addr().String()
	adminLn.Close()
	t.Setenv("KURIER_CA_ADMIN", admin)

	t.Setenv("KURIER_CA_LOG_LEVEL", "chatty")
	if code, _, errOut := c.run("ca", "serve"); code != 2 || !strings.Contains(errOut, "--log-level") {
		t.Errorf("ca serve with $KURIER_CA_LOG_LEVEL=chatty: exit %d, %q; want a usage error", code, errOut)
	}

	t.Setenv("KURIER_CA_LOG_LEVEL", "debug")
	var stdout, stderr bytes.Buffer
	e := c.env(&stdout, &stderr)
	addrs := make(chan net.Addr, 1)
	e.onListen = func(a net.Addr) { addrs <- a }
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- e.run(ctx, []string{"kurierctl", "ca", "serve"}) }()
	select {
	case a := <-addrs:
		if a.String() != want {
			t.Errorf("ca serve listens on %s, want %s from $KURIER_CA_LISTEN", a, want)
		}
	case code := <-done:
		t.Fatalf("ca serve exited %d: %s", code, stderr.String())
	}
	// The admin listener from $KURIER_CA_ADMIN serves the CA's metrics.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := hc.Get("https://" + want + "/health"); err == nil { // counted below
		resp.Body.Close()
	} else {
		t.Error(err)
	}
	resp, err := hc.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, m := range []string{`kurier_ca_requests_total{code="200",endpoint="health"} 1`, `kurier_ca_not_after_seconds{cert="intermediate"}`, "kurier_build_info{", "process_open_fds"} {
		if !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics of ca serve has no %s", m)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("ca serve exited %d: %s", code, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ca serve did not stop")
	}
}

// TestEnvVarsSetServeFlags sets every flag of ca serve by its variable and
// checks what the real parser hands the action; the command line wins.
func TestEnvVarsSetServeFlags(t *testing.T) {
	vals := map[string]string{"dir": "/env/dir", "listen": "127.0.0.1:1", "drain-timeout": "3m7s", "log-level": "warn", "passphrase-file": "/env/pass", "admin": "127.0.0.1:2"}
	for k, v := range vals {
		t.Setenv(envVar(k), v)
	}
	capture := func(args ...string) map[string]string {
		var stdout, stderr bytes.Buffer
		e := newCLITest(t).env(&stdout, &stderr)
		app := e.app()
		got := map[string]string{}
		for _, cmd := range app.Commands[0].Subcommands {
			if cmd.Name == "serve" {
				cmd.Action = func(c *cli.Context) error {
					for k := range vals {
						got[k] = fmt.Sprint(c.Value(k))
					}
					return nil
				}
			}
		}
		if err := app.Run(append([]string{"kurierctl", "ca", "serve"}, args...)); err != nil {
			t.Fatalf("ca serve: %v\n%s", err, stderr.String())
		}
		return got
	}
	got := capture()
	for k, v := range vals {
		if got[k] != v {
			t.Errorf("--%s from $%s = %q, want %q", k, envVar(k), got[k], v)
		}
	}
	if got := capture("--listen", "127.0.0.1:2"); got["listen"] != "127.0.0.1:2" {
		t.Errorf("--listen on the command line with $KURIER_CA_LISTEN set: %q", got["listen"])
	}
}
