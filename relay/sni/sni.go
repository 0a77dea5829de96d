// Package sni reads a TLS ClientHello off a raw connection and parses the
// little the relay routes on (server name, ALPN, TLS 1.3 support) without
// terminating TLS.
//
// ReadHello reads whole TLS records with io.ReadFull straight from the
// connection, with no bufio in between: every byte it takes from the reader
// is returned in raw, and nothing after the record that ends the ClientHello
// is read, so the caller can forward raw to the backend verbatim and then
// splice the rest of the stream.
//
// Every read is bounded before anything is allocated for it:
//   - a record carries 1 to 16384 bytes (the TLSPlaintext limit, RFC 8446 §5.1);
//   - the handshake message, its 4-byte header included, is at most maxLen
//     bytes (MaxHelloLen by default);
//   - the message spans at most MaxRecords records, so a client cannot make
//     the relay issue thousands of tiny reads for one hello.
//
// Time is the caller's bound: set a read deadline on the connection before
// ReadHello and clear it afterwards.
//
// Parse accepts every ClientHello that crypto/tls accepts, and for those it
// reports the same server name and ALPN list that crypto/tls puts in
// tls.ClientHelloInfo. It checks the framing of the whole message and of
// every extension, rejects duplicate extensions and trailing bytes, and
// checks the contents of the extensions it reads exactly as crypto/tls does;
// the contents of other extensions are left to the backend.
//
// The package keeps no state; all functions are safe for concurrent use.
package sni

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

const (
	// MaxHelloLen is the default bound on a ClientHello handshake message,
	// 4-byte header included: a body of up to one full record. Go 1.26's
	// default hello with an X25519MLKEM768 key share is about 1.5 KiB.
	// crypto/tls itself accepts up to 64 KiB.
	MaxHelloLen = 16<<10 + 4 // bytes

	// MaxRecords bounds the number of TLS records a ClientHello may span.
	// Clients send one (two above 16 KiB); crypto/tls has no such bound.
	MaxRecords = 64

	recordHeaderLen    = 5
	handshakeHeaderLen = 4
	maxPlaintext       = 1 << 14 // bytes per record, RFC 8446 §5.1

	recordTypeHandshake = 0x16
	typeClientHello     = 1
)

var (
	// ErrIncomplete means the input ended before the ClientHello did. Every
	// strict prefix of a valid record stream or message yields it. From
	// ReadHello it also wraps io.EOF if the reader ended before the first
	// byte (the peer hung up without sending anything) and
	// io.ErrUnexpectedEOF otherwise.
	ErrIncomplete = errors.New("sni: incomplete ClientHello")

	// ErrMalformed means the input is not a well-formed ClientHello, or
	// breaks a rule in the package doc.
	ErrMalformed = errors.New("sni: malformed ClientHello")

	// ErrTooLarge means the ClientHello exceeds maxLen bytes or MaxRecords
	// records. It is reported as soon as a header shows it, before the
	// oversized part is read.
	ErrTooLarge = errors.New("sni: ClientHello too large")
)

