// Package wire is the small protocol between the public relay and the
// private proxies: control frames on the control session (a QUIC stream, or
// TCP+TLS where UDP is blocked) and the preamble a private proxy sends when it
// dials the relay's pairing port. docs/relay.md has the byte layouts.
//
// Every length is checked against a bound before anything is allocated, and
// every decoder rejects trailing bytes. The decoders are fuzzed.
package wire

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"golang.org/x/crypto/cryptobyte"
)

// Bounds.
const (
	// MaxFrame is the largest control frame payload.
	MaxFrame = 64 << 10 // bytes
	// MaxName is the longest route name (a DNS name).
	MaxName = 253
	// MaxMessage is the longest human-readable message in a Result.
	MaxMessage = 1 << 10
	// MaxAddr is the longest host:port in an Incoming.
	MaxAddr = 255

	frameHeader = 4 // type (1) | payload length (3, big endian)
)

// Errors.
var (
	ErrMalformed = errors.New("wire: malformed message")
	ErrTooLarge  = errors.New("wire: frame exceeds size limit")
	ErrUnknown   = errors.New("wire: unknown frame type")
)

// Type is a control frame type.
type Type uint8

// Control frame types.
const (
	TypeRegister  Type = 0x01 // proxy → relay
	TypeWithdraw  Type = 0x02 // proxy → relay
	TypeResult    Type = 0x03 // relay → proxy, answers Register and Withdraw
	TypeIncoming  Type = 0x04 // relay → proxy: a client waits; dial back
	TypeRouteGone Type = 0x05 // relay → proxy: a route ended (used, expired)
	TypePing      Type = 0x06 // either way
	TypePong      Type = 0x07 // either way
	TypeGoAway    Type = 0x08 // relay → proxy: draining, reconnect elsewhere
)

func (t Type) String() string {
	switch t {
	case TypeRegister:
		return "register"
	case TypeWithdraw:
		return "withdraw"
	case TypeResult:
		return "result"
	case TypeIncoming:
		return "incoming"
	case TypeRouteGone:
		return "route_gone"
	case TypePing:
		return "ping"
	case TypePong:
		return "pong"
	case TypeGoAway:
		return "goaway"
	}
	return fmt.Sprintf("type_%#02x", uint8(t))
}

// TokenSize is the length of a pairing token: a 16-byte id the relay looks it
// up by, and a 16-byte secret it compares in constant time.
const TokenSize = 32

// Token is a single-use pairing token. It redacts itself in logs.
type Token [TokenSize]byte

// NewToken returns a fresh random token.
func NewToken() Token {
	var t Token
	rand.Read(t[:]) // never fails (crypto/rand)
	return t
}

// ID returns the lookup half of the token.
func (t Token) ID() [16]byte { return [16]byte(t[:16]) }

// Matches reports in constant time whether u is t.
func (t Token) Matches(u Token) bool { return subtle.ConstantTimeCompare(t[:], u[:]) == 1 }

// LogValue implements slog.LogValuer: only a short prefix of the id is shown.
func (t Token) LogValue() slog.Value { return slog.StringValue(hex.EncodeToString(t[:4]) + "…") }

// String never prints the secret half.
func (t Token) String() string { return "token:" + hex.EncodeToString(t[:4]) + "…" }

// Register asks the relay to route a name to this session. A member may
// register its own DNS name (<member>.<network>, TTL 0 = while the session
// lasts) or one-time routes one label below it (<label>.<member>.<network>,
// with a TTL).
type Register struct {
	ReqID uint32
	// SingleUse routes are withdrawn by the relay after their first paired
	// connection.
	SingleUse bool
	// TTL is the route's lifetime in seconds; 0 means the session's.
	TTL  uint32
	Name string
}

// Withdraw removes a route registered by this session.
type Withdraw struct {
	ReqID uint32
	Name  string
}

// Code is the outcome of a Register or Withdraw.
type Code uint8

// Result codes.
const (
	CodeOK        Code = 0
	CodeBad       Code = 1 // malformed request
	CodeForbidden Code = 2 // name outside the member's namespace
	CodeLimit     Code = 3 // too many routes or pending requests
	CodeNotFound  Code = 4 // withdraw of a route this session does not hold
	CodeDraining  Code = 5 // relay is shutting down
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeBad:
		return "bad_request"
	case CodeForbidden:
		return "forbidden"
	case CodeLimit:
		return "limit"
	case CodeNotFound:
		return "not_found"
	case CodeDraining:
		return "draining"
	}
	return fmt.Sprintf("code_%d", uint8(c))
}

// Result answers the request with the same ReqID.
type Result struct {
	ReqID   uint32
	Code    Code
	Message string
}

