package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay"
)

func (e *env) demoCommand() *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a whole Kurier network on loopback and show it working",
		Description: `Starts, in this one process and on 127.0.0.1 only: the network CA
(smallstep's authority), a relay and a health office enrolled through the
real enrolment protocol, the signed member directory, the relay and the
office's private proxy. A client then reaches the office's HTTPS server
through the relay, and the office is revoked to show the relay cutting it
off. Each step is printed with its time.

Everything lives in a temporary directory that is removed at the end
(--keep leaves it). The CA keys are unencrypted there: this is a demo.

Examples:
   kurierctl demo
   kurierctl demo --verbose --keep     # with the components' logs; keep the state`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "keep", Usage: "keep the temporary network directory"},
			&cli.BoolFlag{Name: "verbose", Usage: "show the components' logs on stderr"},
		},
		Action: func(c *cli.Context) error {
			return runDemo(c.Context, e.stdout, e.stderr, c.Bool("keep"), c.Bool("verbose"))
		},
	}
}

// demo holds the network the demo builds.
type demo struct {
	out   io.Writer
	start time.Time
	log   *slog.Logger
	dir   string
	net   string

	ca      *ca.CA
	caURL   string
	caFP    string
	cleanup []func()
}

func (d *demo) step(who, format string, a ...any) {
	fmt.Fprintf(d.out, "[%7.1fms] %-12s %s\n", float64(time.Since(d.start).Microseconds())/1000, who, fmt.Sprintf(format, a...))
}

func (d *demo) defer_(f func()) { d.cleanup = append(d.cleanup, f) }

