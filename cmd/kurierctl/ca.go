package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/cmd/internal/admin"
	"github.com/kurier-net/kurier/pki/ca"
)

func (e *env) caCommand() *cli.Command {
	return &cli.Command{
		Name:  "ca",
		Usage: "create, inspect and serve the network CA",
		Subcommands: []*cli.Command{
			{
				Name:      "init",
				Usage:     "create a new network CA (root, intermediate, directory key, enrolment key)",
				ArgsUsage: " ",
				Description: `Creates a CA directory (mode 0700) with an ECDSA P-256 root (10 years) and
intermediate (5 years), an Ed25519 directory signing key, a JWK key for
one-time enrolment tokens, the CA configuration and the member store. Every
private key is encrypted with the CA passphrase (asked twice on a terminal).
An existing CA directory is never overwritten.

Run it offline, back the directory up, and keep the passphrase apart from the
backup. It prints the root fingerprint that members pin to trust the CA.

Examples:
   kurierctl ca init --network kurier.example --dir /srv/kurier-ca --dns-name ca.kurier.example
   kurierctl ca init --network kurier.test --dir ./ca --passphrase-file pass.txt --json
   kurierctl ca init --network kurier.test --dir ./ca --insecure-unencrypted-key   # tests only`,
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "network", Usage: "network `NAME` (a lowercase DNS name); member identities live under it"},
					&cli.StringSliceFlag{Name: "dns-name", Usage: "DNS name or IP `HOST` the CA serves under (repeatable; the first names the CA in tokens); default localhost, 127.0.0.1, ::1"},
					&cli.DurationFlag{Name: "cert-lifetime", Value: ca.DefaultCertLifetime, Usage: "lifetime of member certificates"},
					&cli.DurationFlag{Name: "token-ttl", Value: ca.DefaultTokenTTL, Usage: "default lifetime of enrolment tokens"},
					passphraseFileFlag(),
					&cli.BoolFlag{Name: "insecure-unencrypted-key", Usage: "write the private keys WITHOUT encryption (tests and throwaway networks only)"},
					jsonFlag(),
				},
				Action: e.caInit,
			},
			{
				Name:      "info",
				Usage:     "print the CA's configuration and root fingerprint",
				ArgsUsage: " ",
				Description: `Examples:
   kurierctl ca info --dir /srv/kurier-ca
   kurierctl ca info --dir /srv/kurier-ca --json`,
				Flags:  []cli.Flag{dirFlag(), jsonFlag()},
				Action: e.caInfo,
			},
			{
				Name:      "rotate-intermediate",
				Usage:     "issue a new intermediate under the current root and make it the issuing CA",
				ArgsUsage: " ",
				Description: `Needs the root key (secrets/root_ca*.key, with the CA passphrase). New
certificates and renewals are issued by the new intermediate; certificates of
the old one stay valid until they expire (they chain to the same root).
Restart 'ca serve' afterwards.

Examples:
   kurierctl ca rotate-intermediate --dir /srv/kurier-ca`,
				Flags:  []cli.Flag{dirFlag(), passphraseFileFlag(), jsonFlag()},
				Action: e.caRotateIntermediate,
			},
			{
				Name:      "rotate-root",
				Usage:     "create a new root and intermediate; the old root stays trusted until retired",
				ArgsUsage: " ",
				Description: `Creates a new root (10 years) and a new intermediate under it and makes them
current. The old roots stay in the trust bundle (/kurier/v1/trust), so members
enrolled under them keep working and move to the new hierarchy as they renew.
Once every member has the new root and has renewed (at least one certificate
lifetime), retire the old root with 'ca retire-root'. Restart 'ca serve'
afterwards. Members pin the new root's fingerprint for new enrolments.

Examples:
   kurierctl ca rotate-root --dir /srv/kurier-ca --json`,
				Flags:  []cli.Flag{dirFlag(), passphraseFileFlag(), jsonFlag()},
				Action: e.caRotateRoot,
			},
			{
				Name:      "retire-root",
				Usage:     "stop trusting an old root",
				ArgsUsage: "<fingerprint>",
				Description: `Removes a root (by its SHA-256 fingerprint, as 'ca info' prints it) from the
trust bundle. The current root cannot be retired. Restart 'ca serve'
afterwards.

Examples:
   kurierctl ca retire-root 5d8f...c1 --dir /srv/kurier-ca`,
				Flags:  []cli.Flag{dirFlag()},
				Action: e.caRetireRoot,
			},
			{
				Name:      "serve",
				Usage:     "serve the CA over HTTPS (enrolment, renewal, trust bundle, directory, seal keys)",
				ArgsUsage: " ",
				Description: `Serves smallstep's CA API (/health, /roots, /root/{sha}, /1.0/sign,
/1.0/renew, /1.0/revoke, ...) and Kurier's endpoints (/kurier/v1/trust,
/kurier/v1/directory, /kurier/v1/seal-keys) with TLS 1.3. Logs are JSON on
stderr. SIGINT or SIGTERM stops accepting connections and drains requests for
up to --drain-timeout.

Examples:
   kurierctl ca serve --dir /srv/kurier-ca --listen :8443
   kurierctl ca serve --dir /srv/kurier-ca --listen 10.0.0.5:443 --passphrase-file /run/secrets/ca-pass --drain-timeout 10s`,
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "listen", Value: ":8443", Usage: "TCP `ADDR` to listen on"},
					&cli.DurationFlag{Name: "drain-timeout", Value: 30 * time.Second, Usage: "how long to wait for running requests on shutdown"},
					&cli.StringFlag{Name: "log-level", Value: "info", Usage: "`LEVEL`: debug, info, warn or error"},
					&cli.StringFlag{Name: "admin", Usage: "plain-HTTP `ADDR` for /metrics, /healthz and /readyz, e.g. 127.0.0.1:9103 (default: none)"},
					passphraseFileFlag(),
				},
				Action: e.caServe,
			},
		},
	}
}

