package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
)

func trustFlags() []cli.Flag {
	return []cli.Flag{
		// No $KURIER_CA_DIR here: what a document is verified with is
		// always named on the command line.
		&cli.StringFlag{Name: "dir", Usage: "trust the directory keys of the CA in `DIR` (and expect its network)"},
		&cli.StringFlag{Name: "key", Usage: "trust the directory public key in `FILE` (PEM PKIX, e.g. <ca-dir>/directory.pub)"},
	}
}

func (e *env) directoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "directory",
		Usage: "sign, verify, inspect and compare the signed member directory",
		Subcommands: []*cli.Command{
			{
				Name:      "sign",
				Usage:     "sign and publish the next directory version from the member store",
				ArgsUsage: " ",
				Description: `Builds the directory from the member store: active and suspended members
(with their unexpired certificate pins, seal keys, services and relay
endpoints), revoked members and keys, and the permissions of --policy (the
default policy when absent: health offices and providers may call each other,
health offices may call health offices, providers may call "locations" and
health offices "location-search" at members of role service). It signs it as version last+1, valid
for --validity, and writes <ca-dir>/directory/current (served by 'ca serve')
and <ca-dir>/directory/v<version>.

A policy file is strict JSON:
   {"permissions":[{"caller":"role:health-office","callee":"role:provider","services":["*"]}]}
Selectors are "*", "role:<role>" or "member:<name>".

Examples:
   kurierctl directory sign --dir /srv/kurier-ca
   kurierctl directory sign --dir /srv/kurier-ca --policy policy.json --validity 72h --json`,
				Flags: []cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "policy", Usage: "permission policy `FILE` (default: the built-in policy)"},
					&cli.DurationFlag{Name: "validity", Value: ca.DefaultDirectoryValidity, Usage: "how long the document is valid"},
					passphraseFileFlag(),
					jsonFlag(),
				},
				Action: e.directorySign,
			},
			{
				Name:  "key",
				Usage: "rotate the directory signing key",
				Description: `A directory key rotation has three steps, so that no member ever sees a
document signed by a key it does not trust yet:
   1. 'directory key add' creates a new key and adds it to the trust bundle;
      restart 'ca serve' and wait until every member has fetched the bundle;
   2. 'directory key activate' signs with the new key from now on;
   3. 'directory key retire <old key id>' removes the old key from the bundle.`,
				Subcommands: []*cli.Command{
					{
						Name:      "list",
						Usage:     "list the trusted directory keys",
						ArgsUsage: " ",
						Description: `Examples:
   kurierctl directory key list --dir /srv/kurier-ca --json`,
						Flags:  []cli.Flag{dirFlag(), jsonFlag()},
						Action: e.directoryKeyList,
					},
					{
						Name:      "add",
						Usage:     "create a new directory key and trust it (not yet used for signing)",
						ArgsUsage: " ",
						Description: `Examples:
   kurierctl directory key add --dir /srv/kurier-ca`,
						Flags:  []cli.Flag{dirFlag(), passphraseFileFlag(), jsonFlag()},
						Action: e.directoryKeyAdd,
					},
					{
						Name:      "activate",
						Usage:     "sign with the key added by 'directory key add' from now on",
						ArgsUsage: " ",
						Description: `Also rewrites <ca-dir>/directory.pub with the new public key.

Examples:
   kurierctl directory key activate --dir /srv/kurier-ca && kurierctl directory sign --dir /srv/kurier-ca`,
						Flags:  []cli.Flag{dirFlag(), passphraseFileFlag(), jsonFlag()},
						Action: e.directoryKeyActivate,
					},
					{
						Name:      "retire",
						Usage:     "stop trusting an old directory key",
						ArgsUsage: "<key-id>",
						Description: `The signing key and a staged key cannot be retired.

Examples:
   kurierctl directory key retire 1f2e3d4c5b6a7988 --dir /srv/kurier-ca`,
						Flags:  []cli.Flag{dirFlag()},
						Action: e.directoryKeyRetire,
					},
				},
			},
			{
				Name:      "verify",
				Usage:     "verify a signed directory (signature, format, network, version, validity)",
				ArgsUsage: "<file>",
				Description: `Checks the signature over the exact bytes with a trusted key, the canonical
format, the network, that the version is not older than --min-version (a
rollback), and that the document is valid now. Exits 1 with the reason
(format, unknown_key, signature, network, rollback, expired, not_yet_valid)
if not. <file> may be - for stdin.

Examples:
   kurierctl directory verify /srv/kurier-ca/directory/current --dir /srv/kurier-ca
   kurierctl directory verify directory.bin --key directory.pub --network kurier.example --min-version 41 --json`,
				Flags: append(trustFlags(),
					&cli.StringFlag{Name: "network", Usage: "expected network `NAME` (default: the CA's with --dir)"},
					&cli.Uint64Flag{Name: "min-version", Usage: "refuse versions older than `N`"},
					jsonFlag(),
				),
				Action: e.directoryVerify,
			},
			{
				Name:      "show",
				Usage:     "print a signed directory in human form or as JSON",
				ArgsUsage: "<file>",
				Description: `With --dir or --key the signature is verified first (and a bad one is an
error); without, the document is shown unverified and says so.

Examples:
   kurierctl directory show /srv/kurier-ca/directory/current --dir /srv/kurier-ca
   kurierctl directory show directory.bin --json`,
				Flags:  append(trustFlags(), jsonFlag()),
				Action: e.directoryShow,
			},
			{
				Name:      "diff",
				Usage:     "show what changed between two signed directories",
				ArgsUsage: "<old> <new>",
				Description: `Lists members added and removed; per member changes of role, display name,
status, pins, seal keys, services and relay endpoints; permissions and
revocations added and removed. With --dir or --key both documents must verify
first.

Examples:
   kurierctl directory diff /srv/kurier-ca/directory/v41 /srv/kurier-ca/directory/v42 --dir /srv/kurier-ca
   kurierctl directory diff old.bin new.bin --key directory.pub --json`,
				Flags:  append(trustFlags(), jsonFlag()),
				Action: e.directoryDiff,
			},
		},
	}
}

