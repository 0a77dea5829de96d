package main

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/ca"
)

func relayFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "relay-public", Usage: "relay: public TCP `HOST:PORT` clients connect to"},
		&cli.StringFlag{Name: "relay-pairing", Usage: "relay: TCP `HOST:PORT` private proxies dial back to"},
		&cli.StringFlag{Name: "relay-control", Usage: "relay: UDP `HOST:PORT` of the QUIC control endpoint"},
		&cli.StringFlag{Name: "relay-control-tcp", Usage: "relay: TCP `HOST:PORT` of the control fallback"},
		&cli.StringFlag{Name: "relay-gossip", Usage: "relay: `HOST:PORT` of the relay cluster (optional)"},
	}
}

var relayFlagNames = []string{"relay-public", "relay-pairing", "relay-control", "relay-control-tcp", "relay-gossip"}

func anyRelayFlag(c *cli.Context) bool {
	for _, n := range relayFlagNames {
		if c.IsSet(n) {
			return true
		}
	}
	return false
}

// relayEndpoints applies the relay flags that are set to r (a copy).
func relayEndpoints(c *cli.Context, r pki.RelayEndpoints) *pki.RelayEndpoints {
	for _, f := range []struct {
		name string
		dst  *string
	}{
		{"relay-public", &r.Public}, {"relay-pairing", &r.Pairing}, {"relay-control", &r.Control},
		{"relay-control-tcp", &r.ControlTCP}, {"relay-gossip", &r.Gossip},
	} {
		if c.IsSet(f.name) {
			*f.dst = c.String(f.name)
		}
	}
	return &r
}

func tokenTTLFlag() cli.Flag {
	return &cli.DurationFlag{Name: "token-ttl", Usage: "lifetime of the enrolment token (default: the CA's token TTL, 2h unless set at init)"}
}

func publishFlags() []cli.Flag {
	return []cli.Flag{
		&cli.BoolFlag{Name: "no-publish", Usage: "do not re-sign and publish the directory now (the change then takes effect only with the next 'directory sign')"},
		&cli.DurationFlag{Name: "validity", Value: ca.DefaultDirectoryValidity, Usage: "validity of the re-signed directory"},
		passphraseFileFlag(),
	}
}