func (e *env) caInit(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	if c.String("dir") == "" || c.String("network") == "" {
		return usagef("ca init: --dir and --network are required")
	}
	insecure := c.Bool("insecure-unencrypted-key")
	var pass ca.Passphrase
	if insecure {
		if c.String("passphrase-file") != "" {
			return usagef("ca init: --passphrase-file and --insecure-unencrypted-key exclude each other")
		}
		e.warnf("writing the CA's private keys WITHOUT encryption")
	} else {
		var err error
		if pass, err = e.passphrase(c, true); err != nil {
			return err
		}
		if len(pass) < 12 {
			e.warnf("the passphrase is shorter than 12 characters")
		}
	}
	res, err := ca.Init(ca.InitConfig{
		Dir:                     c.String("dir"),
		Network:                 c.String("network"),
		DNSNames:                c.StringSlice("dns-name"),
		CertLifetime:            c.Duration("cert-lifetime"),
		TokenTTL:                c.Duration("token-ttl"),
		Passphrase:              pass,
		InsecureUnencryptedKeys: insecure,
		Now:                     e.now,
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return e.printJSON(res)
	}
	w := e.stdout
	fmt.Fprintf(w, "Created CA for network %s in %s\n", res.Network, res.Dir)
	fmt.Fprintf(w, "Root fingerprint:   %s\n", res.RootFingerprint)
	fmt.Fprintf(w, "CA names:           %v\n", res.DNSNames)
	fmt.Fprintf(w, "Directory key:      %s (id %s)\n", res.DirectoryKey, res.DirectoryKeyID)
	fmt.Fprintf(w, "Certificates live:  %s; tokens live %s\n", fmtDuration(time.Duration(res.CertLifetime)), fmtDuration(time.Duration(res.TokenTTL)))
	fmt.Fprintf(w, "Root valid until:   %s; intermediate until %s\n", ts(res.RootNotAfter), ts(res.InterNotAfter))
	fmt.Fprintf(e.stderr, "Back up %s now, and keep the passphrase apart from the backup.\n", res.Dir)
	return nil
}

// caInfo is the output of `ca info --json`.
type caInfo struct {
	Dir             string       `json:"dir"`
	Network         string       `json:"network"`
	RootFingerprint string       `json:"root_fingerprint"`
	DNSNames        []string     `json:"dns_names"`
	SignAudience    string       `json:"sign_audience"`
	CertLifetime    ca.Duration  `json:"cert_lifetime"`
	TokenTTL        ca.Duration  `json:"token_ttl"`
	Roots           []certInfo   `json:"roots"`
	Intermediate    certInfo     `json:"intermediate"`
	DirectoryKeys   []string     `json:"directory_keys"`
	Encrypted       bool         `json:"encrypted"`
	Directory       *dirVersionT `json:"directory"`
}

type certInfo struct {
	Subject     string    `json:"subject"`
	Fingerprint string    `json:"fingerprint"`
	NotAfter    time.Time `json:"not_after"`
}

type dirVersionT struct {
	LastVersion uint64 `json:"last_version"`
	Path        string `json:"path"`
}

func (e *env) caInfo(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	fc := a.Config()
	info := caInfo{
		Dir: a.Dir(), Network: a.Network(), RootFingerprint: a.RootFingerprint(), DNSNames: fc.DNSNames,
		SignAudience: a.SignAudience(), CertLifetime: fc.CertLifetime, TokenTTL: fc.TokenTTL,
		Intermediate:  certInfo{a.Intermediate().Subject.CommonName, ca.Fingerprint(a.Intermediate()), a.Intermediate().NotAfter},
		DirectoryKeys: fc.DirectoryKeys, Encrypted: a.Encrypted(),
	}
	for _, r := range a.Roots() {
		info.Roots = append(info.Roots, certInfo{r.Subject.CommonName, ca.Fingerprint(r), r.NotAfter})
	}
	v, err := a.Store().LastDirectoryVersion()
	if err != nil {
		return err
	}
	info.Directory = &dirVersionT{LastVersion: v, Path: a.CurrentDirectoryPath()}
	if c.Bool("json") {
		return e.printJSON(info)
	}
	w := e.stdout
	fmt.Fprintf(w, "Network:          %s\n", info.Network)
	fmt.Fprintf(w, "Root fingerprint: %s\n", info.RootFingerprint)
	fmt.Fprintf(w, "CA names:         %v (token audience %s)\n", info.DNSNames, info.SignAudience)
	for _, r := range info.Roots {
		fmt.Fprintf(w, "Root:             %s, until %s, %s\n", r.Subject, ts(r.NotAfter), r.Fingerprint)
	}
	fmt.Fprintf(w, "Intermediate:     %s, until %s\n", info.Intermediate.Subject, ts(info.Intermediate.NotAfter))
	fmt.Fprintf(w, "Directory keys:   %v\n", info.DirectoryKeys)
	fmt.Fprintf(w, "Certificates:     %s; tokens %s\n", fmtDuration(time.Duration(info.CertLifetime)), fmtDuration(time.Duration(info.TokenTTL)))
	fmt.Fprintf(w, "Keys encrypted:   %v\n", info.Encrypted)
	fmt.Fprintf(w, "Last directory:   version %d (%s)\n", v, info.Directory.Path)
	return nil
}

func (e *env) caServe(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return usagef("ca serve: --log-level: %v", err)
	}
	a, pass, err := e.openCAUnlocked(c)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	reg := admin.NewRegistry()
	srv, err := ca.New(ca.Config{CA: a, Passphrase: pass, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		srv.Close()
		return err
	}
	// Signals are handled only now, after the passphrase prompt, so Ctrl-C
	// still interrupts the prompt.
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if e.onListen != nil {
		e.onListen(ln.Addr())
	}
	g, ctx := errgroup.WithContext(ctx)
	if err := admin.Serve(ctx, g, c.String("admin"), reg, func() error { return nil }, log); err != nil {
		ln.Close()
		srv.Close()
		return err
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, ca.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done() // a signal, or Serve failed
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.Duration("drain-timeout"))
		defer cancel()
		return srv.Shutdown(sctx)
	})
	return g.Wait()
}