// publishedOutput is the JSON output of `directory sign` (and the
// "directory" field of suspend, resume and revoke).
type publishedOutput struct {
	Network     string    `json:"network"`
	Version     uint64    `json:"version"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	KeyID       string    `json:"key_id"`
	Path        string    `json:"path"`
	VersionPath string    `json:"version_path"`
	Members     int       `json:"members"`
	Suspended   int       `json:"suspended"`
	Revocations int       `json:"revocations"`
	Permissions int       `json:"permissions"`
}

func publishedJSON(p *ca.Published) *publishedOutput {
	d := p.Directory
	out := &publishedOutput{
		Network: d.Network, Version: d.Version, IssuedAt: d.IssuedAt, ExpiresAt: d.ExpiresAt, KeyID: p.KeyID,
		Path: p.Path, VersionPath: p.VersionPath, Members: len(d.Members), Revocations: len(d.Revoked), Permissions: len(d.Permissions),
	}
	for _, m := range d.Members {
		if m.Suspended {
			out.Suspended++
		}
	}
	return out
}

func (e *env) directorySign(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	policy := ca.DefaultPolicy()
	if f := c.String("policy"); f != "" {
		b, err := readLimited(f, 1<<20)
		if err != nil {
			return err
		}
		if policy, err = ca.ParsePolicy(b); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	if cur, err := a.CurrentPolicy(); err == nil && !samePermissions(cur.Permissions, policy.Permissions) {
		if _, statErr := os.Stat(a.CurrentDirectoryPath()); statErr == nil {
			e.warnf("the permissions differ from those of the current directory")
		}
	}
	pass, err := e.caPassphrase(c, a)
	if err != nil {
		return err
	}
	key, err := a.DirectoryKey(pass)
	if err != nil {
		return err
	}
	pub, err := a.PublishDirectory(key, ca.SignOptions{Policy: policy, Validity: c.Duration("validity")})
	if err != nil {
		return err
	}
	out := publishedJSON(pub)
	if c.Bool("json") {
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "Signed directory version %d of %s with key %s\n", out.Version, out.Network, out.KeyID)
	fmt.Fprintf(e.stdout, "Members: %d (%d suspended); revocations: %d; permissions: %d\n", out.Members, out.Suspended, out.Revocations, out.Permissions)
	fmt.Fprintf(e.stdout, "Valid %s to %s\n", ts(out.IssuedAt), ts(out.ExpiresAt))
	fmt.Fprintf(e.stdout, "Written to %s and %s\n", out.Path, out.VersionPath)
	return nil
}

func samePermissions(a, b []pki.Permission) bool {
	key := func(p pki.Permission) string {
		s := slices.Clone(p.Services)
		slices.Sort(s)
		return p.Caller + "\x00" + p.Callee + "\x00" + strings.Join(s, ",")
	}
	ka := make([]string, len(a))
	for i, p := range a {
		ka[i] = key(p)
	}
	kb := make([]string, len(b))
	for i, p := range b {
		kb[i] = key(p)
	}
	slices.Sort(ka)
	slices.Sort(kb)
	return slices.Equal(slices.Compact(ka), slices.Compact(kb))
}

func readLimited(path string, limit int64) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

func (e *env) readDirectoryFile(path string) ([]byte, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(e.stdin, pki.MaxDirectorySize+1))
		if err == nil && len(b) > pki.MaxDirectorySize {
			err = fmt.Errorf("stdin is larger than %d bytes", pki.MaxDirectorySize)
		}
		return b, err
	}
	return readLimited(path, pki.MaxDirectorySize)
}

// trust returns the keys (and the expected network, with --dir) from
// --dir or --key; ok is false if neither was given.
func (e *env) trust(c *cli.Context) (keys []ed25519.PublicKey, network string, ok bool, err error) {
	dir, keyFile := c.String("dir"), c.String("key")
	switch {
	case dir != "" && keyFile != "":
		return nil, "", false, usagef("%s: --dir and --key exclude each other", c.Command.FullName())
	case dir != "":
		a, err := ca.Open(ca.OpenConfig{Dir: dir, Now: e.now})
		if err != nil {
			return nil, "", false, err
		}
		return a.DirectoryKeys(), a.Network(), true, nil
	case keyFile != "":
		k, err := readDirectoryPublicKey(keyFile)
		if err != nil {
			return nil, "", false, err
		}
		return []ed25519.PublicKey{k}, "", true, nil
	}
	return nil, "", false, nil
}

// readDirectoryPublicKey reads an Ed25519 public key: PEM PKIX (as
// directory.pub) or the base64 of the raw 32 bytes (as in the trust bundle).
func readDirectoryPublicKey(path string) (ed25519.PublicKey, error) {
	b, err := readLimited(path, 64<<10)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%s: PEM type %q, want PUBLIC KEY", path, blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		ek, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an Ed25519 public key", path)
		}
		return ek, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: want a PEM public key or a base64 Ed25519 key", path)
	}
	return ed25519.PublicKey(raw), nil
}

// verifyReason names why a directory was refused, for --json output.
func verifyReason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{
		{pki.ErrDirectoryFormat, "format"},
		{pki.ErrDirectoryUnknownKey, "unknown_key"},
		{pki.ErrDirectorySignature, "signature"},
		{pki.ErrDirectoryNetwork, "network"},
		{pki.ErrDirectoryRollback, "rollback"},
		{pki.ErrDirectoryExpired, "expired"},
		{pki.ErrDirectoryNotYetValid, "not_yet_valid"},
	} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "error"
}

// verifyOutput is the JSON output of `directory verify`.
type verifyOutput struct {
	OK        bool      `json:"ok"`
	Reason    string    `json:"reason,omitempty"`
	Error     string    `json:"error,omitempty"`
	Network   string    `json:"network,omitempty"`
	Version   uint64    `json:"version,omitempty"`
	KeyID     string    `json:"key_id,omitempty"`
	IssuedAt  time.Time `json:"issued_at,omitzero"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Members   int       `json:"members,omitempty"`
}

