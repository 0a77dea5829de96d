package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/eps/locations"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
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
			&cli.BoolFlag{Name: "wait-browser", Usage: "let a citizen submit through the one-time link in a real browser (prints the command) instead of in Go"},
		},
		Action: func(c *cli.Context) error {
			return runDemo(c.Context, e.stdout, e.stderr, demoOptions{keep: c.Bool("keep"), verbose: c.Bool("verbose"), waitBrowser: c.Bool("wait-browser")})
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

	waitBrowser bool
	outMu       sync.Mutex // guards out

	ca      *ca.CA
	caURL   string
	caFP    string
	cleanup []func()
}

// say prints a line outside the steps, under the same lock.
func (d *demo) say(format string, a ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format, a...)
}

// step prints one step. Software callbacks print from their own
// goroutines, so the output is locked.
func (d *demo) step(who, format string, a ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, "[%7.1fms] %-12s %s\n", float64(time.Since(d.start).Microseconds())/1000, who, fmt.Sprintf(format, a...))
}

func (d *demo) defer_(f func()) { d.cleanup = append(d.cleanup, f) }

type demoOptions struct{ keep, verbose, waitBrowser bool }

func runDemo(ctx context.Context, stdout, stderr io.Writer, o demoOptions) (err error) {
	level := slog.LevelWarn + 4 // silent unless something is badly wrong
	if o.verbose {
		level = slog.LevelDebug
	}
	d := &demo{out: stdout, start: time.Now(), net: "demo.kurier", waitBrowser: o.waitBrowser,
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))}
	d.dir, err = os.MkdirTemp("", "kurier-demo-")
	if err != nil {
		return err
	}
	defer func() {
		for i := len(d.cleanup) - 1; i >= 0; i-- {
			d.cleanup[i]()
		}
		if o.keep {
			fmt.Fprintf(stdout, "network directory kept at %s\n", d.dir)
		} else {
			os.RemoveAll(d.dir)
		}
	}()
	fmt.Fprintf(stdout, "Kurier demo: a whole network on 127.0.0.1 (state in %s)\n\n", d.dir)

	if err := d.startCA(ctx); err != nil {
		return fmt.Errorf("CA: %w", err)
	}
	// The relays' listeners exist before they are added, so the directory
	// can publish their real addresses.
	relayNames := []string{"r1", "r2"}
	rls := map[string]*relayListeners{}
	for _, r := range relayNames {
		rl, err := listenRelay()
		if err != nil {
			return err
		}
		d.defer_(rl.close)
		rls[r] = rl
	}
	tokens, err := d.addMembers(rls)
	if err != nil {
		return err
	}
	states := map[string]*pki.State{}
	for i, name := range []string{"r1", "r2", "hd-1", "vendor-a", "index"} {
		if states[name], err = d.enroll(ctx, name, tokens[name], i == 0); err != nil {
			return err
		}
	}
	pub, err := d.publish("after enrolment")
	if err != nil {
		return err
	}
	verifiers := map[string]*pki.Verifier{}
	for name, st := range states {
		if verifiers[name], err = verifierFor(st, pub.Signed); err != nil {
			return err
		}
	}
	regs := map[string]*prometheus.Registry{}
	relays := map[string]*relay.Server{}
	for _, r := range relayNames {
		regs[r] = prometheus.NewRegistry()
		if relays[r], err = d.startRelay(states[r], verifiers[r], rls[r], regs[r]); err != nil {
			return err
		}
	}
	publicPort := rls["r1"].public.Addr().(*net.TCPAddr).Port
	office, err := d.startEPS(ctx, states["hd-1"], verifiers["hd-1"], true, publicPort)
	if err != nil {
		return err
	}
	vendor, err := d.startEPS(ctx, states["vendor-a"], verifiers["vendor-a"], false, 0)
	if err != nil {
		return err
	}
	idx, err := d.startEPS(ctx, states["index"], verifiers["index"], false, 0)
	if err != nil {
		return err
	}
	if err := d.startIndex(idx); err != nil {
		return err
	}

	d.say("\nGuest list: location index, request, list sealed to the request, receipts, close and abort\n")
	if err := d.guestList(ctx, office, vendor); err != nil {
		return fmt.Errorf("guest list: %w", err)
	}
	d.say("\nIndex case: a one-time link, sealed in the citizen's browser\n")
	held := func(name string) bool { return relays["r1"].Holds(name) || relays["r2"].Holds(name) }
	if err := d.indexCase(ctx, office, rls["r1"].public.Addr().String(), held); err != nil {
		return fmt.Errorf("index case: %w", err)
	}
	d.say("\n")
	for _, r := range relayNames {
		d.relayView(r, regs[r])
	}
	if err := d.revoke(ctx, verifiers, relays, states["vendor-a"], rls["r1"].public.Addr().String()); err != nil {
		return err
	}
	d.say("\ndone in %v: every step above ran over real TLS on loopback.\n", time.Since(d.start).Round(time.Millisecond))
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