// Incoming tells the proxy that a client waits on Name: dial PairAddr (the
// relay's own pairing endpoint from the directory if empty) and present Token.
type Incoming struct {
	Token    Token
	Name     string
	PairAddr string
}

// Gone reasons.
const (
	GoneUsed    uint8 = 1
	GoneExpired uint8 = 2
)

// RouteGone tells the proxy a route it registered has ended.
type RouteGone struct {
	Name   string
	Reason uint8
}

// Ping and Pong carry a nonce the answer echoes.
type Ping struct{ Nonce uint64 }

// Pong answers a Ping.
type Pong struct{ Nonce uint64 }

// GoAway announces that the relay is draining.
type GoAway struct{ Message string }

// Frame is one decoded control frame: one of the message types above.
type Frame interface{ frameType() Type }

func (Register) frameType() Type  { return TypeRegister }
func (Withdraw) frameType() Type  { return TypeWithdraw }
func (Result) frameType() Type    { return TypeResult }
func (Incoming) frameType() Type  { return TypeIncoming }
func (RouteGone) frameType() Type { return TypeRouteGone }
func (Ping) frameType() Type      { return TypePing }
func (Pong) frameType() Type      { return TypePong }
func (GoAway) frameType() Type    { return TypeGoAway }

// TypeOf returns the frame type of f.
func TypeOf(f Frame) Type { return f.frameType() }

func addName(b *cryptobyte.Builder, s string) {
	b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(s)) })
}

// Append appends the encoding of f (header and payload) to dst.
func Append(dst []byte, f Frame) ([]byte, error) {
	b := cryptobyte.NewBuilder(dst)
	b.AddUint8(uint8(f.frameType()))
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		switch m := f.(type) {
		case Register:
			if err := checkName(m.Name); err != nil {
				b.SetError(err)
				return
			}
			b.AddUint32(m.ReqID)
			var flags uint8
			if m.SingleUse {
				flags |= 1
			}
			b.AddUint8(flags)
			b.AddUint32(m.TTL)
			addName(b, m.Name)
		case Withdraw:
			if err := checkName(m.Name); err != nil {
				b.SetError(err)
				return
			}
			b.AddUint32(m.ReqID)
			addName(b, m.Name)
		case Result:
			if len(m.Message) > MaxMessage {
				m.Message = m.Message[:MaxMessage]
			}
			b.AddUint32(m.ReqID)
			b.AddUint8(uint8(m.Code))
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(m.Message)) })
		case Incoming:
			if err := checkName(m.Name); err != nil {
				b.SetError(err)
				return
			}
			if len(m.PairAddr) > MaxAddr {
				b.SetError(fmt.Errorf("%w: pairing address too long", ErrMalformed))
				return
			}
			b.AddBytes(m.Token[:])
			addName(b, m.Name)
			addName(b, m.PairAddr)
		case RouteGone:
			if err := checkName(m.Name); err != nil {
				b.SetError(err)
				return
			}
			addName(b, m.Name)
			b.AddUint8(m.Reason)
		case Ping:
			b.AddUint64(m.Nonce)
		case Pong:
			b.AddUint64(m.Nonce)
		case GoAway:
			msg := m.Message
			if len(msg) > MaxMessage {
				msg = msg[:MaxMessage]
			}
			b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(msg)) })
		default:
			b.SetError(ErrUnknown)
		}
	})
	out, err := b.Bytes()
	if err != nil {
		return dst, err
	}
	return out, nil
}

func checkName(s string) error {
	if len(s) == 0 || len(s) > MaxName {
		return fmt.Errorf("%w: name length %d", ErrMalformed, len(s))
	}
	return nil
}

func readName(s *cryptobyte.String, allowEmpty bool, max int) (string, bool) {
	var v cryptobyte.String
	if !s.ReadUint8LengthPrefixed(&v) || len(v) > max || (!allowEmpty && len(v) == 0) {
		return "", false
	}
	return string(v), true
}