func (e *env) directoryVerify(c *cli.Context) error {
	args, err := nArgs(c, "file")
	if err != nil {
		return err
	}
	keys, network, ok, err := e.trust(c)
	if err != nil {
		return err
	}
	if !ok {
		return usagef("directory verify: --dir or --key is required")
	}
	if n := c.String("network"); n != "" {
		network = n
	}
	b, err := e.readDirectoryFile(args[0])
	if err != nil {
		return err
	}
	now := e.now()
	d, kid, err := ca.VerifyDirectory(b, ca.VerifyOptions{Keys: keys, Network: network, MinVersion: c.Uint64("min-version"), Now: now})
	if err != nil {
		if c.Bool("json") {
			if jerr := e.printJSON(verifyOutput{OK: false, Reason: verifyReason(err), Error: err.Error()}); jerr != nil {
				return jerr
			}
		}
		return fmt.Errorf("directory verify %s: %s: %w", args[0], verifyReason(err), err)
	}
	if c.Bool("json") {
		return e.printJSON(verifyOutput{OK: true, Network: d.Network, Version: d.Version, KeyID: kid, IssuedAt: d.IssuedAt, ExpiresAt: d.ExpiresAt, Members: len(d.Members)})
	}
	fmt.Fprintf(e.stdout, "OK: directory version %d of %s, signed by key %s, issued %s (%s), expires %s (%s)\n",
		d.Version, d.Network, kid, ts(d.IssuedAt), age(d.IssuedAt, now), ts(d.ExpiresAt), age(d.ExpiresAt, now))
	return nil
}

