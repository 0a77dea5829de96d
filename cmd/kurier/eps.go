package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
)

func epsCommand() *cli.Command {
	return &cli.Command{
		Name:  "eps",
		Usage: "run the endpoint server for this member's software",
		Description: `Serves the local JSON-RPC API for the office's or vendor's software on
loopback, reaches other members through the relays (with the private proxy
built in: nothing listens for inbound connections), seals payloads to the
recipient's key, and delivers asynchronous messages durably.

   kurier eps --state /var/lib/kurier --callback http://127.0.0.1:8080/kurier

Local software then calls, for example:

   curl -s http://127.0.0.1:5555/ -H 'Content-Type: application/json' \
     -d '{"jsonrpc":"2.0","id":1,"method":"vendor-a.guest-lists","params":{}}'

Without --callback, software fetches incoming messages with _poll and
answers them with _ack.

A health office that sends citizens one-time submission links adds a TLS
certificate browsers trust for *.<member>.<network>:

   kurier eps --state /var/lib/kurier --link-cert links.crt --link-key links.key

and its software calls _link for each index case. See docs/eps.md for the
API and docs/operations.md for DNS and certificates.

Unless the environment sets GOGC, the endpoint server runs with GOGC=200
(13-14 % less CPU per call than Go's default, for a few MiB more memory;
docs/operations.md, "Tune").`,
		Flags: append(daemonFlags(),
			&cli.StringFlag{Name: "listen", Value: "127.0.0.1:5555", Usage: "local API address (keep it on loopback)"},
			&cli.StringFlag{Name: "store", Usage: "message store file (default <state>/eps.db)"},
			&cli.StringFlag{Name: "token-file", Usage: "file holding the bearer token local software must send (recommended)"},
			&cli.StringFlag{Name: "tls-cert", Usage: "serve the local API over HTTPS with this certificate (PEM)"},
			&cli.StringFlag{Name: "tls-key", Usage: "key of --tls-cert (PEM)"},
			&cli.StringFlag{Name: "callback", Usage: "URL incoming messages are POSTed to; empty: software polls"},
			&cli.StringFlag{Name: "callback-token-file", Usage: "file holding a bearer token sent with callbacks"},
			&cli.BoolFlag{Name: "pass-sealed", Usage: "hand payloads to software still sealed (it holds the seal key itself)"},
			&cli.DurationFlag{Name: "sync-timeout", Value: 30 * time.Second, Usage: "bound on a synchronous call end to end"},
			&cli.DurationFlag{Name: "default-deadline", Value: 24 * time.Hour, Usage: "delivery deadline of asynchronous messages that name none"},
			&cli.BoolFlag{Name: "disable-quic", Usage: "reach the relays' control endpoints over TCP+TLS only"},
			&cli.StringFlag{Name: "link-cert", Usage: "health offices: serve one-time submission links (_link) with this TLS certificate for *.<member>.<network> (PEM, browsers must trust it)"},
			&cli.StringFlag{Name: "link-key", Usage: "key of --link-cert (PEM)"},
			&cli.IntFlag{Name: "link-port", Value: 443, Usage: "the relays' public port, as it goes into links"},
			&cli.DurationFlag{Name: "link-ttl", Value: 72 * time.Hour, Usage: "lifetime of a link whose _link call names none"},
			&cli.StringFlag{Name: "link-service", Value: "index-cases", Usage: "the service submissions through links arrive as"},
		),
		Action: runEPS,
	}
}

