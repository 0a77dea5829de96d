package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/cmd/internal/admin"
	"github.com/kurier-net/kurier/pki"
)

// Flags shared by every long-running command.
func daemonFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "state", Usage: "member state directory written by kurier enroll (required)"},
		&cli.StringFlag{Name: "admin", Value: "127.0.0.1:9100", Usage: "admin listener for /metrics, /healthz and /readyz (empty disables)"},
		&cli.DurationFlag{Name: "directory-interval", Value: 30 * time.Second, Usage: "how often to fetch the signed directory from the CA"},
		&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "on SIGTERM, how long to let open connections finish"},
		&cli.StringFlag{Name: "log-format", Value: "json", Usage: "log format: json or text"},
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "log level: debug, info, warn or error"},
	}
}

// requireFlags reports missing flags as a usage error (exit code 2).
func requireFlags(c *cli.Context, names ...string) error {
	var missing []string
	for _, n := range names {
		if c.String(n) == "" {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usagef("%s required", strings.Join(missing, ", "))
	}
	return nil
}

func newLogger(c *cli.Context) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, usagef("--log-level: %v", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	w := c.App.ErrWriter
	switch c.String("log-format") {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, usagef("--log-format must be json or text")
}

// node is what every long-running member process has: its identity kept
// fresh by a renewer, and the directory kept current by a watcher.
type node struct {
	state    *pki.State
	identity *pki.Identity
	verifier *pki.Verifier
	ca       *pki.CAClient
	reg      *prometheus.Registry
	log      *slog.Logger
	renewer  *pki.Renewer
	watcher  *pki.DirectoryWatcher
}

func openNode(c *cli.Context, log *slog.Logger) (*node, error) {
	st, err := pki.LoadState(c.String("state"))
	if err != nil {
		return nil, err
	}
	id, err := pki.NewIdentity(st.Cert)
	if err != nil {
		return nil, err
	}
	v, err := st.NewVerifier(nil)
	if err != nil {
		return nil, err
	}
	ca, err := pki.NewCAClient(pki.CAClientConfig{URL: st.CAURL, Roots: st.RootPool()})
	if err != nil {
		return nil, err
	}
	reg := admin.NewRegistry()
	n := &node{state: st, identity: id, verifier: v, ca: ca, reg: reg, log: log.With("peer", st.ID.String())}
	n.renewer, err = pki.NewRenewer(pki.RenewerConfig{
		Identity: id, Renew: ca.RenewCert, Save: st.SaveCert, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	n.watcher, err = pki.NewDirectoryWatcher(pki.DirectoryWatcherConfig{
		Verifier: v, Fetch: ca.Directory, Interval: c.Duration("directory-interval"),
		Save: st.SaveDirectory, Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// start runs the renewer and the directory watcher in g until ctx ends, and
// waits (bounded) for a first usable directory.
func (n *node) start(ctx context.Context, g *errgroup.Group) error {
	g.Go(func() error { return n.renewer.Run(ctx) })
	g.Go(func() error { return n.watcher.Run(ctx) })
	g.Go(func() error { n.followTrust(ctx); return nil })
	wait, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for n.verifier.Current() == nil {
		select {
		case <-wait.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("no signed directory from %s after 30s: is the CA reachable and has the operator run `kurierctl directory sign`?", n.state.CAURL)
		case <-n.verifier.Changed():
		}
	}
	snap := n.verifier.Current()
	n.log.Info("directory loaded", "version", snap.Dir.Version, "members", len(snap.Dir.Members))
	return nil
}

// followTrust applies the trust anchors of each new directory version: the
// directory keys it lists are saved (the verifier already trusts exactly
// them), and roots it lists that this member lacks are fetched from the CA
// and kept if their fingerprints match.
func (n *node) followTrust(ctx context.Context) {
	for {
		ch := n.verifier.Changed()
		snap := n.verifier.Current()
		if snap != nil && snap.Dir.Trust != nil {
			keys := n.verifier.Keys()
			if !sameKeys(keys, n.state.DirectoryKeys) {
				if err := n.state.SaveDirectoryKeys(keys); err != nil {
					n.log.Error("could not save the directory keys the directory announced", "err", err)
				} else {
					n.log.Info("trusted directory keys updated", "keys", len(keys))
				}
			}
			if missing := n.state.MissingRoots(snap.Dir.Trust.Roots); len(missing) > 0 {
				added, err := n.state.AdoptRoots(ctx, n.ca, snap.Dir.Trust.Roots)
				if err != nil {
					n.log.Warn("the directory lists a network root this member lacks and it could not be fetched", "err", err)
				} else {
					n.log.Warn("adopted a new network root announced by the directory; restart to accept certificates under it", "roots", added)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

func sameKeys(a, b []ed25519.PublicKey) bool {
	if len(a) != len(b) {
		return false
	}
	for _, k := range a {
		if !slices.ContainsFunc(b, func(o ed25519.PublicKey) bool { return k.Equal(o) }) {
			return false
		}
	}
	return true
}

// serveAdmin serves /metrics, /healthz and /readyz on addr until ctx ends.
func (n *node) serveAdmin(ctx context.Context, g *errgroup.Group, addr string, ready func() error) error {
	return admin.Serve(ctx, g, addr, n.reg, ready, n.log)
}

func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