// showOutput is the JSON output of `directory show`.
type showOutput struct {
	// Verified is true if the signature was checked with a trusted key.
	Verified bool   `json:"verified"`
	KeyID    string `json:"key_id"`
	// Validity is "valid", "expired" or "not_yet_valid" at the time of
	// the call.
	Validity  string         `json:"validity"`
	Directory *pki.Directory `json:"directory"`
}

// loadDirectory reads a signed directory, verifying its signature and
// format if keys were given (validity times are not checked).
func (e *env) loadDirectory(path string, keys []ed25519.PublicKey, verify bool) (*pki.Directory, string, error) {
	b, err := e.readDirectoryFile(path)
	if err != nil {
		return nil, "", err
	}
	var d *pki.Directory
	var kid string
	if verify {
		m := map[string]ed25519.PublicKey{}
		for _, k := range keys {
			m[pki.DirectoryKeyID(k)] = k
		}
		d, kid, err = pki.ParseSignedDirectory(b, m)
	} else {
		d, kid, err = ca.ParseDirectoryUnverified(b)
	}
	if err != nil {
		return nil, "", fmt.Errorf("%s: %s: %w", path, verifyReason(err), err)
	}
	return d, kid, nil
}

func validity(d *pki.Directory, now time.Time) string {
	switch {
	case !now.Before(d.ExpiresAt):
		return "expired"
	case d.IssuedAt.After(now.Add(5 * time.Minute)):
		return "not_yet_valid"
	}
	return "valid"
}

func (e *env) directoryShow(c *cli.Context) error {
	args, err := nArgs(c, "file")
	if err != nil {
		return err
	}
	keys, network, verify, err := e.trust(c)
	if err != nil {
		return err
	}
	d, kid, err := e.loadDirectory(args[0], keys, verify)
	if err != nil {
		return err
	}
	if network != "" && d.Network != network {
		return fmt.Errorf("%s: network: %w: %q, want %q", args[0], pki.ErrDirectoryNetwork, d.Network, network)
	}
	now := e.now()
	out := showOutput{Verified: verify, KeyID: kid, Validity: validity(d, now), Directory: d}
	if c.Bool("json") {
		return e.printJSON(out)
	}
	if !verify {
		fmt.Fprintln(e.stderr, "warning: signature NOT verified (pass --dir or --key to verify)")
	}
	writeDirectory(e.stdout, &out, now)
	return nil
}