func runDemo(ctx context.Context, stdout, stderr io.Writer, keep, verbose bool) (err error) {
	level := slog.LevelWarn + 4 // silent unless something is badly wrong
	if verbose {
		level = slog.LevelDebug
	}
	d := &demo{out: stdout, start: time.Now(), net: "demo.kurier",
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	d.dir, err = os.MkdirTemp("", "kurier-demo-")
	if err != nil {
		return err
	}
	defer func() {
		for i := len(d.cleanup) - 1; i >= 0; i-- {
			d.cleanup[i]()
		}
		if keep {
			fmt.Fprintf(stdout, "network directory kept at %s\n", d.dir)
		} else {
			os.RemoveAll(d.dir)
		}
	}()
	fmt.Fprintf(stdout, "Kurier demo: a whole network on 127.0.0.1 (state in %s)\n\n", d.dir)

	if err := d.startCA(ctx); err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	// The relay's listeners exist before it is added, so the directory can
	// publish its real addresses.
	rl, err := listenRelay()
	if err != nil {
		return err
	}
	d.defer_(rl.close)
	ends := rl.endpoints()
	tokens, err := d.addMembers(ends)
	if err != nil {
		return err
	}
	relaySt, err := d.enroll(ctx, "r1", tokens["r1"])
	if err != nil {
		return err
	}
	officeSt, err := d.enroll(ctx, "hd-1", tokens["hd-1"])
	if err != nil {
		return err
	}
	pub, err := d.publish("after enrolment")
	if err != nil {
		return err
	}

	relayV, err := verifierFor(relaySt, pub.Signed)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	srv, err := d.startRelay(relaySt, relayV, rl, reg)
	if err != nil {
		return err
	}
	officeV, err := verifierFor(officeSt, pub.Signed)
	if err != nil {
		return err
	}
	backend, err := d.startOfficeServer(officeSt)
	if err != nil {
		return err
	}
	p, err := d.startProxy(ctx, officeSt, officeV, backend)
	if err != nil {
		return err
	}

	if err := d.client(ctx, officeSt, officeV, ends.Public); err != nil {
		return err
	}
	d.relayView(reg)
	if err := d.revoke(ctx, relayV, srv, p, officeSt, ends.Public); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ndone in %v: every step above ran over real TLS on loopback.\n", time.Since(d.start).Round(time.Millisecond))
	return nil
}

func (d *demo) startCA(ctx context.Context) error {
	res, err := ca.Init(ca.InitConfig{
		Dir: d.dir + "/ca", Network: d.net, InsecureUnencryptedKeys: true,
		DNSNames: []string{"127.0.0.1", "localhost"},
	})
	if err != nil {
		return err
	}
	d.caFP = res.RootFingerprint
	d.step("operator", "kurierctl ca init: network %q, root SHA-256 %s…", d.net, d.caFP[:16])
	d.step("", "  root, intermediate, directory key (Ed25519) and enrolment key created")
	d.ca, err = ca.Open(ca.OpenConfig{Dir: d.dir + "/ca"})
	if err != nil {
		return err
	}
	srv, err := ca.New(ca.Config{CA: d.ca, Logger: d.log.With("component", "ca")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go srv.Serve(ln)
	d.defer_(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	d.caURL = "https://" + ln.Addr().String()
	d.step("CA", "kurierctl ca serve: smallstep authority with bbolt, %s", d.caURL)
	return nil
}

func (d *demo) addMembers(ends pki.RelayEndpoints) (map[string]pki.Token, error) {
	signer, err := d.ca.TokenSigner(nil)
	if err != nil {
		return nil, err
	}
	tokens := map[string]pki.Token{}
	for _, nm := range []ca.NewMember{
		{Name: "r1", Role: pki.RoleRelay, DisplayName: "Relay 1", Relay: &ends},
		{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "Gesundheitsamt Musterstadt", Services: []string{"index-cases"}},
	} {
		m, err := d.ca.Store().Add(nm)
		if err != nil {
			return nil, err
		}
		ti, err := signer.Token(m, 10*time.Minute)
		if err != nil {
			return nil, err
		}
		tokens[nm.Name] = pki.Token(ti.Token)
		d.step("operator", "kurierctl member add %s --role %s: one-time token, valid 10 min, bound to spiffe://%s/%s/%s",
			nm.Name, nm.Role, d.net, nm.Role, nm.Name)
	}
	return tokens, nil
}

func (d *demo) enroll(ctx context.Context, name string, tok pki.Token) (*pki.State, error) {
	t0 := time.Now()
	st, err := pki.Enroll(ctx, pki.EnrollConfig{CAURL: d.caURL, Fingerprint: d.caFP, Token: tok, Dir: d.dir + "/" + name})
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", name, err)
	}
	d.step(name, "kurier enroll: P-256 key and HPKE seal key made here; certificate valid until %s (%v)",
		st.Cert.Leaf.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), time.Since(t0).Round(time.Millisecond))
	// A token is single use: the CA refuses it a second time.
	_, err = pki.Enroll(ctx, pki.EnrollConfig{CAURL: d.caURL, Fingerprint: d.caFP, Token: tok, Dir: d.dir + "/" + name + "-again"})
	if err == nil {
		return nil, errors.New("the CA accepted a used token")
	}
	d.step("", "  the same token again: refused (%s)", shortErr(err))
	return st, nil
}

func shortErr(err error) string {
	if ce, ok := errors.AsType[*pki.CAError](err); ok {
		return fmt.Sprintf("HTTP %d %s", ce.Status, http.StatusText(ce.Status))
	}
	if errors.Is(err, io.EOF) {
		return "the relay closed the connection: no route"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

func (d *demo) publish(why string) (*ca.Published, error) {
	key, err := d.ca.DirectoryKey(nil)
	if err != nil {
		return nil, err
	}
	pub, err := d.ca.PublishDirectory(key, ca.SignOptions{})
	if err != nil {
		return nil, err
	}
	d.step("operator", "kurierctl directory sign (%s): version %d, %d members, %d revoked, signed by key %s",
		why, pub.Directory.Version, len(pub.Directory.Members), len(pub.Directory.Revoked), pub.KeyID)
	return pub, nil
}

// verifierFor gives a member a verifier loaded with the published directory
// (a daemon would fetch it from the CA; see kurier relay).
func verifierFor(st *pki.State, signed []byte) (*pki.Verifier, error) {
	v, err := st.NewVerifier(nil)
	if err != nil {
		return nil, err
	}
	if _, err := v.Update(signed); err != nil {
		return nil, err
	}
	return v, nil
}

type relayListeners struct {
	public, pairing, controlTCP net.Listener
	control                     net.PacketConn
}

func listenRelay() (*relayListeners, error) {
	var rl relayListeners
	var err error
	for _, p := range []*net.Listener{&rl.public, &rl.pairing, &rl.controlTCP} {
		if *p, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			rl.close()
			return nil, err
		}
	}
	if rl.control, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		rl.close()
		return nil, err
	}
	return &rl, nil
}

func (rl *relayListeners) endpoints() pki.RelayEndpoints {
	return pki.RelayEndpoints{Public: rl.public.Addr().String(), Pairing: rl.pairing.Addr().String(),
		Control: rl.control.LocalAddr().String(), ControlTCP: rl.controlTCP.Addr().String()}
}

func (rl *relayListeners) close() {
	for _, l := range []net.Listener{rl.public, rl.pairing, rl.controlTCP} {
		if l != nil {
			l.Close()
		}
	}
	if rl.control != nil {
		rl.control.Close()
	}
}

func (d *demo) startRelay(st *pki.State, v *pki.Verifier, rl *relayListeners, reg *prometheus.Registry) (*relay.Server, error) {
	id, err := pki.NewIdentity(st.Cert)
	if err != nil {
		return nil, err
	}
	srv, err := relay.New(relay.Config{Identity: id, Trust: pki.Trust{Roots: st.RootPool(), Directory: v},
		Logger: d.log.With("component", "relay"), Registerer: reg})
	if err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for _, f := range []func() error{
		func() error { return srv.ServePublic(rl.public) },
		func() error { return srv.ServePairing(rl.pairing) },
		func() error { return srv.ServeControlTCP(rl.controlTCP) },
		func() error { return srv.ServeControlQUIC(rl.control) },
	} {
		wg.Go(func() { f() })
	}
	d.defer_(func() { srv.Close(); wg.Wait() })
	d.step("r1", "kurier relay: public %s, pairing %s, control quic %s / tcp %s",
		rl.public.Addr(), rl.pairing.Addr(), rl.control.LocalAddr(), rl.controlTCP.Addr())
	return srv, nil
}

// startOfficeServer runs the office's own HTTPS service with the office's
// certificate: the only place the client's TLS ends.
func (d *demo) startOfficeServer(st *pki.State) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "Gesundheitsamt Musterstadt: hello over %s, %s\n", r.Proto, tls.VersionName(r.TLS.Version))
		}),
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*st.Cert}, MinVersion: tls.VersionTLS13},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(d.log.Handler(), slog.LevelDebug),
	}
	go srv.ServeTLS(ln, "", "")
	d.defer_(func() { srv.Close() })
	d.step("hd-1", "office HTTPS service on %s (office certificate; never exposed inbound)", ln.Addr())
	return ln.Addr().String(), nil
}

