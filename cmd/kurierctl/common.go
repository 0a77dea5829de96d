package main

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kurier-net/kurier/pki/ca"
)

// passphraseEnv is the environment variable the CA passphrase may come from.
const passphraseEnv = "KURIER_CA_PASSPHRASE"

// maxPassphraseFile bounds a passphrase file.
const maxPassphraseFile = 4 << 10

// The flags several commands share. They are made anew for every command:
// urfave/cli keeps parse state in flag values.

func dirFlag() cli.Flag {
	return &cli.StringFlag{Name: "dir", Usage: "CA directory `DIR`", EnvVars: []string{"KURIER_CA_DIR"}}
}

func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print the result as JSON (stable, see docs/pki.md)"}
}

func passphraseFileFlag() cli.Flag {
	return &cli.StringFlag{
		Name:  "passphrase-file",
		Usage: "read the CA passphrase from `FILE` (first line); else $" + passphraseEnv + ", else a terminal prompt",
	}
}

// openCA opens the CA directory named by --dir.
func (e *env) openCA(c *cli.Context) (*ca.CA, error) {
	dir := c.String("dir")
	if dir == "" {
		return nil, usagef("--dir is required")
	}
	return ca.Open(ca.OpenConfig{Dir: dir, Now: e.now})
}

// passphrase returns the CA passphrase from --passphrase-file, then
// $KURIER_CA_PASSPHRASE, then a terminal prompt (asked twice if confirm).
func (e *env) passphrase(c *cli.Context, confirm bool) (ca.Passphrase, error) {
	if f := c.String("passphrase-file"); f != "" {
		fh, err := os.Open(f)
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		defer fh.Close()
		b, err := io.ReadAll(io.LimitReader(fh, maxPassphraseFile+1))
		if err != nil {
			return nil, fmt.Errorf("passphrase file: %w", err)
		}
		if len(b) > maxPassphraseFile {
			return nil, fmt.Errorf("passphrase file %s is larger than %d bytes", f, maxPassphraseFile)
		}
		line, _, _ := bytes.Cut(b, []byte{'\n'})
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			return nil, fmt.Errorf("passphrase file %s: first line is empty", f)
		}
		return ca.Passphrase(line), nil
	}
	if v, ok := e.lookupEnv(passphraseEnv); ok && v != "" {
		return ca.Passphrase(v), nil
	}
	if e.readPassword == nil {
		return nil, errors.New("the CA passphrase is needed but there is no terminal to ask on: use --passphrase-file or set " + passphraseEnv)
	}
	p, err := e.readPassword("CA passphrase: ")
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("empty passphrase")
	}
	if confirm {
		p2, err := e.readPassword("CA passphrase (again): ")
		if err != nil {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		if subtle.ConstantTimeCompare(p, p2) != 1 {
			return nil, errors.New("the passphrases do not match")
		}
	}
	return ca.Passphrase(p), nil
}

// caPassphrase returns the passphrase for an existing CA, or nil if its
// keys are not encrypted.
func (e *env) caPassphrase(c *cli.Context, a *ca.CA) (ca.Passphrase, error) {
	if !a.Encrypted() {
		return nil, nil
	}
	return e.passphrase(c, false)
}

// openCAUnlocked opens the CA of --dir and asks for its passphrase: what
// every command that uses the CA's keys does first.
func (e *env) openCAUnlocked(c *cli.Context) (*ca.CA, ca.Passphrase, error) {
	a, err := e.openCA(c)
	if err != nil {
		return nil, nil, err
	}
	pass, err := e.caPassphrase(c, a)
	if err != nil {
		return nil, nil, err
	}
	return a, pass, nil
}

func (e *env) printJSON(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "%s\n", b)
	return err
}

func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "warning: "+format+"\n", args...)
}

// nArgs checks the number of positional arguments and returns them.
func nArgs(c *cli.Context, names ...string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) != len(names) {
		return nil, usagef("%s: want %d argument(s) <%s>, got %d", c.Command.FullName(), len(names), strings.Join(names, "> <"), len(a))
	}
	return a, nil
}

// age formats how long ago (or, if negative, in how long) t is from now, to
// the minute.
func age(t, now time.Time) string {
	d := now.Sub(t).Round(time.Minute)
	if d < 0 {
		return "in " + fmtDuration(-d)
	}
	return fmtDuration(d) + " ago"
}

func fmtDuration(d time.Duration) string {
	if d < time.Minute {
		return "<1m"
	}
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	s := strings.TrimSuffix(d.String(), "0s")
	if days > 0 {
		return fmt.Sprintf("%dd%s", days, s)
	}
	return s
}

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339) }