// Decode decodes one frame payload of type t. It rejects trailing bytes.
func Decode(t Type, payload []byte) (Frame, error) {
	if len(payload) > MaxFrame {
		return nil, ErrTooLarge
	}
	s := cryptobyte.String(payload)
	var f Frame
	ok := true
	switch t {
	case TypeRegister:
		var m Register
		var flags uint8
		ok = s.ReadUint32(&m.ReqID) && s.ReadUint8(&flags) && s.ReadUint32(&m.TTL)
		if ok && flags&^1 != 0 {
			ok = false
		}
		m.SingleUse = flags&1 != 0
		if ok {
			m.Name, ok = readName(&s, false, MaxName)
		}
		f = m
	case TypeWithdraw:
		var m Withdraw
		ok = s.ReadUint32(&m.ReqID)
		if ok {
			m.Name, ok = readName(&s, false, MaxName)
		}
		f = m
	case TypeResult:
		var m Result
		var code uint8
		var msg cryptobyte.String
		ok = s.ReadUint32(&m.ReqID) && s.ReadUint8(&code) && s.ReadUint16LengthPrefixed(&msg) && len(msg) <= MaxMessage
		m.Code, m.Message = Code(code), string(msg)
		f = m
	case TypeIncoming:
		var m Incoming
		var tok []byte
		ok = s.ReadBytes(&tok, TokenSize)
		if ok {
			m.Token = Token(tok)
			m.Name, ok = readName(&s, false, MaxName)
		}
		if ok {
			m.PairAddr, ok = readName(&s, true, MaxAddr)
		}
		f = m
	case TypeRouteGone:
		var m RouteGone
		m.Name, ok = readName(&s, false, MaxName)
		ok = ok && s.ReadUint8(&m.Reason)
		f = m
	case TypePing:
		var m Ping
		ok = s.ReadUint64(&m.Nonce)
		f = m
	case TypePong:
		var m Pong
		ok = s.ReadUint64(&m.Nonce)
		f = m
	case TypeGoAway:
		var m GoAway
		var msg cryptobyte.String
		ok = s.ReadUint16LengthPrefixed(&msg) && len(msg) <= MaxMessage
		m.Message = string(msg)
		f = m
	default:
		return nil, fmt.Errorf("%w: %v", ErrUnknown, t)
	}
	if !ok || !s.Empty() {
		return nil, fmt.Errorf("%w: %v frame", ErrMalformed, t)
	}
	return f, nil
}

// ReadFrame reads one frame from r. buf is reused for the payload when it is
// large enough; the returned Frame does not alias it. Reading is bounded by
// MaxFrame; the caller sets deadlines.
func ReadFrame(r io.Reader, buf []byte) (Frame, []byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, buf, err
	}
	n := int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
	if n > MaxFrame {
		return nil, buf, fmt.Errorf("%w: %d bytes", ErrTooLarge, n)
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, buf, err
	}
	f, err := Decode(Type(hdr[0]), buf)
	return f, buf, err
}

// WriteFrame encodes f and writes it to w in one Write call.
func WriteFrame(w io.Writer, f Frame) error {
	b, err := Append(make([]byte, 0, 64), f)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// The pairing preamble, sent by the private proxy on a fresh TCP connection to
// the relay's pairing port:
//
//	"KRP1" (4) | token (32) | name length (1) | name
//
// The relay answers with one status byte; on PairOK it then forwards the
// client's bytes and splices the two connections.
const (
	pairMagic = "KRP1"
	// MaxPreamble bounds the pairing preamble.
	MaxPreamble = len(pairMagic) + TokenSize + 1 + MaxName
)

// Pairing status bytes.
const (
	PairOK        byte = 0
	PairUnknown   byte = 1 // no such token: never issued, used, or expired
	PairWrongName byte = 2 // token issued for another route
	PairBusy      byte = 3 // relay at a limit
)

// Preamble is what a private proxy presents when dialling back.
type Preamble struct {
	Token Token
	Name  string
}

// AppendPreamble appends the encoding of p to dst.
func AppendPreamble(dst []byte, p Preamble) ([]byte, error) {
	if err := checkName(p.Name); err != nil {
		return dst, err
	}
	dst = append(dst, pairMagic...)
	dst = append(dst, p.Token[:]...)
	dst = append(dst, byte(len(p.Name)))
	return append(dst, p.Name...), nil
}

// ReadPreamble reads a preamble from r with io.ReadFull, consuming exactly
// its bytes. The caller sets a deadline.
func ReadPreamble(r io.Reader) (Preamble, error) {
	var fixed [len(pairMagic) + TokenSize + 1]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Preamble{}, err
	}
	if string(fixed[:len(pairMagic)]) != pairMagic {
		return Preamble{}, fmt.Errorf("%w: bad pairing magic", ErrMalformed)
	}
	n := int(fixed[len(fixed)-1])
	if n == 0 || n > MaxName {
		return Preamble{}, fmt.Errorf("%w: pairing name length %d", ErrMalformed, n)
	}
	name := make([]byte, n)
	if _, err := io.ReadFull(r, name); err != nil {
		return Preamble{}, err
	}
	return Preamble{Token: Token(fixed[len(pairMagic) : len(pairMagic)+TokenSize]), Name: string(name)}, nil
}
