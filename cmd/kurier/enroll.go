package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki"
)

func enrollCommand() *cli.Command {
	return &cli.Command{
		Name:  "enroll",
		Usage: "join the network with a one-time token",
		Description: `Creates this member's private keys on this machine (they never leave it),
authenticates the CA by its root fingerprint, obtains a certificate with
the one-time token from "kurierctl member add", publishes the member's
HPKE sealing key and writes the state directory every other command
reads.

   kurier enroll --ca https://ca.example:9000 \
       --fingerprint 3f1c…e9 --token "$(cat token)" --dir /var/lib/kurier

The token may also come from --token-file or KURIER_TOKEN, which keeps it
out of the process list and shell history.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "ca", Usage: "CA URL, https://host:port (required)"},
			&cli.StringFlag{Name: "fingerprint", Usage: "SHA-256 fingerprint of the network root, hex, from kurierctl ca init (required)"},
			&cli.StringFlag{Name: "token", Usage: "one-time enrolment token"},
			&cli.StringFlag{Name: "token-file", Usage: "read the token from this file"},
			&cli.StringFlag{Name: "dir", Usage: "state directory to create (required)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing enrolment in --dir"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		},
		Action: func(c *cli.Context) error {
			if err := requireFlags(c, "ca", "fingerprint", "dir"); err != nil {
				return err
			}
			tok := c.String("token")
			if f := c.String("token-file"); f != "" {
				if tok != "" {
					return usagef("give the token with --token or --token-file, not both")
				}
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("read token: %w", err)
				}
				tok = strings.TrimSpace(string(b))
			}
			if tok == "" {
				return usagef("a token is required (--token, --token-file or KURIER_TOKEN)")
			}
			st, err := pki.Enroll(c.Context, pki.EnrollConfig{
				CAURL:       c.String("ca"),
				Fingerprint: c.String("fingerprint"),
				Token:       pki.Token(tok),
				Dir:         c.String("dir"),
				Force:       c.Bool("force"),
			})
			if err != nil {
				return err
			}
			return printEnrolment(c, st)
		},
	}
}

func printEnrolment(c *cli.Context, st *pki.State) error {
	leaf := st.Cert.Leaf
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{
			"id":             st.ID.String(),
			"dns_name":       st.ID.DNSName(),
			"state_dir":      st.Dir,
			"pin":            pki.Pin(leaf),
			"not_after":      leaf.NotAfter.UTC().Format(time.RFC3339),
			"seal_key":       st.Seal.ID,
			"network":        st.ID.Network,
			"ca_url":         st.CAURL,
			"ca_fingerprint": st.Fingerprint,
		})
	}
	w := c.App.Writer
	fmt.Fprintf(w, "enrolled %s\n", st.ID)
	fmt.Fprintf(w, "  name         %s\n", st.ID.DNSName())
	fmt.Fprintf(w, "  key pin      %s (SPKI SHA-256)\n", pki.Pin(leaf))
	fmt.Fprintf(w, "  certificate  valid until %s, renewed automatically\n", leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "  seal key     %s published to the CA\n", st.Seal.ID)
	fmt.Fprintf(w, "  state        %s\n", st.Dir)
	fmt.Fprintf(w, "The operator's next `kurierctl directory sign` lists this key.\n")
	return nil
}

func statusCommand() *cli.Command {
	return &cli.Command{
		Name:  "status",
		Usage: "show this member's identity, certificate and directory",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state", Usage: "member state directory (required)"},
			&cli.BoolFlag{Name: "json", Usage: "print as JSON"},
		},
		Action: func(c *cli.Context) error {
			if err := requireFlags(c, "state"); err != nil {
				return err
			}
			st, err := pki.LoadState(c.String("state"))
			if err != nil {
				return err
			}
			v, err := st.NewVerifier(nil)
			if err != nil {
				return err
			}
			leaf := st.Cert.Leaf
			out := map[string]any{
				"id":        st.ID.String(),
				"pin":       pki.Pin(leaf),
				"not_after": leaf.NotAfter.UTC().Format(time.RFC3339),
				"ca_url":    st.CAURL,
			}
			dirLine := "no cached directory"
			if snap := v.Current(); snap != nil {
				age, _ := v.Age()
				out["directory_version"] = snap.Dir.Version
				out["directory_expires_at"] = snap.Dir.ExpiresAt.UTC().Format(time.RFC3339)
				dirLine = fmt.Sprintf("version %d, issued %s ago, expires %s", snap.Dir.Version, age.Round(time.Second), snap.Dir.ExpiresAt.UTC().Format(time.RFC3339))
				if _, _, err := snap.Authorize(leaf, time.Now()); err != nil {
					out["standing"] = err.Error()
				} else {
					out["standing"] = "ok"
				}
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(out)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "member       %s\n", st.ID)
			fmt.Fprintf(w, "key pin      %s\n", out["pin"])
			fmt.Fprintf(w, "certificate  valid until %s (%s left)\n", out["not_after"], time.Until(leaf.NotAfter).Round(time.Minute))
			fmt.Fprintf(w, "directory    %s\n", dirLine)
			if s, ok := out["standing"]; ok {
				fmt.Fprintf(w, "standing     %s\n", s)
			}
			return nil
		},
	}
}
