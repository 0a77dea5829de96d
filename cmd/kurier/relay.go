package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/cluster"
)

// newCluster builds the relay's cluster node from the flags. Without
// --join it joins the gossip endpoints other relays publish in the
// directory, following each new version (the directory may not be loaded
// yet when this runs: a freshly enrolled relay has none cached).
func newCluster(c *cli.Context, n *node, log *slog.Logger) (*cluster.Cluster, error) {
	keyFile := c.String("gossip-key-file")
	if keyFile == "" {
		return nil, usagef("--gossip needs --gossip-key-file")
	}
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("--gossip-key-file: %w", err)
	}
	key := bytes.TrimSpace(raw)
	if dec, err := base64.StdEncoding.DecodeString(string(key)); err == nil {
		key = dec
	}
	host, port, err := net.SplitHostPort(c.String("gossip"))
	if err != nil {
		return nil, usagef("--gossip: %v", err)
	}
	bindPort, err := strconv.Atoi(port)
	if err != nil {
		return nil, usagef("--gossip: bad port %q", port)
	}
	cfg := cluster.Config{
		Name: n.state.ID.Name, BindAddr: host, BindPort: bindPort,
		SecretKey: cluster.Key(key), Join: splitList(c.StringSlice("join")),
		Verifier: n.verifier, Logger: log, Registerer: n.reg,
	}
	cfg.JoinDirectory = len(cfg.Join) == 0
	if adv := c.String("gossip-advertise"); adv != "" {
		h, p, err := net.SplitHostPort(adv)
		if err != nil {
			return nil, usagef("--gossip-advertise: %v", err)
		}
		cfg.AdvertiseAddr = h
		if cfg.AdvertisePort, err = strconv.Atoi(p); err != nil {
			return nil, usagef("--gossip-advertise: bad port %q", p)
		}
	}
	return cluster.New(cfg)
}

// warnFDLimit warns when the open-files limit cannot hold maxConns relayed
// connections: two sockets each, plus a pipe pair per direction that is
// moving data.
func warnFDLimit(log *slog.Logger, maxConns int) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if need := uint64(3*maxConns + 1024); lim.Cur < need {
		log.Warn("open-files limit is low for --max-conns; raise LimitNOFILE", "limit", lim.Cur, "want", need, "max_conns", maxConns)
	}
}

func relayCommand() *cli.Command {
	return &cli.Command{
		Name:  "relay",
		Usage: "run a public relay",
		Description: `Routes TLS connections by SNI to members' private proxies without
terminating them. Needs a state directory enrolled with role relay.

Ports (defaults):
   --public      :443    TCP, clients (TLS passthrough)
   --pairing     :4443   TCP, private proxies dialling back with a token
   --control     :4443   UDP, QUIC control sessions from private proxies
   --control-tcp :4444   TCP, control sessions where UDP is blocked
   --admin       127.0.0.1:9100  /metrics /healthz /readyz

The addresses published in the directory for this relay must reach these
listeners. On SIGTERM the relay stops accepting, tells proxies to go away
and lets relayed connections finish for up to --drain-timeout.`,
		Flags: append(daemonFlags(),
			&cli.StringFlag{Name: "public", Value: ":443", Usage: "client listener (TCP)"},
			&cli.StringFlag{Name: "pairing", Value: ":4443", Usage: "pairing listener (TCP)"},
			&cli.StringFlag{Name: "control", Value: ":4443", Usage: "QUIC control listener (UDP)"},
			&cli.StringFlag{Name: "control-tcp", Value: ":4444", Usage: "TCP+TLS control listener"},
			&cli.DurationFlag{Name: "idle-timeout", Value: 5 * time.Minute, Usage: "close relayed connections that moved no byte for this long"},
			&cli.DurationFlag{Name: "max-age", Value: 24 * time.Hour, Usage: "close relayed connections this old"},
			&cli.IntFlag{Name: "max-conns", Value: 20000, Usage: "client connections at once (waiting and relayed)"},
			&cli.IntFlag{Name: "max-conn-rate", Value: 100, Usage: "new connections per source IP per second (-1: no limit)"},
			&cli.IntFlag{Name: "max-pending-per-member", Value: 2048, Usage: "clients waiting for one member's proxy to dial back"},
			&cli.StringFlag{Name: "gossip", Usage: "cluster listener HOST:PORT (TCP and UDP); empty: no cluster"},
			&cli.StringFlag{Name: "gossip-advertise", Usage: "address other relays reach the cluster listener at (default: the bound one)"},
			&cli.StringFlag{Name: "gossip-key-file", Usage: "file holding the shared cluster key: 16, 24 or 32 bytes, raw or base64 (required with --gossip)"},
			&cli.StringSliceFlag{Name: "join", Usage: "cluster address of another relay (repeatable); default: the gossip endpoints in the directory, followed as it changes"},
		),
		Action: runRelay,
	}
}