func (e *env) memberCommand() *cli.Command {
	return &cli.Command{
		Name:  "member",
		Usage: "enrol and manage members",
		Subcommands: []*cli.Command{
			{
				Name:      "add",
				Usage:     "record a new member and print its one-time enrolment token",
				ArgsUsage: "<name>",
				Description: `Records a member (a duplicate name is an error that changes nothing) and
prints a one-time enrolment token: a JWT signed by the CA's enrolment key for
exactly the identity spiffe://<network>/<role>/<name> and <name>.<network>.
Hand the token and the CA fingerprint to the member; the token works once and
expires after --token-ttl. Relays need their four endpoints (gossip optional).
A revoked member's name can be reused only with --reuse-revoked-name; the old
member's keys stay revoked.

Examples:
   kurierctl member add hd-berlin --dir /srv/kurier-ca --role health-office --display-name "Gesundheitsamt Berlin" --service contact-lists
   kurierctl member add app-checkin --dir /srv/kurier-ca --role provider --display-name "CheckIn GmbH" --json
   kurierctl member add relay-1 --dir /srv/kurier-ca --role relay --display-name "Relay 1" \
       --relay-public relay1.kurier.example:443 --relay-pairing relay1.kurier.example:4443 \
       --relay-control relay1.kurier.example:4443 --relay-control-tcp relay1.kurier.example:4444`,
				Flags: append([]cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "role", Usage: "`ROLE`: health-office, provider, service (a network service such as the location index) or relay"},
					&cli.StringFlag{Name: "display-name", Usage: "human-readable `NAME` shown in the directory"},
					&cli.StringSliceFlag{Name: "service", Usage: "`SERVICE` the member offers (repeatable)"},
					tokenTTLFlag(),
					&cli.BoolFlag{Name: "reuse-revoked-name", Usage: "allow the name of a revoked member (its keys stay revoked)"},
					passphraseFileFlag(),
					jsonFlag(),
				}, relayFlags()...),
				Action: e.memberAdd,
			},
			{
				Name:      "token",
				Usage:     "print a fresh one-time enrolment token for an active member",
				ArgsUsage: "<name>",
				Description: `For re-enrolment after a lost key, a new machine, or an expired certificate.
Tokens issued earlier stay valid until they are used or expire.

Examples:
   kurierctl member token hd-berlin --dir /srv/kurier-ca
   kurierctl member token hd-berlin --dir /srv/kurier-ca --token-ttl 30m --json`,
				Flags:  []cli.Flag{dirFlag(), tokenTTLFlag(), passphraseFileFlag(), jsonFlag()},
				Action: e.memberToken,
			},
			{
				Name:      "list",
				Usage:     "list members",
				ArgsUsage: " ",
				Description: `Examples:
   kurierctl member list --dir /srv/kurier-ca
   kurierctl member list --dir /srv/kurier-ca --json | jq '.members[] | select(.status != "active")'`,
				Flags:  []cli.Flag{dirFlag(), jsonFlag()},
				Action: e.memberList,
			},
			{
				Name:      "show",
				Usage:     "show one member: status, pins, seal keys, services",
				ArgsUsage: "<name>",
				Description: `Examples:
   kurierctl member show hd-berlin --dir /srv/kurier-ca
   kurierctl member show hd-berlin --dir /srv/kurier-ca --json`,
				Flags:  []cli.Flag{dirFlag(), jsonFlag()},
				Action: e.memberShow,
			},
			{
				Name:      "suspend",
				Usage:     "suspend a member and publish the directory at once",
				ArgsUsage: "<name>",
				Description: `A suspended member stays in the directory marked suspended, so every peer
refuses it, and the CA signs and renews nothing for it until it is resumed.
The directory is re-signed (keeping the current permissions) and published
immediately; peers see it within their directory poll interval.

Examples:
   kurierctl member suspend app-checkin --dir /srv/kurier-ca --reason "contract paused"
   kurierctl member suspend app-checkin --dir /srv/kurier-ca --no-publish`,
				Flags:  append([]cli.Flag{dirFlag(), &cli.StringFlag{Name: "reason", Usage: "why (one line, at most 200 bytes)"}, jsonFlag()}, publishFlags()...),
				Action: e.memberStatus(ca.StatusSuspended),
			},
			{
				Name:      "resume",
				Usage:     "resume a suspended member and publish the directory at once",
				ArgsUsage: "<name>",
				Description: `Examples:
   kurierctl member resume app-checkin --dir /srv/kurier-ca`,
				Flags:  append([]cli.Flag{dirFlag(), jsonFlag()}, publishFlags()...),
				Action: e.memberStatus(ca.StatusActive),
			},
			{
				Name:      "revoke",
				Usage:     "revoke a member for good and publish the directory at once",
				ArgsUsage: "<name>",
				Description: `Revocation is final. The member leaves the directory and is listed in its
revocation list; the CA refuses to sign or renew for it. The directory is
re-signed (keeping the current permissions) and published immediately.

Examples:
   kurierctl member revoke app-checkin --dir /srv/kurier-ca --reason "key compromise"`,
				Flags:  append([]cli.Flag{dirFlag(), &cli.StringFlag{Name: "reason", Usage: "why (one line, at most 200 bytes)"}, jsonFlag()}, publishFlags()...),
				Action: e.memberStatus(ca.StatusRevoked),
			},
			{
				Name:      "revoke-key",
				Usage:     "revoke one key of a member (a lost or compromised machine) and publish the directory at once",
				ArgsUsage: "<name> <pin>",
				Description: `The member stays; only the key with this SPKI pin (see 'member show') is
revoked: it leaves the member's pins, the directory lists it as revoked, and
the CA neither renews nor re-certifies it. Give the member a new token
('member token') for the replacement machine.

Examples:
   kurierctl member revoke-key hd-berlin 'q3X...=' --dir /srv/kurier-ca --reason "laptop stolen"`,
				Flags:  append([]cli.Flag{dirFlag(), &cli.StringFlag{Name: "reason", Usage: "why (one line, at most 200 bytes)"}, jsonFlag()}, publishFlags()...),
				Action: e.memberRevokeKey,
			},
			{
				Name:      "update",
				Usage:     "change a member's display name, services or relay endpoints",
				ArgsUsage: "<name>",
				Description: `Only the given fields change; --service replaces the whole list. The change
reaches peers with the next 'directory sign'.

Examples:
   kurierctl member update hd-berlin --dir /srv/kurier-ca --display-name "GA Berlin-Mitte"
   kurierctl member update hd-berlin --dir /srv/kurier-ca --service contact-lists --service guest-lists
   kurierctl member update relay-1 --dir /srv/kurier-ca --relay-public relay1.kurier.example:8443`,
				Flags: append([]cli.Flag{
					dirFlag(),
					&cli.StringFlag{Name: "display-name", Usage: "new display `NAME`"},
					&cli.StringSliceFlag{Name: "service", Usage: "`SERVICE` offered (repeatable; replaces the list)"},
					&cli.BoolFlag{Name: "clear-services", Usage: "remove every service"},
					jsonFlag(),
				}, relayFlags()...),
				Action: e.memberUpdate,
			},
		},
	}
}