func writeDirectory(w io.Writer, s *showOutput, now time.Time) {
	d := s.Directory
	sig := "verified"
	if !s.Verified {
		sig = "NOT verified"
	}
	fmt.Fprintf(w, "Directory version %d of network %s\n", d.Version, d.Network)
	fmt.Fprintf(w, "Signed by key %s (%s)\n", s.KeyID, sig)
	fmt.Fprintf(w, "Issued:   %s (%s)\n", ts(d.IssuedAt), age(d.IssuedAt, now))
	exp := age(d.ExpiresAt, now)
	if s.Validity == "expired" {
		exp = "EXPIRED " + exp
	}
	fmt.Fprintf(w, "Expires:  %s (%s)\n", ts(d.ExpiresAt), exp)
	fmt.Fprintf(w, "\nMembers (%d):\n", len(d.Members))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, m := range d.Members {
		status := "active"
		if m.Suspended {
			status = "SUSPENDED"
		}
		keys := make([]string, len(m.SealKeys))
		for i, k := range m.SealKeys {
			keys[i] = fmt.Sprintf("%s(0x%04x)", k.ID, k.KEM)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\tpins %d\tseal keys %s\tservices %s\t%q\n", m.Name, m.Role, status, len(m.Pins),
			orDash(strings.Join(keys, ",")), orDash(strings.Join(m.Services, ",")), m.DisplayName)
	}
	tw.Flush()
	for _, m := range d.Members {
		for _, p := range m.Pins {
			fmt.Fprintf(w, "  pin %s %s\n", m.Name, p)
		}
		if r := m.Relay; r != nil {
			fmt.Fprintf(w, "  relay %s: public %s, pairing %s, control %s, control-tcp %s, gossip %s\n", m.Name, r.Public, r.Pairing, r.Control, r.ControlTCP, orDash(r.Gossip))
		}
	}
	fmt.Fprintf(w, "\nPermissions (%d):\n", len(d.Permissions))
	for _, p := range d.Permissions {
		fmt.Fprintf(w, "  %s -> %s: %s\n", p.Caller, p.Callee, strings.Join(p.Services, ", "))
	}
	fmt.Fprintf(w, "\nRevoked (%d):\n", len(d.Revoked))
	for _, r := range d.Revoked {
		what := "whole member"
		if len(r.Pins) > 0 {
			what = fmt.Sprintf("%d key(s): %s", len(r.Pins), strings.Join(r.Pins, ", "))
		}
		fmt.Fprintf(w, "  %s: %s, at %s (%s)\n", r.Member, what, ts(r.RevokedAt), orDash(r.Reason))
	}
}

func (e *env) directoryDiff(c *cli.Context) error {
	args, err := nArgs(c, "old", "new")
	if err != nil {
		return err
	}
	keys, network, verify, err := e.trust(c)
	if err != nil {
		return err
	}
	if !verify {
		fmt.Fprintln(e.stderr, "warning: signatures NOT verified (pass --dir or --key to verify)")
	}
	var ds [2]*pki.Directory
	for i, p := range args {
		if ds[i], _, err = e.loadDirectory(p, keys, verify); err != nil {
			return err
		}
		if network != "" && ds[i].Network != network {
			return fmt.Errorf("%s: network: %w: %q, want %q", p, pki.ErrDirectoryNetwork, ds[i].Network, network)
		}
	}
	df := ca.Diff(ds[0], ds[1])
	if df.NewVersion <= df.OldVersion {
		e.warnf("the new document's version %d is not newer than %d", df.NewVersion, df.OldVersion)
	}
	if c.Bool("json") {
		return e.printJSON(df)
	}
	writeDiff(e.stdout, df)
	return nil
}