func runRelay(c *cli.Context) error {
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
	if n.state.ID.Role != pki.RoleRelay {
		return fmt.Errorf("%s is not a relay (role %s); enrol with a relay token", n.state.ID, n.state.ID.Role)
	}
	warnFDLimit(log, c.Int("max-conns"))
	var cl *cluster.Cluster
	if addr := c.String("gossip"); addr != "" {
		if cl, err = newCluster(c, n, log); err != nil {
			return err
		}
	}
	rcfg := relay.Config{
		Identity:            n.identity,
		Trust:               pki.Trust{Roots: n.state.RootPool(), Directory: n.verifier},
		IdleTimeout:         c.Duration("idle-timeout"),
		MaxAge:              c.Duration("max-age"),
		MaxConns:            c.Int("max-conns"),
		MaxConnRate:         c.Int("max-conn-rate"),
		MaxPendingPerMember: c.Int("max-pending-per-member"),
		Logger:              log,
		Registerer:          n.reg,
	}
	if cl != nil {
		rcfg.Cluster = cl
	}
	// leaveCluster ends the cluster node on the early error paths below
	// (the normal shutdown leaves after draining, at the end).
	leaveCluster := func() {
		if cl != nil {
			lctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cl.Shutdown(lctx)
		}
	}
	srv, err := relay.New(rcfg)
	if err != nil {
		leaveCluster()
		return err
	}
	if cl != nil {
		cl.SetLocal(srv)
	}
	// Listen on everything before serving anything, so a port in use is
	// reported before the relay announces itself ready.
	var lns []net.Listener
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
		leaveCluster()
	}
	for _, flag := range []string{"public", "pairing", "control-tcp"} {
		ln, err := net.Listen("tcp", c.String(flag))
		if err != nil {
			closeAll()
			return fmt.Errorf("--%s: %w", flag, err)
		}
		lns = append(lns, ln)
	}
	pc, err := net.ListenPacket("udp", c.String("control"))
	if err != nil {
		closeAll()
		return fmt.Errorf("--control: %w", err)
	}
	defer pc.Close()

	ctx := c.Context
	g, ctx := errgroup.WithContext(ctx)
	if err := n.start(ctx, g); err != nil {
		closeAll()
		srv.Close()
		return errors.Join(err, g.Wait())
	}
	if err := n.serveAdmin(ctx, g, c.String("admin"), srv.Ready); err != nil {
		closeAll()
		srv.Close()
		return err
	}
	if cl != nil {
		// In the background: the relay serves alone until a relay answers.
		if err := cl.Start(); err != nil {
			closeAll()
			srv.Close()
			return err
		}
	}
	g.Go(func() error {
		return srv.Serve(relay.Listeners{Public: lns[0], Pairing: lns[1], ControlTCP: lns[2], ControlQUIC: pc})
	})
	log.Info("relay serving", "public", lns[0].Addr().String(), "pairing", lns[1].Addr().String(),
		"control", pc.LocalAddr().String(), "control_tcp", lns[2].Addr().String())
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Duration("drain-timeout"))
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Warn("drain deadline passed; closed remaining connections", "err", err)
		}
		if cl != nil {
			lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			cl.Shutdown(lctx) // leave the cluster after the relay stopped routing
		}
		return nil
	})
	err = g.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