// tokenOutput is the JSON output of `member add` and `member token`.
type tokenOutput struct {
	Member        *ca.Member `json:"member"`
	Token         string     `json:"token"`
	ExpiresAt     time.Time  `json:"expires_at"`
	CAFingerprint string     `json:"ca_fingerprint"`
}

func (e *env) memberAdd(c *cli.Context) error {
	args, err := nArgs(c, "name")
	if err != nil {
		return err
	}
	role, err := pki.ParseRole(c.String("role"))
	if err != nil {
		return usagef("member add: --role: %v", err)
	}
	if c.String("display-name") == "" {
		return usagef("member add: --display-name is required")
	}
	nm := ca.NewMember{
		Name:             args[0],
		Role:             role,
		DisplayName:      c.String("display-name"),
		Services:         c.StringSlice("service"),
		ReuseRevokedName: c.Bool("reuse-revoked-name"),
	}
	switch {
	case role == pki.RoleRelay:
		for _, n := range relayFlagNames[:4] {
			if c.String(n) == "" {
				return usagef("member add: a relay needs --relay-public, --relay-pairing, --relay-control and --relay-control-tcp")
			}
		}
		nm.Relay = relayEndpoints(c, pki.RelayEndpoints{})
	case anyRelayFlag(c):
		return usagef("member add: --relay-* flags are only for role relay")
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	// Check everything that can be checked before asking for the
	// passphrase, and decrypt before changing anything.
	if err := a.Store().Check(nm); err != nil {
		return err
	}
	pass, err := e.caPassphrase(c, a)
	if err != nil {
		return err
	}
	signer, err := a.TokenSigner(pass)
	if err != nil {
		return err
	}
	m, err := a.Store().Add(nm)
	if err != nil {
		return err
	}
	ti, err := signer.Token(m, c.Duration("token-ttl"))
	if err != nil {
		return fmt.Errorf("member %s added, but no token was issued (use 'member token'): %w", m.Name, err)
	}
	return e.printToken(c, a, m, ti, "Added")
}

func (e *env) memberToken(c *cli.Context) error {
	args, err := nArgs(c, "name")
	if err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	m, err := a.Store().Get(args[0])
	if err != nil {
		return err
	}
	if m.Status != ca.StatusActive {
		return fmt.Errorf("member %s is %s: no token", m.Name, m.Status)
	}
	pass, err := e.caPassphrase(c, a)
	if err != nil {
		return err
	}
	signer, err := a.TokenSigner(pass)
	if err != nil {
		return err
	}
	ti, err := signer.Token(m, c.Duration("token-ttl"))
	if err != nil {
		return err
	}
	return e.printToken(c, a, m, ti, "Token for")
}

func (e *env) printToken(c *cli.Context, a *ca.CA, m *ca.Member, ti *ca.TokenInfo, verb string) error {
	if c.Bool("json") {
		return e.printJSON(tokenOutput{Member: m, Token: string(ti.Token), ExpiresAt: ti.ExpiresAt, CAFingerprint: a.RootFingerprint()})
	}
	w := e.stdout
	fmt.Fprintf(w, "%s member %s (%s) as %s\n", verb, m.Name, m.Role, ti.ID)
	fmt.Fprintf(w, "Enrolment token (single use, expires %s):\n%s\n", ts(ti.ExpiresAt), string(ti.Token))
	fmt.Fprintf(w, "CA fingerprint: %s\n", a.RootFingerprint())
	return nil
}

// memberListOutput is the JSON output of `member list`.
type memberListOutput struct {
	Network string      `json:"network"`
	Members []ca.Member `json:"members"`
}

func (e *env) memberList(c *cli.Context) error {
	if _, err := nArgs(c); err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	ms, err := a.Store().List()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return e.printJSON(memberListOutput{Network: a.Network(), Members: ms})
	}
	now := e.now()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tSTATUS\tPINS\tSEAL KEYS\tSERVICES\tDISPLAY NAME")
	for _, m := range ms {
		live := 0
		for _, p := range m.Pins {
			if now.Before(p.NotAfter) {
				live++
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\n", m.Name, m.Role, m.Status, live, len(m.SealKeys), orDash(strings.Join(m.Services, ",")), m.DisplayName)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (e *env) memberShow(c *cli.Context) error {
	args, err := nArgs(c, "name")
	if err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	m, err := a.Store().Get(args[0])
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return e.printJSON(m)
	}
	writeMember(e.stdout, a.Network(), m, e.now())
	return nil
}

func writeMember(w io.Writer, network string, m *ca.Member, now time.Time) {
	fmt.Fprintf(w, "Name:          %s\n", m.Name)
	fmt.Fprintf(w, "Identity:      %s\n", m.ID(network))
	fmt.Fprintf(w, "Role:          %s\n", m.Role)
	fmt.Fprintf(w, "Display name:  %s\n", m.DisplayName)
	status := string(m.Status)
	if !m.StatusChangedAt.IsZero() {
		status += " since " + ts(m.StatusChangedAt)
	}
	if m.StatusReason != "" {
		status += " (" + m.StatusReason + ")"
	}
	fmt.Fprintf(w, "Status:        %s\n", status)
	fmt.Fprintf(w, "Services:      %s\n", orDash(strings.Join(m.Services, ", ")))
	if r := m.Relay; r != nil {
		fmt.Fprintf(w, "Relay:         public %s, pairing %s, control %s, control-tcp %s, gossip %s\n", r.Public, r.Pairing, r.Control, r.ControlTCP, orDash(r.Gossip))
	}
	fmt.Fprintf(w, "Created:       %s\n", ts(m.CreatedAt))
	if len(m.Pins) == 0 {
		fmt.Fprintf(w, "Pins:          - (not enrolled)\n")
	}
	for i, p := range m.Pins {
		label := "Pins:"
		if i > 0 {
			label = ""
		}
		state := "valid until " + ts(p.NotAfter)
		if !now.Before(p.NotAfter) {
			state = "expired " + ts(p.NotAfter)
		}
		fmt.Fprintf(w, "%-14s %s %s\n", label, p.Pin, state)
	}
	if len(m.SealKeys) == 0 {
		fmt.Fprintf(w, "Seal keys:     -\n")
	}
	for i, k := range m.SealKeys {
		label := "Seal keys:"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-14s %s (KEM 0x%04x, %d bytes)\n", label, k.ID, k.KEM, len(k.Public))
	}
	if !m.SealKeysUpdatedAt.IsZero() {
		fmt.Fprintf(w, "Keys updated:  %s\n", ts(m.SealKeysUpdatedAt))
	}
	for _, r := range m.RevokedKeys {
		fmt.Fprintf(w, "Revoked keys:  %s at %s (%s)\n", strings.Join(r.Pins, ", "), ts(r.RevokedAt), orDash(r.Reason))
	}
}

// statusOutput is the JSON output of suspend, resume and revoke.
type statusOutput struct {
	Member    *ca.Member       `json:"member"`
	Directory *publishedOutput `json:"directory"`
}

func (e *env) memberStatus(st ca.Status) cli.ActionFunc {
	return func(c *cli.Context) error {
		args, err := nArgs(c, "name")
		if err != nil {
			return err
		}
		a, err := e.openCA(c)
		if err != nil {
			return err
		}
		m, err := a.Store().Get(args[0])
		if err != nil {
			return err
		}
		switch {
		case m.Status == ca.StatusRevoked:
			return fmt.Errorf("member %s is revoked; revocation is final", m.Name)
		case m.Status == st:
			return fmt.Errorf("member %s is already %s", m.Name, st)
		}
		return e.changeAndPublish(c, a, fmt.Sprintf("member %s is now %s", m.Name, st), func() (*ca.Member, error) {
			return a.Store().SetStatus(m.Name, st, c.String("reason"))
		})
	}
}

func (e *env) memberRevokeKey(c *cli.Context) error {
	args, err := nArgs(c, "name", "pin")
	if err != nil {
		return err
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	m, err := a.Store().Get(args[0])
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(m.Pins, func(p ca.PinRecord) bool { return p.Pin == args[1] }) {
		return fmt.Errorf("member %s has no key with pin %s (see 'member show')", m.Name, args[1])
	}
	return e.changeAndPublish(c, a, fmt.Sprintf("key %s of member %s is revoked", args[1], m.Name), func() (*ca.Member, error) {
		return a.Store().RevokeKey(m.Name, args[1], c.String("reason"))
	})
}

// changeAndPublish applies change to the member store and, unless
// --no-publish, re-signs and publishes the directory with the current
// permissions. The directory key is decrypted before anything changes, so a
// wrong passphrase changes nothing.
func (e *env) changeAndPublish(c *cli.Context, a *ca.CA, what string, change func() (*ca.Member, error)) error {
	publish := !c.Bool("no-publish")
	var (
		policy *ca.Policy
		key    ed25519.PrivateKey
		pub    *ca.Published
	)
	if publish {
		pass, err := e.caPassphrase(c, a)
		if err != nil {
			return err
		}
		if key, err = a.DirectoryKey(pass); err != nil {
			return err
		}
		if policy, err = a.CurrentPolicy(); err != nil {
			return err
		}
	}
	m, err := change()
	if err != nil {
		return err
	}
	if publish {
		pub, err = a.PublishDirectory(key, ca.SignOptions{Policy: policy, Validity: c.Duration("validity")})
		if err != nil {
			return fmt.Errorf("%s, but the directory was not published: %w; run 'kurierctl directory sign'", what, err)
		}
	} else {
		e.warnf("directory not published: %s for peers only with the next 'kurierctl directory sign'", what)
	}
	if c.Bool("json") {
		out := statusOutput{Member: m}
		if pub != nil {
			out.Directory = publishedJSON(pub)
		}
		return e.printJSON(out)
	}
	fmt.Fprintf(e.stdout, "%s%s\n", strings.ToUpper(what[:1]), what[1:])
	if pub != nil {
		fmt.Fprintf(e.stdout, "Published directory version %d (%s), valid until %s\n", pub.Directory.Version, pub.Path, ts(pub.Directory.ExpiresAt))
	}
	return nil
}

func (e *env) memberUpdate(c *cli.Context) error {
	args, err := nArgs(c, "name")
	if err != nil {
		return err
	}
	if c.IsSet("service") && c.Bool("clear-services") {
		return usagef("member update: --service and --clear-services exclude each other")
	}
	a, err := e.openCA(c)
	if err != nil {
		return err
	}
	m, err := a.Store().Get(args[0])
	if err != nil {
		return err
	}
	var u ca.MemberUpdate
	if c.IsSet("display-name") {
		v := c.String("display-name")
		u.DisplayName = &v
	}
	switch {
	case c.IsSet("service"):
		v := c.StringSlice("service")
		u.Services = &v
	case c.Bool("clear-services"):
		v := []string{}
		u.Services = &v
	}
	if anyRelayFlag(c) {
		if m.Relay == nil {
			return usagef("member update: %s is not a relay", m.Name)
		}
		u.Relay = relayEndpoints(c, *m.Relay)
	}
	if u == (ca.MemberUpdate{}) {
		return usagef("member update: nothing to change")
	}
	m, err = a.Store().Update(m.Name, u)
	if err != nil {
		if errors.Is(err, ca.ErrFinal) {
			return fmt.Errorf("member %s is revoked and cannot change", args[0])
		}
		return err
	}
	if c.Bool("json") {
		return e.printJSON(m)
	}
	writeMember(e.stdout, a.Network(), m, e.now())
	fmt.Fprintln(e.stderr, "Peers see the change with the next 'kurierctl directory sign'.")
	return nil
}