// rotationOutput is the JSON output of `ca rotate-intermediate` and
// `ca rotate-root`.
type rotationOutput struct {
	RootFingerprint string    `json:"root_fingerprint"`
	RootNotAfter    time.Time `json:"root_not_after"`
	Intermediate    certInfo  `json:"intermediate"`
	Roots           []string  `json:"trusted_roots"`
}

func (e *env) rotation(a *ca.CA) rotationOutput {
	out := rotationOutput{
		RootFingerprint: a.RootFingerprint(),
		RootNotAfter:    a.Roots()[0].NotAfter,
		Intermediate:    certInfo{a.Intermediate().Subject.CommonName, ca.Fingerprint(a.Intermediate()), a.Intermediate().NotAfter},
		Roots:           []string{},
	}
	for _, r := range a.Roots() {
		out.Roots = append(out.Roots, ca.Fingerprint(r))
	}
	return out
}

func (e *env) caRotateIntermediate(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, pass, err := e.openCAUnlocked(c)
	if err != nil {
		return err
	}
	if _, err := a.RotateIntermediate(pass); err != nil {
		return err
	}
	out := e.rotation(a)
	if c.Bool("json") {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "New intermediate %q (%s), valid until %s\n", out.Intermediate.Subject, out.Intermediate.Fingerprint, ts(out.Intermediate.NotAfter))
	fmt.Fprintln(e.stderr, "Restart 'kurierctl ca serve' to issue with it.")
	return nil
}

func (e *env) caRotateRoot(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, pass, err := e.openCAUnlocked(c)
	if err != nil {
		return err
	}
	if _, _, err := a.RotateRoot(pass); err != nil {
		return err
	}
	out := e.rotation(a)
	if c.Bool("json") {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "New root fingerprint: %s (valid until %s)\n", out.RootFingerprint, ts(out.RootNotAfter))
	fmt.Fprintf(e.stdout, "New intermediate:     %s\n", out.Intermediate.Fingerprint)
	fmt.Fprintf(e.stdout, "Trusted roots:        %s\n", strings.Join(out.Roots, ", "))
	fmt.Fprintln(e.stderr, "Restart 'kurierctl ca serve'. Retire the old root with 'kurierctl ca retire-root' once every member renewed under the new one.")
	return nil
}

func (e *env) caRetireRoot(c *cli.Context) error {
	args, err := nArgs(c, "fingerprint")
	if err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	fp := strings.ToLower(strings.ReplaceAll(args[0], ":", ""))
	if err := a.RetireRoot(fp); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Root %s is no longer trusted\n", fp)
	fmt.Fprintln(e.stderr, "Restart 'kurierctl ca serve'.")
	return nil
}