func readSecret(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

func runEPS(c *cli.Context) error {
	if err := requireFlags(c, "state"); err != nil {
		return err
	}
	if (c.String("tls-cert") == "") != (c.String("tls-key") == "") {
		return usagef("--tls-cert and --tls-key go together")
	}
	if (c.String("link-cert") == "") != (c.String("link-key") == "") {
		return usagef("--link-cert and --link-key go together")
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	if gc := tuneGC(); gc != "" {
		log.Debug("garbage collector", "gogc", gc)
	}
	token, err := readSecret(c.String("token-file"))
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	cbToken, err := readSecret(c.String("callback-token-file"))
	if err != nil {
		return fmt.Errorf("--callback-token-file: %w", err)
	}
	n, err := openNode(c, log)
	if err != nil {
		return err
	}
	if n.state.ID.Role == pki.RoleRelay {
		return fmt.Errorf("%s is a relay; run kurier relay", n.state.ID)
	}
	path := c.String("store")
	if path == "" {
		path = filepath.Join(n.state.Dir, "eps.db")
	}
	st, err := store.Open(store.Config{Path: path, Logger: log})
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer st.Close()
	trust := pki.Trust{Roots: n.state.RootPool(), Directory: n.verifier}
	var sealKeys []pki.SealPrivateKey
	if !c.Bool("pass-sealed") { // then the software holds the key; the EPS never loads it
		sealKeys = n.state.SealKeys()
	}
	links, err := linkConfig(c, n.state)
	if err != nil {
		return err
	}
	var localHosts []string
	if host, _, err := net.SplitHostPort(c.String("listen")); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			localHosts = append(localHosts, host)
		}
	}
	ep, err := eps.NewEndpoint(eps.Config{
		Identity: n.identity, Trust: trust, SealKeys: sealKeys, Store: st,
		Callback: c.String("callback"), CallbackToken: cbToken, PassSealed: c.Bool("pass-sealed"),
		Token: token, LocalHosts: localHosts,
		SyncTimeout: c.Duration("sync-timeout"), DefaultDeadline: c.Duration("default-deadline"),
		Links: links, Logger: log, Registerer: n.reg,
	}, proxy.Config{DisableQUIC: c.Bool("disable-quic")})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		ep.Close()
		return fmt.Errorf("--listen: %w", err)
	}
	if host, _, _ := net.SplitHostPort(ln.Addr().String()); !net.ParseIP(host).IsLoopback() {
		if token == "" {
			ln.Close()
			ep.Close()
			return usagef("--listen %s is beyond loopback: --token-file is required (and --tls-cert recommended)", c.String("listen"))
		}
		log.Warn("the local API listens beyond loopback", "addr", ln.Addr().String())
	}
	if c.String("tls-cert") != "" {
		cert, err := tls.LoadX509KeyPair(c.String("tls-cert"), c.String("tls-key"))
		if err != nil {
			ln.Close()
			ep.Close()
			return fmt.Errorf("--tls-cert: %w", err)
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	}
	if token == "" {
		log.Warn("the local API has no bearer token; any local process can use it (--token-file)")
	}

	g, ctx := errgroup.WithContext(c.Context)
	if err := n.start(ctx, g); err != nil {
		ln.Close()
		ep.Close()
		return errors.Join(err, g.Wait())
	}
	ready := func() error {
		if !ep.Proxy.Status().Ready() {
			return errors.New("eps: no relay holds this member's route yet")
		}
		return nil
	}
	if err := n.serveAdmin(ctx, g, c.String("admin"), ready); err != nil {
		ln.Close()
		ep.Close()
		return err
	}
	g.Go(func() error { return ep.Serve(ctx, ln) })
	log.Info("endpoint server running", "api", ln.Addr().String(), "sni", n.state.ID.DNSName(), "delivery", deliveryMode(c))
	g.Go(func() error {
		<-ctx.Done()
		return shutdownEPS(c, ep)
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// linkConfig returns the one-time link configuration of --link-cert, or
// nil without it.
func linkConfig(c *cli.Context, st *pki.State) (*eps.LinkConfig, error) {
	if c.String("link-cert") == "" {
		return nil, nil
	}
	if st.ID.Role != pki.RoleHealthOffice {
		return nil, usagef("--link-cert: one-time links are for health offices; %s is a %s", st.ID, st.ID.Role)
	}
	if st.WebSeal == nil {
		return nil, fmt.Errorf("--link-cert: the state in %s has no X25519 seal key for browsers (seal-web.key); enrol again with this version", st.Dir)
	}
	cert, err := tls.LoadX509KeyPair(c.String("link-cert"), c.String("link-key"))
	if err != nil {
		return nil, fmt.Errorf("--link-cert: %w", err)
	}
	if err := cert.Leaf.VerifyHostname("k7x2mq." + st.ID.DNSName()); err != nil {
		return nil, fmt.Errorf("--link-cert is not valid for *.%s: %w", st.ID.DNSName(), err)
	}
	return &eps.LinkConfig{
		Certificate: &cert, Key: *st.WebSeal, Port: c.Int("link-port"),
		DefaultTTL: c.Duration("link-ttl"), Service: c.String("link-service"),
	}, nil
}

func deliveryMode(c *cli.Context) string {
	if c.String("callback") != "" {
		return "callback"
	}
	return "poll"
}

// shutdownEPS drains the endpoint server and then its proxy within the
// drain timeout.
func shutdownEPS(c *cli.Context, ep *eps.Endpoint) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
	defer cancel()
	if err := ep.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil // drained, or as far as the budget allowed
}

// epsGOGC is the endpoint server's GOGC unless the environment sets one.
// Its live heap is small (a few MiB) and it allocates per call, so at
// Go's default of 100 it collected hundreds of times a second under load;
// at 200 it spent 13-14 % less CPU per sealed call in BenchmarkEPSProcesses,
// for 4 MiB more peak RSS (docs/benchmarks.md, docs/operations.md "Tune").
const epsGOGC = 200

// tuneGC sets epsGOGC unless GOGC is in the environment, and returns the
// setting in force.
func tuneGC() string {
	if v, ok := os.LookupEnv("GOGC"); ok {
		return v
	}
	debug.SetGCPercent(epsGOGC)
	return strconv.Itoa(epsGOGC)
}