func writeDiff(w io.Writer, df *ca.DirectoryDiff) {
	fmt.Fprintf(w, "Directory %s: version %d -> %d, expires %s -> %s\n", df.Network, df.OldVersion, df.NewVersion, ts(df.OldExpiresAt), ts(df.NewExpiresAt))
	if df.NetworkChanged != nil {
		fmt.Fprintf(w, "! network %s -> %s\n", df.NetworkChanged.Old, df.NetworkChanged.New)
	}
	if df.Empty() {
		fmt.Fprintln(w, "No changes besides version and validity.")
		return
	}
	for _, n := range df.MembersAdded {
		fmt.Fprintf(w, "+ member %s\n", n)
	}
	for _, n := range df.MembersRemoved {
		fmt.Fprintf(w, "- member %s\n", n)
	}
	for _, m := range df.MembersChanged {
		var parts []string
		chg := func(name string, c *ca.Change) {
			if c != nil {
				parts = append(parts, fmt.Sprintf("%s %q -> %q", name, c.Old, c.New))
			}
		}
		set := func(name string, added, removed []string) {
			for _, a := range added {
				parts = append(parts, fmt.Sprintf("+%s %s", name, a))
			}
			for _, r := range removed {
				parts = append(parts, fmt.Sprintf("-%s %s", name, r))
			}
		}
		chg("role", m.Role)
		chg("display name", m.DisplayName)
		chg("status", m.Status)
		chg("relay", m.Relay)
		set("pin", m.PinsAdded, m.PinsRemoved)
		set("seal key", m.SealKeysAdded, m.SealKeysRemoved)
		for _, k := range m.SealKeysChanged {
			parts = append(parts, "~seal key "+k)
		}
		set("service", m.ServicesAdded, m.ServicesRemoved)
		fmt.Fprintf(w, "~ member %s: %s\n", m.Name, strings.Join(parts, "; "))
	}
	for _, p := range df.PermissionsAdded {
		fmt.Fprintf(w, "+ permission %s -> %s: %s\n", p.Caller, p.Callee, strings.Join(p.Services, ", "))
	}
	for _, p := range df.PermissionsRemoved {
		fmt.Fprintf(w, "- permission %s -> %s: %s\n", p.Caller, p.Callee, strings.Join(p.Services, ", "))
	}
	rev := func(sign string, r pki.Revocation) {
		what := "whole member"
		if len(r.Pins) > 0 {
			what = "keys " + strings.Join(r.Pins, ", ")
		}
		fmt.Fprintf(w, "%s revocation %s: %s at %s (%s)\n", sign, r.Member, what, ts(r.RevokedAt), orDash(r.Reason))
	}
	for _, r := range df.RevocationsAdded {
		rev("+", r)
	}
	for _, r := range df.RevocationsRemoved {
		rev("-", r)
	}
}

// keyListOutput is the JSON output of the `directory key` commands.
type keyListOutput struct {
	Keys []keyOutput `json:"keys"`
}

type keyOutput struct {
	ID        string `json:"id"`
	PublicKey string `json:"public_key"`
	// State is "signing", "staged" or "trusted".
	State string `json:"state"`
}

func (e *env) printKeys(c *cli.Context, a *ca.CA) error {
	fc := a.Config()
	var out keyListOutput
	for _, k := range a.DirectoryKeys() {
		id := pki.DirectoryKeyID(k)
		st := "trusted"
		switch id {
		case fc.DirectoryKeyID:
			st = "signing"
		case fc.StagedDirectoryKeyID:
			st = "staged"
		}
		out.Keys = append(out.Keys, keyOutput{ID: id, PublicKey: base64.StdEncoding.EncodeToString(k), State: st})
	}
	if c.Bool("json") {
		return e.printJSON(out)
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY ID\tSTATE\tPUBLIC KEY")
	for _, k := range out.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.State, k.PublicKey)
	}
	return tw.Flush()
}

func (e *env) directoryKeyList(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	return e.printKeys(c, a)
}

func (e *env) directoryKeyAdd(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, pass, err := e.openCAUnlocked(c)
	if err != nil {
		return err
	}
	kid, err := a.AddDirectoryKey(pass)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "Added directory key %s. Restart 'kurierctl ca serve', wait until every member has fetched the trust bundle, then run 'kurierctl directory key activate'.\n", kid)
	return e.printKeys(c, a)
}

func (e *env) directoryKeyActivate(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, pass, err := e.openCAUnlocked(c)
	if err != nil {
		return err
	}
	kid, err := a.ActivateDirectoryKey(pass)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "Directories are now signed with key %s. Run 'kurierctl directory sign'; retire the old key once no member needs it.\n", kid)
	return e.printKeys(c, a)
}

func (e *env) directoryKeyRetire(c *cli.Context) error {
	args, err := nArgs(c, "key-id")
	if err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	if err := a.RetireDirectoryKey(args[0]); err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "Directory key %s is no longer trusted. Restart 'kurierctl ca serve'.\n", args[0])
	return e.printKeys(c, a)
}
