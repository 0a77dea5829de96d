package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
)

func proxyCommand() *cli.Command {
	return &cli.Command{
		Name:  "proxy",
		Usage: "run a private proxy that forwards relayed connections to local servers",
		Description: `Dials out to every relay in the signed directory (QUIC, or TCP+TLS where
UDP is blocked), registers this member's routes and forwards each relayed
connection, still encrypted end to end, to a local TLS server. Nothing
listens for inbound connections.

   kurier proxy --state /var/lib/kurier --route self=127.0.0.1:8443

"self" stands for this member's own name, <name>.<network>. The local
server must present a certificate clients trust for that name, usually
the member's own (cert.pem and key.pem in the state directory).

"kurier eps" embeds the same proxy; run this command only to expose other
local TLS services.`,
		Flags: append(daemonFlags(),
			&cli.StringSliceFlag{Name: "route", Usage: "NAME=HOST:PORT to forward (repeatable); NAME is self or <name>.<network>"},
			&cli.BoolFlag{Name: "disable-quic", Usage: "use only the TCP+TLS control endpoint of each relay"},
		),
		Action: runProxy,
	}
}

func parseRoutes(vals []string, self pki.ID) ([]proxy.Route, error) {
	var routes []proxy.Route
	for _, v := range splitList(vals) {
		name, addr, ok := strings.Cut(v, "=")
		if !ok || name == "" || addr == "" {
			return nil, usagef("--route %q: want NAME=HOST:PORT", v)
		}
		if name == "self" {
			name = self.DNSName()
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, usagef("--route %q: %v", v, err)
		}
		if name != self.DNSName() {
			return nil, usagef("--route %q: a standing route must be this member's own name %s (one-time routes are made by kurier eps)", v, self.DNSName())
		}
		routes = append(routes, proxy.Route{Name: name, Target: proxy.DialTarget{Addr: addr}})
	}
	if len(routes) == 0 {
		return nil, usagef("at least one --route is required")
	}
	return routes, nil
}

func runProxy(c *cli.Context) error {
	if err := requireFlags(c, "state"); err != nil {
		return err
	}
	log, err := newLogger(c)
	if err != nil {
		return err
	}
	n, err := openNode(c, log)
	if err != nil {
		return err
	}
	routes, err := parseRoutes(c.StringSlice("route"), n.state.ID)
	if err != nil {
		return err
	}
	p, err := proxy.New(proxy.Config{
		Identity:    n.identity,
		Trust:       pki.Trust{Roots: n.state.RootPool(), Directory: n.verifier},
		DisableQUIC: c.Bool("disable-quic"),
		Logger:      log,
		Registerer:  n.reg,
	})
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(c.Context)
	if err := n.start(ctx, g); err != nil {
		p.Close()
		return errors.Join(err, g.Wait())
	}
	ready := func() error {
		st := p.Status()
		if !st.Ready() {
			return errors.New("proxy: no relay holds this member's routes yet")
		}
		return nil
	}
	if err := n.serveAdmin(ctx, g, c.String("admin"), ready); err != nil {
		p.Close()
		return err
	}
	g.Go(func() error {
		if err := p.Run(ctx); err != nil && !errors.Is(err, proxy.ErrClosed) && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	for _, r := range routes {
		if err := p.AddRoute(ctx, r); err != nil {
			p.Close()
			return errors.Join(fmt.Errorf("route %s: %w", r.Name, err), g.Wait())
		}
		log.Info("route added", "sni", r.Name, "target", r.Target.(proxy.DialTarget).Addr)
	}
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Duration("drain-timeout"))
		defer cancel()
		if err := p.Shutdown(sctx); err != nil {
			log.Warn("drain deadline passed; closed remaining connections", "err", err)
		}
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
