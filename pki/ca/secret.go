package ca

import "log/slog"

// Passphrase unlocks the CA's private keys. It redacts itself when logged or
// formatted with %v or %s.
type Passphrase []byte

// LogValue implements slog.LogValuer.
func (Passphrase) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String returns a redacted placeholder, never the passphrase.
func (Passphrase) String() string { return "REDACTED" }

// Token is a one-time enrolment token (a JWT signed by the CA's JWK
// provisioner). It redacts itself when logged or formatted with %v or %s; use
// string(tok) where the token itself must be written out.
type Token string

// LogValue implements slog.LogValuer.
func (Token) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// String returns a redacted placeholder, never the token.
func (Token) String() string { return "REDACTED" }

var (
	_ slog.LogValuer = Passphrase(nil)
	_ slog.LogValuer = Token("")
)