func (d *demo) addMembers(rls map[string]*relayListeners) (map[string]pki.Token, error) {
	signer, err := d.ca.TokenSigner(nil)
	if err != nil {
		return nil, err
	}
	r1, r2 := rls["r1"].endpoints(), rls["r2"].endpoints()
	tokens := map[string]pki.Token{}
	for _, nm := range []ca.NewMember{
		{Name: "r1", Role: pki.RoleRelay, DisplayName: "Relay 1", Relay: &r1},
		{Name: "r2", Role: pki.RoleRelay, DisplayName: "Relay 2", Relay: &r2},
		{Name: "hd-1", Role: pki.RoleHealthOffice, DisplayName: "Gesundheitsamt Musterstadt", Services: []string{"index-cases"}},
		{Name: "vendor-a", Role: pki.RoleProvider, DisplayName: "Check-in-App A", Services: []string{"guest-lists"}},
		{Name: "index", Role: pki.RoleService, DisplayName: "Ortsverzeichnis", Services: []string{locations.ServiceLocations, locations.ServiceSearch}},
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

func (d *demo) enroll(ctx context.Context, name string, tok pki.Token, again bool) (*pki.State, error) {
	t0 := time.Now()
	st, err := pki.Enroll(ctx, pki.EnrollConfig{CAURL: d.caURL, Fingerprint: d.caFP, Token: tok, Dir: d.dir + "/" + name})
	if err != nil {
		return nil, fmt.Errorf("enrol %s: %w", name, err)
	}
	keys := "HPKE seal key"
	if st.WebSeal != nil {
		keys = "HPKE seal keys (ML-KEM-768+X25519; X25519 for browsers)"
	}
	d.step(name, "kurier enroll: Ed25519 key and %s made here; certificate valid until %s (%v)",
		keys, st.Cert.Leaf.NotAfter.UTC().Format("2006-01-02 15:04 UTC"), time.Since(t0).Round(time.Millisecond))
	if !again {
		return st, nil
	}
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
	pub, err := d.ca.PublishDirectory(key, ca.SignOptions{Policy: ca.DefaultPolicy()})
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
	wg.Go(func() {
		if err := srv.Serve(relay.Listeners{Public: rl.public, Pairing: rl.pairing, ControlTCP: rl.controlTCP, ControlQUIC: rl.control}); err != nil {
			d.log.Error("relay failed", "relay", st.ID.Name, "err", err)
		}
	})
	d.defer_(func() { srv.Close(); wg.Wait() })
	d.step(st.ID.Name, "kurier relay: public %s, pairing %s, control quic %s / tcp %s",
		rl.public.Addr(), rl.pairing.Addr(), rl.control.LocalAddr(), rl.controlTCP.Addr())
	return srv, nil
}

func (d *demo) relayView(name string, reg *prometheus.Registry) {
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
	d.step(name, "what the relay saw: %v routed connections, %v bytes to members, %v back, mean pairing %.0fµs;",
		vals["relay_connections_total/routed"], vals["relay_relayed_bytes_total/to_member"], vals["relay_relayed_bytes_total/to_client"],
		vals["relay_pairing_duration_seconds"]*1e6)
	d.step("", "  SNI, sizes and times only: every session ran end to end in TLS, every payload sealed")
}

// revoke revokes the vendor and shows the relays cutting it off as soon
// as they hold the new directory.
func (d *demo) revoke(ctx context.Context, vs map[string]*pki.Verifier, relays map[string]*relay.Server, vendor *pki.State, relayAddr string) error {
	name := vendor.ID.Name
	if _, err := d.ca.Store().SetStatus(name, ca.StatusRevoked, "demo: key compromise reported"); err != nil {
		return err
	}
	d.step("operator", "kurierctl member revoke %s: the CA refuses its renewals from now on", name)
	pub, err := d.publish("revocation")
	if err != nil {
		return err
	}
	t0 := time.Now()
	for _, v := range vs { // what every member's directory watcher does
		if _, err := v.Update(pub.Signed); err != nil {
			return err
		}
	}
	dns := vendor.ID.DNSName()
	for _, srv := range relays {
		for srv.Holds(dns) {
			if time.Since(t0) > 10*time.Second {
				return errors.New("a relay kept the revoked member's route")
			}
			time.Sleep(time.Millisecond)
		}
	}
	d.step("r1, r2", "directory version %d: closed %s's control sessions and routes in %v", pub.Directory.Version, name, time.Since(t0).Round(time.Microsecond))
	c, err := net.DialTimeout("tcp", relayAddr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	tc := tls.Client(c, &tls.Config{ServerName: dns, RootCAs: vendor.RootPool()})
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	err = tc.HandshakeContext(ctx)
	if err == nil {
		return errors.New("a client still reached the revoked member")
	}
	d.step("client", "TLS to %s now: %s", dns, shortErr(err))
	return nil
}
