package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// cliTest runs kurierctl in-process with a fixed clock.
type cliTest struct {
	t        *testing.T
	dir      string // the CA directory
	passFile string

	mu  sync.Mutex // guards now
	now time.Time
}

var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func newCLITest(t *testing.T) *cliTest {
	t.Helper()
	tmp := t.TempDir()
	c := &cliTest{t: t, dir: filepath.Join(tmp, "ca"), passFile: filepath.Join(tmp, "pass.txt"), now: t0}
	if err := os.WriteFile(c.passFile, []byte("pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *cliTest) clock() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *cliTest) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func (c *cliTest) env(stdout, stderr *bytes.Buffer) *env {
	return &env{
		stdin:     strings.NewReader(""),
		stdout:    stdout,
		stderr:    stderr,
		lookupEnv: func(string) (string, bool) { return "", false },
		now:       c.clock,
	}
}

// run runs kurierctl with args and returns the exit code, stdout and stderr.
func (c *cliTest) run(args ...string) (int, string, string) {
	c.t.Helper()
	var stdout, stderr bytes.Buffer
	code := c.env(&stdout, &stderr).run(context.Background(), append([]string{"kurierctl"}, args...))
	return code, stdout.String(), stderr.String()
}

// ok runs kurierctl and fails the test unless it exits 0.
func (c *cliTest) ok(args ...string) string {
	c.t.Helper()
	code, out, errOut := c.run(args...)
	if code != 0 {
		c.t.Fatalf("kurierctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// init creates the CA with the test passphrase.
func (c *cliTest) init(extra ...string) string {
	c.t.Helper()
	return c.ok(append([]string{"ca", "init", "--network", "kurier.test", "--dir", c.dir, "--passphrase-file", c.passFile, "--dns-name", "ca.kurier.test", "--json"}, extra...)...)
}

func (c *cliTest) openCA() *ca.CA {
	c.t.Helper()
	a, err := ca.Open(ca.OpenConfig{Dir: c.dir, Now: c.clock})
	if err != nil {
		c.t.Fatal(err)
	}
	return a
}

// normalize replaces what differs between runs (paths, fingerprints, key
// ids, tokens) with placeholders.
func (c *cliTest) normalize(s string) string {
	c.t.Helper()
	a := c.openCA()
	fc := a.Config()
	repl := []string{c.dir, "$CA", a.RootFingerprint(), "$ROOT_FINGERPRINT", ca.Fingerprint(a.Intermediate()), "$INTER_FINGERPRINT"}
	for i, k := range fc.DirectoryKeys {
		repl = append(repl, k, "$DIRECTORY_KEY"+string(rune('1'+i)))
	}
	for i, k := range a.DirectoryKeys() {
		repl = append(repl, pki.DirectoryKeyID(k), "$DIRECTORY_KEY_ID"+string(rune('1'+i)))
	}
	repl = append(repl, fc.Provisioner.Key.KeyID, "$PROVISIONER_KID")
	s = strings.NewReplacer(repl...).Replace(s)
	// Tokens are JWTs: three base64url parts.
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "eyJ"); i >= 0 {
			end := strings.IndexAny(line[i:], "\" ")
			if end < 0 {
				end = len(line) - i
			}
			line = line[:i] + "$TOKEN" + line[i+end:]
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// golden compares got with testdata/<name>.golden (rewritten with -update).
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from golden file (run go test -update and review the diff)\ngot:\n%s\nwant:\n%s", name, got, want)
	}
}

// fakeCert returns a certificate for id whose key is derived from seed, so
// its pin is the same in every run. Only the member store sees it.
func fakeCert(t *testing.T, id pki.ID, seed byte, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(int64(seed)),
		Subject:      pkix.Name{CommonName: id.DNSName()},
		NotBefore:    notAfter.Add(-24 * time.Hour),
		NotAfter:     notAfter,
		DNSNames:     []string{id.DNSName()},
		URIs:         []*url.URL{id.URI()},
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return crt
}

func TestCAInit(t *testing.T) {
	c := newCLITest(t)
	out := c.init()
	golden(t, "ca_init.json", c.normalize(out))

	var res ca.InitResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	rootPEM, err := os.ReadFile(filepath.Join(c.dir, "certs", "root_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(rootPEM)
	sum := sha256.Sum256(blk.Bytes)
	if res.RootFingerprint != hex.EncodeToString(sum[:]) {
		t.Errorf("printed fingerprint %s, root's is %x", res.RootFingerprint, sum)
	}

	// Modes: the directory 0700, secrets 0600, and every key encrypted.
	if fi, err := os.Stat(c.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("CA dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	for _, f := range []string{"ca.json", "members.db", "secrets/root_ca.key", "secrets/intermediate_ca.key", "secrets/directory.key", "secrets/provisioner.jwe"} {
		fi, err := os.Stat(filepath.Join(c.dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, fi.Mode().Perm(), err)
		}
	}
	for _, f := range []string{"secrets/root_ca.key", "secrets/intermediate_ca.key", "secrets/directory.key"} {
		b, _ := os.ReadFile(filepath.Join(c.dir, f))
		if !bytes.HasPrefix(b, []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----")) {
			t.Errorf("%s is not an encrypted PKCS#8 key", f)
		}
	}

	// An existing CA is never overwritten.
	before, _ := os.ReadFile(filepath.Join(c.dir, "ca.json"))
	code, _, errOut := c.run("ca", "init", "--network", "other.test", "--dir", c.dir, "--passphrase-file", c.passFile)
	after, _ := os.ReadFile(filepath.Join(c.dir, "ca.json"))
	if code != 1 || !strings.Contains(errOut, "already exists") || !bytes.Equal(before, after) {
		t.Errorf("init over an existing CA: exit %d, %q; config changed: %v", code, errOut, !bytes.Equal(before, after))
	}

	// A wrong passphrase is a clear error and changes nothing.
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("nope"), 0o600)
	code, _, errOut = c.run("member", "add", "hd-1", "--dir", c.dir, "--role", "health-office", "--display-name", "GA 1", "--passphrase-file", wrong)
	if code != 1 || !strings.Contains(errOut, "wrong passphrase") {
		t.Errorf("member add with a wrong passphrase: exit %d, %q", code, errOut)
	}
	if _, err := c.openCA().Store().Get("hd-1"); err == nil {
		t.Errorf("member add with a wrong passphrase recorded the member")
	}
	a := c.openCA()
	for name, fn := range map[string]func() error{
		"intermediate": func() error { _, err := a.IntermediateSigner(ca.Passphrase("nope")); return err },
		"directory":    func() error { _, err := a.DirectoryKey(ca.Passphrase("nope")); return err },
		"provisioner":  func() error { _, err := a.TokenSigner(ca.Passphrase("nope")); return err },
	} {
		if err := fn(); !errors.Is(err, ca.ErrPassphrase) {
			t.Errorf("%s key with a wrong passphrase: %v, want ErrPassphrase", name, err)
		}
	}

	// Without a passphrase source and no terminal: a clear error.
	code, _, errOut = c.run("ca", "init", "--network", "kurier.test", "--dir", filepath.Join(t.TempDir(), "ca2"))
	if code != 1 || !strings.Contains(errOut, "no terminal") {
		t.Errorf("init without passphrase: exit %d, %q", code, errOut)
	}
	// Bare keys only when asked for.
	bare := filepath.Join(t.TempDir(), "ca3")
	if code, _, errOut := c.run("ca", "init", "--network", "kurier.test", "--dir", bare, "--insecure-unencrypted-key"); code != 0 || !strings.Contains(errOut, "WITHOUT encryption") {
		t.Errorf("init --insecure-unencrypted-key: exit %d, %q", code, errOut)
	}
	b, _ := os.ReadFile(filepath.Join(bare, "secrets", "intermediate_ca.key"))
	if !bytes.HasPrefix(b, []byte("-----BEGIN PRIVATE KEY-----")) {
		t.Errorf("--insecure-unencrypted-key did not write a bare key")
	}
}

func TestMemberCommandsGolden(t *testing.T) {
	c := newCLITest(t)
	c.init()
	pf := []string{"--dir", c.dir, "--passphrase-file", c.passFile}
	d := []string{"--dir", c.dir}

	out := c.ok(append([]string{"member", "add", "hd-1", "--role", "health-office", "--display-name", "Gesundheitsamt Eins", "--service", "contact-lists", "--service", "guest-lists", "--json"}, pf...)...)
	golden(t, "member_add.json", c.normalize(out))
	var tok tokenOutput
	if err := json.Unmarshal([]byte(out), &tok); err != nil {
		t.Fatal(err)
	}
	if !tok.ExpiresAt.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("token expires %s, want %s", tok.ExpiresAt, t0.Add(2*time.Hour))
	}
	c.ok(append([]string{"member", "add", "app-a", "--role", "provider", "--display-name", "App A GmbH", "--service", "checkins"}, pf...)...)
	c.ok(append([]string{"member", "add", "relay-1", "--role", "relay", "--display-name", "Relay 1",
		"--relay-public", "relay1.kurier.test:443", "--relay-pairing", "relay1.kurier.test:4443",
		"--relay-control", "relay1.kurier.test:4443", "--relay-control-tcp", "relay1.kurier.test:4444"}, pf...)...)

	// A duplicate is an error that changes nothing.
	code, _, errOut := c.run(append([]string{"member", "add", "hd-1", "--role", "provider", "--display-name", "Imposter"}, pf...)...)
	if code != 1 || !strings.Contains(errOut, "already exists") {
		t.Errorf("duplicate add: exit %d, %q", code, errOut)
	}
	// Usage errors exit 2.
	for _, args := range [][]string{
		{"member", "add", "x", "--role", "nope", "--display-name", "X"},
		{"member", "add", "x", "--role", "relay", "--display-name", "X"},
		{"member", "add", "x", "--role", "provider", "--display-name", "X", "--relay-public", "a:1"},
		{"member", "add", "x", "--role", "provider"},
		{"member", "show"},
		{"member", "update", "hd-1"},
	} {
		if code, _, _ := c.run(append(args, d...)...); code != 2 {
			t.Errorf("kurierctl %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
	// Invalid values are failures, not usage errors.
	if code, _, _ := c.run(append([]string{"member", "add", "Bad_Name", "--role", "provider", "--display-name", "X"}, pf...)...); code != 1 {
		t.Errorf("add with an invalid name: exit %d, want 1", code)
	}

	// Certificates and seal keys as the server would record them.
	a := c.openCA()
	st := a.Store()
	hd := pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-1"}
	for _, crt := range []*x509.Certificate{
		fakeCert(t, hd, 1, t0.Add(-time.Hour)), // expired: not in the directory
		fakeCert(t, hd, 2, t0.Add(20*time.Hour)),
	} {
		if err := st.RecordCert(crt); err != nil {
			t.Fatal(err)
		}
	}
	cur := fakeCert(t, hd, 2, t0.Add(20*time.Hour))
	if _, err := st.SetSealKeys("hd-1", pki.Pin(cur), []pki.SealKey{{ID: "k1", KEM: 0x647a, Public: bytes.Repeat([]byte{1}, 16)}}); err != nil {
		t.Fatal(err)
	}
	if err := st.RecordCert(fakeCert(t, pki.ID{Network: "kurier.test", Role: pki.RoleProvider, Name: "app-a"}, 3, t0.Add(10*time.Hour))); err != nil {
		t.Fatal(err)
	}

	golden(t, "member_show.json", c.normalize(c.ok(append([]string{"member", "show", "hd-1", "--json"}, d...)...)))
	golden(t, "member_show.txt", c.normalize(c.ok(append([]string{"member", "show", "hd-1"}, d...)...)))
	golden(t, "member_list.json", c.normalize(c.ok(append([]string{"member", "list", "--json"}, d...)...)))
	golden(t, "member_list.txt", c.normalize(c.ok(append([]string{"member", "list"}, d...)...)))

	c.advance(time.Minute)
	out = c.ok(append([]string{"member", "update", "hd-1", "--display-name", "GA Eins", "--service", "contact-lists", "--json"}, d...)...)
	golden(t, "member_update.json", c.normalize(out))

	c.advance(time.Minute)
	out = c.ok(append([]string{"member", "suspend", "app-a", "--reason", "contract paused", "--json"}, pf...)...)
	golden(t, "member_suspend.json", c.normalize(out))
	if code, _, _ := c.run(append([]string{"member", "token", "app-a"}, pf...)...); code != 1 {
		t.Errorf("token for a suspended member: exit %d, want 1", code)
	}
	c.advance(time.Minute)
	c.ok(append([]string{"member", "resume", "app-a"}, pf...)...)
	c.ok(append([]string{"member", "token", "app-a"}, pf...)...)
	c.advance(time.Minute)
	out = c.ok(append([]string{"member", "revoke", "app-a", "--reason", "key compromise", "--json"}, pf...)...)
	golden(t, "member_revoke.json", c.normalize(out))
	if code, _, errOut := c.run(append([]string{"member", "resume", "app-a"}, pf...)...); code != 1 || !strings.Contains(errOut, "final") {
		t.Errorf("resume revoked: exit %d, %q", code, errOut)
	}
	if code, _, errOut := c.run(append([]string{"member", "add", "app-a", "--role", "provider", "--display-name", "App A2"}, pf...)...); code != 1 || !strings.Contains(errOut, "revoked") {
		t.Errorf("re-add revoked name: exit %d, %q", code, errOut)
	}
	c.advance(time.Minute)
	c.ok(append([]string{"member", "add", "app-a", "--role", "provider", "--display-name", "App A2", "--reuse-revoked-name"}, pf...)...)

	// The revocation went out at once: the published directory lists it.
	pub, err := os.ReadFile(a.CurrentDirectoryPath())
	if err != nil {
		t.Fatal(err)
	}
	dir, _, err := ca.VerifyDirectory(pub, ca.VerifyOptions{Keys: a.DirectoryKeys(), Network: "kurier.test", Now: c.clock()})
	if err != nil {
		t.Fatal(err)
	}
	if dir.Version != 3 || len(dir.Revoked) != 1 || dir.Revoked[0].Member != "app-a" || len(dir.Revoked[0].Pins) != 0 {
		t.Errorf("published after revoke: version %d, revoked %+v", dir.Version, dir.Revoked)
	}

	// --no-publish changes the member but not the directory, with a warning.
	code, _, errOut = c.run(append([]string{"member", "suspend", "hd-1", "--no-publish"}, d...)...)
	if code != 0 || !strings.Contains(errOut, "not published") {
		t.Errorf("suspend --no-publish: exit %d, %q", code, errOut)
	}
	if v, _ := st.LastDirectoryVersion(); v != 3 {
		t.Errorf("suspend --no-publish signed a directory: last version %d", v)
	}
	golden(t, "member_list_final.json", c.normalize(c.ok(append([]string{"member", "list", "--json"}, d...)...)))
}

func TestDirectoryCommandsGolden(t *testing.T) {
	c := newCLITest(t)
	c.init()
	pf := []string{"--dir", c.dir, "--passphrase-file", c.passFile}
	d := []string{"--dir", c.dir}
	c.ok(append([]string{"member", "add", "hd-1", "--role", "health-office", "--display-name", "GA 1", "--service", "contact-lists"}, pf...)...)
	c.ok(append([]string{"member", "add", "app-a", "--role", "provider", "--display-name", "App A", "--service", "checkins"}, pf...)...)
	st := c.openCA().Store()
	if err := st.RecordCert(fakeCert(t, pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-1"}, 5, t0.Add(24*time.Hour))); err != nil {
		t.Fatal(err)
	}

	out := c.ok(append([]string{"directory", "sign", "--json"}, pf...)...)
	golden(t, "directory_sign.json", c.normalize(out))
	v1 := filepath.Join(c.dir, "directory", "v1")

	// Version 2: a new member, a suspension, a key rotation for hd-1, and a
	// custom policy.
	c.advance(time.Hour)
	c.ok(append([]string{"member", "add", "app-b", "--role", "provider", "--display-name", "App B"}, pf...)...)
	if err := st.RecordCert(fakeCert(t, pki.ID{Network: "kurier.test", Role: pki.RoleHealthOffice, Name: "hd-1"}, 6, t0.Add(30*time.Hour))); err != nil {
		t.Fatal(err)
	}
	c.ok(append([]string{"member", "suspend", "app-a", "--no-publish"}, d...)...)
	policy := filepath.Join(t.TempDir(), "policy.json")
	os.WriteFile(policy, []byte(`{"permissions":[{"caller":"role:provider","callee":"role:health-office","services":["contact-lists"]},{"caller":"member:hd-1","callee":"*","services":["*"]}]}`), 0o644)
	code, out, errOut := c.run(append([]string{"directory", "sign", "--policy", policy, "--validity", "48h", "--json"}, pf...)...)
	if code != 0 || !strings.Contains(errOut, "permissions differ") {
		t.Errorf("sign with a new policy: exit %d, stderr %q (want a warning)", code, errOut)
	}
	var p2 publishedOutput
	json.Unmarshal([]byte(out), &p2)
	v2 := filepath.Join(c.dir, "directory", "v2")
	if p2.Version != 2 || p2.Path != filepath.Join(c.dir, "directory", "current") {
		t.Errorf("second sign: %+v", p2)
	}

	golden(t, "directory_show.json", c.normalize(c.ok(append([]string{"directory", "show", v2, "--json"}, d...)...)))
	golden(t, "directory_show.txt", c.normalize(c.ok(append([]string{"directory", "show", v2}, d...)...)))
	golden(t, "directory_verify.json", c.normalize(c.ok(append([]string{"directory", "verify", v2, "--json"}, d...)...)))
	golden(t, "directory_diff.json", c.normalize(c.ok(append([]string{"directory", "diff", v1, v2, "--json"}, d...)...)))
	golden(t, "directory_diff.txt", c.normalize(c.ok(append([]string{"directory", "diff", v1, v2}, d...)...)))

	// --key with directory.pub works like --dir.
	c.ok("directory", "verify", v2, "--key", filepath.Join(c.dir, "directory.pub"), "--network", "kurier.test")
	// show without a key says the signature was not checked.
	code, _, errOut = c.run("directory", "show", v2)
	if code != 0 || !strings.Contains(errOut, "NOT verified") {
		t.Errorf("show without key: exit %d, %q", code, errOut)
	}
	// Suspension keeps the custom policy when it republishes.
	c.ok(append([]string{"member", "suspend", "app-b"}, pf...)...)
	a := c.openCA()
	pol, err := a.CurrentPolicy()
	if err != nil || len(pol.Permissions) != 2 || pol.Permissions[1].Caller != "member:hd-1" {
		t.Errorf("policy after suspend = %+v, %v; want the custom policy", pol, err)
	}
	// A strictly parsed policy: unknown fields and bad selectors are refused.
	for _, bad := range []string{`{"permissions":[],"extra":1}`, `{"permissions":[{"caller":"role:nope","callee":"*","services":["*"]}]}`, `{}`} {
		os.WriteFile(policy, []byte(bad), 0o644)
		if code, _, _ := c.run(append([]string{"directory", "sign", "--policy", policy}, pf...)...); code != 1 {
			t.Errorf("sign with policy %s: exit %d, want 1", bad, code)
		}
	}
}

func TestDirectoryVerifyFailures(t *testing.T) {
	c := newCLITest(t)
	c.init()
	pf := []string{"--dir", c.dir, "--passphrase-file", c.passFile}
	d := []string{"--dir", c.dir}
	c.ok(append([]string{"member", "add", "hd-1", "--role", "health-office", "--display-name", "GA 1"}, pf...)...)
	c.ok(append([]string{"directory", "sign", "--validity", "24h"}, pf...)...)
	c.ok(append([]string{"directory", "sign", "--validity", "24h"}, pf...)...)
	v2 := filepath.Join(c.dir, "directory", "v2")
	signed, _ := os.ReadFile(v2)
	tmp := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(tmp, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	tampered := write("tampered", bytes.Replace(signed, []byte(`"GA 1"`), []byte(`"GA 2"`), 1))
	badFormat := write("format", []byte("hello\n"))
	// A second CA's key does not know the document's key id.
	other := newCLITest(t)
	other.ok("ca", "init", "--network", "kurier.test", "--dir", other.dir, "--insecure-unencrypted-key")

	for _, tt := range []struct {
		name   string
		args   []string
		reason string
	}{
		{"tampered", append([]string{"directory", "verify", tampered}, d...), "signature"},
		{"rolled back", append([]string{"directory", "verify", filepath.Join(c.dir, "directory", "v1"), "--min-version", "2"}, d...), "rollback"},
		{"bad format", append([]string{"directory", "verify", badFormat}, d...), "format"},
		{"unknown key", []string{"directory", "verify", v2, "--key", filepath.Join(other.dir, "directory.pub")}, "unknown_key"},
		{"other network", append([]string{"directory", "verify", v2, "--network", "other.test"}, d...), "network"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := c.run(append(tt.args, "--json")...)
			var v verifyOutput
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			if code != 1 || v.OK || v.Reason != tt.reason || !strings.Contains(errOut, tt.reason) {
				t.Errorf("exit %d, %+v, stderr %q; want exit 1, reason %s", code, v, errOut, tt.reason)
			}
		})
	}
	// Valid now; expired a day later.
	c.ok(append([]string{"directory", "verify", v2}, d...)...)
	c.advance(25 * time.Hour)
	code, _, errOut := c.run(append([]string{"directory", "verify", v2}, d...)...)
	if code != 1 || !strings.Contains(errOut, "expired") {
		t.Errorf("verify expired: exit %d, %q", code, errOut)
	}
	// The diff of a tampered document refuses when a key is given.
	if code, _, errOut := c.run(append([]string{"directory", "diff", v2, tampered}, d...)...); code != 1 || !strings.Contains(errOut, "signature") {
		t.Errorf("diff with tampered: exit %d, %q", code, errOut)
	}
	// --dir and --key together are a usage error; neither too.
	if code, _, _ := c.run("directory", "verify", v2, "--dir", c.dir, "--key", "x"); code != 2 {
		t.Errorf("--dir and --key: exit %d, want 2", code)
	}
	if code, _, _ := c.run("directory", "verify", v2); code != 2 {
		t.Errorf("verify without trust: exit %d, want 2", code)
	}
}

func TestReorderArgs(t *testing.T) {
	app := (&env{}).app()
	for _, tt := range []struct{ in, want string }{
		{"kurierctl member show hd-1 --json --dir x", "kurierctl member show --json --dir x -- hd-1"},
		{"kurierctl member show --dir x hd-1", "kurierctl member show --dir x -- hd-1"},
		{"kurierctl member add hd-1 --role=provider --display-name A B", "kurierctl member add --role=provider --display-name A -- hd-1 B"},
		{"kurierctl directory diff a b --dir d", "kurierctl directory diff --dir d -- a b"},
		{"kurierctl member show -- --odd", "kurierctl member show -- --odd"},
		{"kurierctl member", "kurierctl member"},
		{"kurierctl bogus --x", "kurierctl bogus --x"},
	} {
		got := strings.Join(reorderArgs(app, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("reorderArgs(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestUsageAndHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"kurierctl", "--help"}, strings.NewReader(""), &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "member") {
		t.Errorf("--help: exit %d, %q", code, stdout.String())
	}
	c := newCLITest(t)
	for _, args := range [][]string{
		{}, {"bogus"}, {"member"}, {"member", "bogus"}, {"ca", "init", "--bogus"}, {"directory", "sign", "extra-arg", "--dir", "x"},
	} {
		if code, _, errOut := c.run(args...); code != 2 || errOut == "" {
			t.Errorf("kurierctl %v: exit %d, stderr %q; want 2 with a message", args, code, errOut)
		}
	}
	// Every command has help text with an example.
	var walk func(prefix []string, cmds []*cli.Command)
	walk = func(prefix []string, cmds []*cli.Command) {
		for _, cmd := range cmds {
			path := append(slices.Clone(prefix), cmd.Name)
			if len(cmd.Subcommands) > 0 {
				walk(path, cmd.Subcommands)
				continue
			}
			code, out, _ := c.run(append(path, "--help")...)
			if code != 0 || !strings.Contains(out, "Examples:") {
				t.Errorf("kurierctl %s --help: exit %d, no examples", strings.Join(path, " "), code)
			}
		}
	}
	walk(nil, (&env{}).app().Commands)
	// A missing CA directory is a failure with a clear message.
	if code, _, errOut := c.run("member", "list", "--dir", filepath.Join(t.TempDir(), "none")); code != 1 || !strings.Contains(errOut, "not a Kurier CA directory") {
		t.Errorf("member list on a missing dir: exit %d, %q", code, errOut)
	}
}

func TestServeCommand(t *testing.T) {
	c := newCLITest(t)
	c.now = time.Now() // the server's certificates use the real clock
	c.init()
	c.ok("member", "add", "hd-1", "--dir", c.dir, "--role", "health-office", "--display-name", "GA 1", "--passphrase-file", c.passFile)

	for _, stopBy := range []string{"context", "SIGTERM"} {
		t.Run(stopBy, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			e := c.env(&stdout, &stderr)
			// The passphrase comes from the environment this time.
			e.lookupEnv = func(k string) (string, bool) {
				if k == passphraseEnv {
					return "pw", true
				}
				return "", false
			}
			addrs := make(chan net.Addr, 1)
			e.onListen = func(a net.Addr) { addrs <- a }
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan int, 1)
			go func() {
				done <- e.run(ctx, []string{"kurierctl", "ca", "serve", "--dir", c.dir, "--listen", "127.0.0.1:0", "--drain-timeout", "5s"})
			}()
			var addr net.Addr
			select {
			case addr = <-addrs:
			case code := <-done:
				t.Fatalf("ca serve exited %d: %s", code, stderr.String())
			}
			pool := x509.NewCertPool()
			pool.AddCert(c.openCA().Roots()[0])
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "ca.kurier.test"}}, Timeout: 10 * time.Second}
			defer hc.CloseIdleConnections()
			resp, err := hc.Get("https://" + addr.String() + "/health")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /health = %d", resp.StatusCode)
			}
			hc.CloseIdleConnections()
			if stopBy == "SIGTERM" {
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
			} else {
				cancel()
			}
			select {
			case code := <-done:
				if code != 0 {
					t.Errorf("ca serve exited %d: %s", code, stderr.String())
				}
			case <-time.After(15 * time.Second):
				t.Fatal("ca serve did not stop")
			}
			if !strings.Contains(stderr.String(), `"msg":"stopped"`) {
				t.Errorf("no JSON lifecycle log on stderr: %s", stderr.String())
			}
		})
	}
}

func TestRotationCommands(t *testing.T) {
	c := newCLITest(t)
	c.init()
	pf := []string{"--dir", c.dir, "--passphrase-file", c.passFile}
	d := []string{"--dir", c.dir}
	old := c.openCA().RootFingerprint()

	c.advance(time.Second)
	c.ok(append([]string{"ca", "rotate-intermediate"}, pf...)...)
	c.advance(time.Second)
	var rot rotationOutput
	if err := json.Unmarshal([]byte(c.ok(append([]string{"ca", "rotate-root", "--json"}, pf...)...)), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.RootFingerprint == old || len(rot.Roots) != 2 || rot.Roots[1] != old {
		t.Errorf("rotate-root: %+v", rot)
	}
	if code, _, _ := c.run(append([]string{"ca", "retire-root", rot.RootFingerprint}, d...)...); code != 1 {
		t.Errorf("retiring the current root: exit %d, want 1", code)
	}
	c.ok(append([]string{"ca", "retire-root", old}, d...)...)
	if got := c.openCA().Roots(); len(got) != 1 || ca.Fingerprint(got[0]) != rot.RootFingerprint {
		t.Errorf("roots after retire: %d", len(got))
	}

	var keys keyListOutput
	json.Unmarshal([]byte(c.ok(append([]string{"directory", "key", "add", "--json"}, pf...)...)), &keys)
	if len(keys.Keys) != 2 || keys.Keys[0].State != "signing" || keys.Keys[1].State != "staged" {
		t.Fatalf("after key add: %+v", keys)
	}
	oldID, newID := keys.Keys[0].ID, keys.Keys[1].ID
	c.ok(append([]string{"directory", "key", "activate"}, pf...)...)
	out := c.ok(append([]string{"directory", "sign", "--json"}, pf...)...)
	var p publishedOutput
	json.Unmarshal([]byte(out), &p)
	if p.KeyID != newID {
		t.Errorf("signed with %s after activation, want %s", p.KeyID, newID)
	}
	// directory.pub now holds the new key.
	c.ok("directory", "verify", filepath.Join(c.dir, "directory", "current"), "--key", filepath.Join(c.dir, "directory.pub"))
	c.ok(append([]string{"directory", "key", "retire", oldID}, d...)...)
	if code, _, _ := c.run(append([]string{"directory", "key", "retire", newID}, d...)...); code != 1 {
		t.Errorf("retiring the signing key: exit %d, want 1", code)
	}
	out = c.ok(append([]string{"directory", "key", "list"}, d...)...)
	if !strings.Contains(out, newID) || strings.Contains(out, oldID) {
		t.Errorf("key list after retire:\n%s", out)
	}
}

func TestVersion(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(t.Context(), []string{"kurierctl", "--version"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("kurierctl --version exited %d: %s", code, errb.String())
	}
	if !strings.HasPrefix(out.String(), "kurierctl version ") || !strings.Contains(out.String(), "go1.") {
		t.Errorf("kurierctl --version printed %q", out.String())
	}
}
