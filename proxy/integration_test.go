package proxy_test

// Integration tests: the real relay and the real private proxy on loopback,
// driven by real clients (crypto/tls, curl, openssl s_client).

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay"
)

const itNet = "kurier.test"

// itNetwork is one CA, one relay identity and one office identity, with a
// directory that lists the relay's real loopback endpoints.
type itNetwork struct {
	ca       *pkitest.CA
	relay    *tls.Certificate
	office   *tls.Certificate
	verifier *pki.Verifier
	ends     pki.RelayEndpoints
	pc       net.PacketConn
	lns      [3]net.Listener // public, pairing, control-tcp
}

func newITNetwork(t *testing.T) *itNetwork {
	t.Helper()
	ca := pkitest.NewCA(t, itNet, time.Now())
	// Ed25519 keys, as kurier enroll makes them: curl and openssl see the
	// office's Ed25519 certificate through the relay.
	n := &itNetwork{
		ca:     ca,
		relay:  ca.IssueWith(t, pki.RoleRelay, "r1", pkitest.Options{KeyType: pkitest.Ed25519}),
		office: ca.IssueWith(t, pki.RoleHealthOffice, "hd-1", pkitest.Options{KeyType: pkitest.Ed25519}),
	}
	n.listen(t, [4]string{"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"})
	rm := pkitest.Member(n.relay, "Relay 1")
	rm.Relay = &n.ends
	d := ca.Directory(rm, pkitest.Member(n.office, "Gesundheitsamt 1"))
	n.verifier = ca.Verifier(t, d)
	return n
}

// listen opens the relay's sockets on addrs (public, pairing, control-tcp,
// control-udp) and records the endpoints.
func (n *itNetwork) listen(t *testing.T, addrs [4]string) {
	t.Helper()
	for i := range 3 {
		var err error
		deadline := time.Now().Add(5 * time.Second)
		for {
			n.lns[i], err = net.Listen("tcp", addrs[i])
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond) // the old relay's socket may still be closing
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	pc, err := net.ListenPacket("udp", addrs[3])
	if err != nil {
		t.Fatal(err)
	}
	n.pc = pc
	n.ends = pki.RelayEndpoints{
		Public: n.lns[0].Addr().String(), Pairing: n.lns[1].Addr().String(),
		ControlTCP: n.lns[2].Addr().String(), Control: pc.LocalAddr().String(),
	}
}

func logger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}