// ReadHello reads one ClientHello from r, which is typically a *net.TCPConn
// with a read deadline set by the caller, and parses it with Parse.
//
// It reads only handshake records, reassembling the message across as many
// as the client used, and stops at the end of the record that completes the
// message. raw holds every byte taken from r, record headers included, also
// when err is non-nil; on success it is exactly the records that carry the
// hello, ready to be forwarded.
//
// maxLen bounds the handshake message, header included; if maxLen <= 0,
// MaxHelloLen is used.
//
// Where it reads the record layer, ReadHello is as lenient as a crypto/tls
// server: a record may carry any legacy version below 0x1000 (clients send
// 0x0301 to 0x0303). It is stricter in two places, both of which no real
// client meets: records other than handshake records, such as the warning
// alerts crypto/tls skips, are ErrMalformed; so is handshake data after the
// ClientHello in its last record, which crypto/tls rejects only later in
// the handshake.
//
// Errors wrap ErrIncomplete, ErrMalformed or ErrTooLarge, or else the
// error from r (such as a deadline's timeout).
func ReadHello(r io.Reader, maxLen int) (raw []byte, h *Hello, err error) {
	if maxLen <= 0 {
		maxLen = MaxHelloLen
	}
	var (
		msg     []byte // the record payloads joined: the handshake message so far
		want    = -1   // length of the whole message once its header is in
		records int
		hdr     [recordHeaderLen]byte // escapes through r: one allocation, so not per record
	)
	for want < 0 || len(msg) < want {
		if k, err := io.ReadFull(r, hdr[:]); err != nil {
			raw = append(raw, hdr[:k]...)
			return raw, nil, readError(err, len(raw))
		}
		records++
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		if err := checkRecord(hdr, n, records, len(msg), want, maxLen); err != nil {
			return append(raw, hdr[:]...), nil, err
		}

		// Grow by what this record holds, not by what the message claims:
		// memory follows the bytes a client actually sends.
		raw = append(slices.Grow(raw, recordHeaderLen+n), hdr[:]...)
		k, err := io.ReadFull(r, raw[len(raw):len(raw)+n])
		body := raw[len(raw) : len(raw)+k : len(raw)+k]
		raw = raw[:len(raw)+k]
		if err != nil {
			return raw, nil, readError(err, len(raw))
		}

		if msg == nil {
			msg = body // the usual single record: msg aliases raw, and its capped cap makes a later append copy
		} else {
			msg = append(msg, body...)
		}
		if msg[0] != typeClientHello {
			return raw, nil, fmt.Errorf("%w: handshake type %d, want client_hello", ErrMalformed, msg[0])
		}
		if want < 0 && len(msg) >= handshakeHeaderLen {
			want = handshakeHeaderLen + msgLen(msg)
			if want > maxLen {
				return raw, nil, fmt.Errorf("%w: message of %d bytes, limit %d", ErrTooLarge, want, maxLen)
			}
			if len(msg) > want {
				return raw, nil, fmt.Errorf("%w: %d bytes of handshake data after the ClientHello", ErrMalformed, len(msg)-want)
			}
		}
	}
	h, err = Parse(msg)
	return raw, h, err
}

// checkRecord checks the header of the records-th record, whose payload is n
// bytes, before it is read. have is the number of handshake bytes read so
// far and want the message length, or -1 while the header is incomplete.
func checkRecord(hdr [recordHeaderLen]byte, n, records, have, want, maxLen int) error {
	vers := binary.BigEndian.Uint16(hdr[1:])
	switch {
	case hdr[0] != recordTypeHandshake:
		return fmt.Errorf("%w: record type %#02x, want handshake", ErrMalformed, hdr[0])
	case vers >= 0x1000: // crypto/tls: "first record does not look like a TLS handshake"
		return fmt.Errorf("%w: record version %#04x", ErrMalformed, vers)
	case n == 0 || n > maxPlaintext:
		return fmt.Errorf("%w: record length %d", ErrMalformed, n)
	case records > MaxRecords:
		return fmt.Errorf("%w: more than %d records", ErrTooLarge, MaxRecords)
	case want < 0 && have+n > maxLen:
		return fmt.Errorf("%w: %d handshake bytes, limit %d", ErrTooLarge, have+n, maxLen)
	case want >= 0 && have+n > want:
		return fmt.Errorf("%w: %d bytes of handshake data after the ClientHello", ErrMalformed, have+n-want)
	}
	return nil
}

// msgLen returns the body length from a handshake header.
func msgLen(hdr []byte) int {
	return int(hdr[1])<<16 | int(hdr[2])<<8 | int(hdr[3])
}

// readError maps a read error after consumed bytes to the package's errors.
func readError(err error, consumed int) error {
	switch {
	case err == io.EOF && consumed == 0:
		return fmt.Errorf("%w: %w", ErrIncomplete, io.EOF)
	case err == io.EOF || err == io.ErrUnexpectedEOF: // io.ReadFull returns them unwrapped
		return fmt.Errorf("%w: %w", ErrIncomplete, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("sni: read ClientHello: %w", err)
}