func (d *demo) startProxy(ctx context.Context, st *pki.State, v *pki.Verifier, backend string) (*proxy.Proxy, error) {
	id, err := pki.NewIdentity(st.Cert)
	if err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Config{Identity: id, Trust: pki.Trust{Roots: st.RootPool(), Directory: v},
		Logger: d.log.With("component", "proxy")})
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { p.Run(runCtx); close(done) }()
	d.defer_(func() { p.Close(); cancel(); <-done })
	t0 := time.Now()
	name := st.ID.DNSName()
	if err := p.AddRoute(ctx, proxy.Route{Name: name, Target: proxy.DialTarget{Addr: backend}}); err != nil {
		return nil, err
	}
	for p.Registered(name) == 0 {
		if time.Since(t0) > 15*time.Second {
			return nil, errors.New("the proxy did not register its route within 15s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	rs := p.Status().Relays
	transport := "?"
	if len(rs) > 0 {
		transport = rs[0].Transport
	}
	d.step("hd-1", "kurier proxy: dialled out to r1 over %s (mTLS, directory-checked), registered %s (%v)",
		transport, name, time.Since(t0).Round(time.Millisecond))
	return p, nil
}

func (d *demo) client(ctx context.Context, office *pki.State, v *pki.Verifier, relayAddr string) error {
	name := office.ID.DNSName()
	pin := v.Current()
	m, _ := pin.Dir.Member(office.ID.Name)
	// The client trusts the network root and checks the office's key
	// against the signed directory's pins.
	cfg := &tls.Config{
		ServerName: name, RootCAs: office.RootPool(), MinVersion: tls.VersionTLS13,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got := pki.Pin(cs.PeerCertificates[0])
			for _, p := range m.Pins {
				if p == got {
					return nil
				}
			}
			return fmt.Errorf("office key %s is not pinned in the directory", got)
		},
	}
	for i := range 3 {
		t0 := time.Now()
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", relayAddr, cfg)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		hs := time.Since(t0)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+name+"\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return fmt.Errorf("client: %w", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cs := c.ConnectionState()
		c.Close()
		if i == 0 {
			d.step("client", "TLS to %s via the relay: %s, key exchange %v, office key pinned in the directory",
				name, tls.VersionName(cs.Version), cs.CurveID)
		}
		d.step("client", "request %d: %q (handshake %v, total %v)", i+1, strings.TrimSpace(string(body)),
			hs.Round(time.Microsecond), time.Since(t0).Round(time.Microsecond))
	}
	return nil
}

func (d *demo) relayView(reg *prometheus.Registry) {
	mfs, err := reg.Gather()
	if err != nil {
		return
	}
	vals := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			key := mf.GetName()
			for _, l := range m.Label {
				key += "/" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				vals[key] = m.Counter.GetValue()
			case m.Histogram != nil:
				h := m.Histogram
				if h.GetSampleCount() > 0 {
					vals[key] = h.GetSampleSum() / float64(h.GetSampleCount())
				}
			}
		}
	}
	d.step("r1", "what the relay saw: %v routed connections, %v bytes to the office, %v back, mean pairing %.0fµs;",
		vals["relay_connections_total/routed"], vals["relay_relayed_bytes_total/to_member"], vals["relay_relayed_bytes_total/to_client"],
		vals["relay_pairing_duration_seconds"]*1e6)
	d.step("", "  SNI and sizes only: the TLS session ran from the client to the office")
}