func mustIdentity(t *testing.T, c *tls.Certificate) *pki.Identity {
	t.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// startRelay serves the relay on the network's sockets and returns a stop
// function that closes it (idempotent).
func (n *itNetwork) startRelay(t *testing.T) (srv *relay.Server, stop func()) {
	t.Helper()
	srv, err := relay.New(relay.Config{
		Identity: mustIdentity(t, n.relay),
		Trust:    pki.Trust{Roots: n.ca.Roots, Directory: n.verifier},
		Logger:   logger(t).With("side", "relay"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	ls := relay.Listeners{Public: n.lns[0], Pairing: n.lns[1], ControlTCP: n.lns[2], ControlQUIC: n.pc}
	wg.Go(func() {
		if err := srv.Serve(ls); err != nil {
			t.Errorf("relay: %v", err)
		}
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			srv.Close()
			n.pc.Close()
			wg.Wait()
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// startProxy runs the office's private proxy with its own name routed to
// target, and waits until the relay holds the route.
func (n *itNetwork) startProxy(t *testing.T, target string) *proxy.Proxy {
	t.Helper()
	p, err := proxy.New(proxy.Config{
		Identity:   mustIdentity(t, n.office),
		Trust:      pki.Trust{Roots: n.ca.Roots, Directory: n.verifier},
		BackoffMin: 50 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond,
		Logger:     logger(t).With("side", "proxy"),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(t.Context()) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		p.Shutdown(ctx)
		<-done
	})
	if err := p.AddRoute(t.Context(), proxy.Route{Name: "hd-1." + itNet, Target: proxy.DialTarget{Addr: target}}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the route to be registered", func() bool { return p.Registered("hd-1."+itNet) > 0 })
	return p
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startHTTPS runs the office's local HTTPS server with the office's own
// certificate.
func startHTTPS(t *testing.T, cert *tls.Certificate, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if h == nil {
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from the office over %s\n", r.Proto)
		})
	}
	srv := &http.Server{Handler: h, TLSConfig: &tls.Config{Certificates: []tls.Certificate{*cert}}, ErrorLog: slog.NewLogLogger(slog.DiscardHandler, 0)}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func writeRootPEM(t *testing.T, n *itNetwork) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: n.ca.Root.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not installed: .ci/run installs it; run it or apt-get install %s", name, name)
	}
	return p
}

func TestCurlThroughRelay(t *testing.T) {
	curl := needTool(t, "curl")
	n := newITNetwork(t)
	n.startRelay(t)
	n.startProxy(t, startHTTPS(t, n.office, nil))
	host, port, _ := net.SplitHostPort(n.ends.Public)
	name := "hd-1." + itNet
	// --pinnedpubkey makes curl refuse any server key but the office's own:
	// the TLS session ended at the office, not at a proxy.
	out, err := exec.CommandContext(t.Context(), curl, "--silent", "--show-error", "--max-time", "20",
		"--http1.1", "--cacert", writeRootPEM(t, n),
		"--resolve", name+":"+port+":"+host,
		"--pinnedpubkey", "sha256//"+pki.Pin(n.office.Leaf),
		"https://"+name+":"+port+"/").CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	if got, want := string(out), "hello from the office over HTTP/1.1\n"; got != want {
		t.Errorf("curl got %q, want %q", got, want)
	}
	// And over HTTP/2, negotiated end to end by ALPN.
	out, err = exec.CommandContext(t.Context(), curl, "--silent", "--show-error", "--max-time", "20",
		"--http2", "--cacert", writeRootPEM(t, n), "--resolve", name+":"+port+":"+host,
		"https://"+name+":"+port+"/").CombinedOutput()
	if err != nil || string(out) != "hello from the office over HTTP/2.0\n" {
		t.Errorf("curl --http2: %q, %v", out, err)
	}
}

func TestOpenSSLThroughRelay(t *testing.T) {
	openssl := needTool(t, "openssl")
	n := newITNetwork(t)
	n.startRelay(t)
	n.startProxy(t, startHTTPS(t, n.office, nil))
	name := "hd-1." + itNet
	cmd := exec.CommandContext(t.Context(), openssl, "s_client", "-connect", n.ends.Public, "-servername", name,
		"-CAfile", writeRootPEM(t, n), "-verify_return_error", "-verify_hostname", name, "-tls1_3", "-showcerts", "-ign_eof")
	cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: " + name + "\r\nConnection: close\r\n\r\n")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("openssl s_client: %v\n%s", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "Verify return code: 0 (ok)") || !strings.Contains(s, "hello from the office over HTTP/1.1") {
		t.Fatalf("openssl output lacks verification or response:\n%s", s)
	}
	// The first certificate s_client printed is the office's own.
	blk, _ := pem.Decode([]byte(s[strings.Index(s, "-----BEGIN CERTIFICATE-----"):]))
	if blk == nil || sha256.Sum256(blk.Bytes) != sha256.Sum256(n.office.Leaf.Raw) {
		t.Error("openssl saw a certificate other than the office's")
	}
}

func TestPostQuantumAndSlowClientHellos(t *testing.T) {
	n := newITNetwork(t)
	n.startRelay(t)
	n.startProxy(t, startHTTPS(t, n.office, nil))
	name := "hd-1." + itNet
	for _, tt := range []struct {
		name  string
		chunk int // bytes per write for the whole connection's first 4 KiB
	}{
		{"post-quantum hello in one write", 0},
		{"one byte per write", 1},
		{"seven bytes per write", 7},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", n.ends.Public)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.(*net.TCPConn).SetNoDelay(true)
			var c net.Conn = raw
			if tt.chunk > 0 {
				c = &chunkedConn{Conn: raw, chunk: tt.chunk, left: 4096}
			}
			tc := tls.Client(c, &tls.Config{
				ServerName:       name,
				RootCAs:          n.ca.Roots,
				CurvePreferences: []tls.CurveID{tls.X25519MLKEM768},
				MinVersion:       tls.VersionTLS13,
			})
			tc.SetDeadline(time.Now().Add(15 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			cs := tc.ConnectionState()
			if cs.CurveID != tls.X25519MLKEM768 {
				t.Errorf("key exchange %v, want X25519MLKEM768 end to end", cs.CurveID)
			}
			if !cs.PeerCertificates[0].Equal(n.office.Leaf) {
				t.Error("client did not see the office's certificate")
			}
			io.WriteString(tc, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
}

// chunkedConn splits the first left bytes written into writes of chunk bytes,
// so the ClientHello reaches the relay in many TCP segments.
type chunkedConn struct {
	net.Conn
	chunk, left int
}

func (c *chunkedConn) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 && c.left > 0 {
		k := min(c.chunk, len(b), c.left)
		if _, err := c.Conn.Write(b[:k]); err != nil {
			return n, err
		}
		n += k
		c.left -= k
		b = b[k:]
	}
	m, err := c.Conn.Write(b)
	return n + m, err
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

func TestRelayKilledMidTransfer(t *testing.T) {
	n := newITNetwork(t)
	// The office streams without end until the client goes away.
	backend := startHTTPS(t, n.office, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 32<<10)
		rand.Read(buf)
		for r.Context().Err() == nil {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	_, stopRelay := n.startRelay(t)
	n.startProxy(t, backend)
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	name := "hd-1." + itNet
	c, err := tls.Dial("tcp", n.ends.Public, &tls.Config{ServerName: name, RootCAs: n.ca.Roots})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Read a few megabytes, then kill the relay under the transfer.
	got, err := io.CopyN(io.Discard, resp.Body, 4<<20)
	if err != nil {
		t.Fatalf("before the kill: read %d bytes: %v", got, err)
	}
	stopRelay()
	c.SetReadDeadline(time.Now().Add(20 * time.Second)) // a hang fails the test, not the run
	_, err = io.Copy(io.Discard, resp.Body)
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("client after the relay died: %v; want a connection error, promptly", err)
	}
	c.Close()
	// Everything the relayed connection held is released: goroutines and
	// file descriptors return to where they were before it was opened
	// (the relay's own goroutines and sockets are gone too).
	waitUntil(t, "goroutines to be released", func() bool { return runtime.NumGoroutine() <= baseG })
	waitUntil(t, "file descriptors to be released", func() bool { return openFDs(t) <= baseFD })
}

func TestRelayRestartRecovers(t *testing.T) {
	n := newITNetwork(t)
	_, stop := n.startRelay(t)
	p := n.startProxy(t, startHTTPS(t, n.office, nil))
	name := "hd-1." + itNet
	get := func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", n.ends.Public, &tls.Config{ServerName: name, RootCAs: n.ca.Roots})
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("before the restart: %v", err)
	}
	addrs := [4]string{n.ends.Public, n.ends.Pairing, n.ends.ControlTCP, n.ends.Control}
	stop()
	waitUntil(t, "the proxy to notice", func() bool { return p.Registered(name) == 0 })
	down := time.Now()
	n.listen(t, addrs) // same ports, as a restarted relay would have
	n.startRelay(t)
	waitUntil(t, "the route to come back", func() bool { return p.Registered(name) > 0 })
	back := time.Since(down)
	if err := get(); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	t.Logf("route back %v after the relay restarted", back.Round(time.Millisecond))
}