func (d *demo) revoke(ctx context.Context, v *pki.Verifier, srv *relay.Server, p *proxy.Proxy, office *pki.State, relayAddr string) error {
	if _, err := d.ca.Store().SetStatus(office.ID.Name, ca.StatusRevoked, "demo: key compromise reported"); err != nil {
		return err
	}
	d.step("operator", "kurierctl member revoke hd-1: the CA refuses its renewals from now on")
	pub, err := d.publish("revocation")
	if err != nil {
		return err
	}
	t0 := time.Now()
	if _, err := v.Update(pub.Signed); err != nil { // what the relay's directory watcher does
		return err
	}
	name := office.ID.DNSName()
	for srv.Holds(name) {
		if time.Since(t0) > 10*time.Second {
			return errors.New("the relay kept the revoked office's route")
		}
		time.Sleep(time.Millisecond)
	}
	d.step("r1", "directory version %d: closed hd-1's control session and routes in %v", pub.Directory.Version, time.Since(t0).Round(time.Microsecond))
	c, err := net.DialTimeout("tcp", relayAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: office.RootPool()})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tc.HandshakeContext(ctx)
	if err == nil {
		return errors.New("a client still reached the revoked office")
	}
	d.step("client", "TLS to %s now: %s", name, shortErr(err))
	return nil
}
