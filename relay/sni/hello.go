package sni

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// Extension types read by Parse (IANA TLS ExtensionType values).
const (
	extServerName        = 0
	extALPN              = 16
	extSupportedVersions = 43

	versionTLS13 = 0x0304
)

// Hello is what the relay takes from a ClientHello.
type Hello struct {
	// ServerName is the host_name from the server_name extension, exactly as
	// crypto/tls reports it in tls.ClientHelloInfo.ServerName: the bytes as
	// sent, not lowercased and not checked to be a DNS name (or even UTF-8);
	// a caller must normalize it before a lookup and quote it when logging.
	// It never ends in a dot. It is "" if the client sent no host_name, as
	// crypto/tls clients do for an IP address; that is not an error, the
	// caller decides how to route it.
	ServerName string

	// ALPN lists the protocols offered in the
	// application_layer_protocol_negotiation extension, in the client's
	// order, each non-empty. It is nil if the extension is absent.
	ALPN []string

	// TLS13 reports whether the supported_versions extension offers TLS 1.3.
	// Without that extension a client cannot negotiate TLS 1.3.
	TLS13 bool
}

// Parse parses msg, one handshake message of type client_hello with its
// 4-byte header and nothing after it. It returns an error wrapping
// ErrIncomplete if msg is shorter than its header says, ErrMalformed if it
// is not a well-formed ClientHello.
//
// Parse mirrors crypto/tls: it accepts a hello without extensions, rejects
// duplicate extensions, trailing bytes (in the message and in the
// extensions it reads), an empty server name list or name, a second
// host_name, and a host_name ending in a dot (crypto/tls clients strip that
// dot before sending). It does not cap the name at 255 bytes, because
// crypto/tls does not; a longer name matches no route. The result does not
// alias msg.
func Parse(msg []byte) (*Hello, error) {
	if len(msg) > 0 && msg[0] != typeClientHello {
		return nil, fmt.Errorf("%w: handshake type %d, want client_hello", ErrMalformed, msg[0])
	}
	if len(msg) < handshakeHeaderLen || len(msg) < handshakeHeaderLen+msgLen(msg) {
		return nil, ErrIncomplete
	}
	if n := handshakeHeaderLen + msgLen(msg); len(msg) > n {
		return nil, fmt.Errorf("%w: %d bytes after the message", ErrMalformed, len(msg)-n)
	}

	s := cryptobyte.String(msg[handshakeHeaderLen:])
	var (
		vers                           uint16
		sessionID, suites, compression cryptobyte.String
	)
	if !s.ReadUint16(&vers) || !s.Skip(32) || // legacy_version, random
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) || len(suites)%2 != 0 ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return nil, fmt.Errorf("%w: bad fixed fields", ErrMalformed)
	}
	h := new(Hello)
	if s.Empty() {
		return h, nil // extensions are optional
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return nil, fmt.Errorf("%w: bad extensions block", ErrMalformed)
	}

	var seen extSet
	for !exts.Empty() {
		var (
			typ  uint16
			data cryptobyte.String
			ok   = true
		)
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("%w: truncated extension", ErrMalformed)
		}
		if !seen.add(typ) {
			return nil, fmt.Errorf("%w: duplicate extension %d", ErrMalformed, typ)
		}
		switch typ {
		case extServerName:
			h.ServerName, ok = parseServerName(data)
		case extALPN:
			h.ALPN, ok = parseALPN(data)
		case extSupportedVersions:
			h.TLS13, ok = parseSupportedVersions(data)
		}
		if !ok {
			return nil, fmt.Errorf("%w: bad extension %d", ErrMalformed, typ)
		}
	}
	return h, nil
}

// parseServerName parses a server_name extension (RFC 6066 §3) as crypto/tls
// does: entries of other name types are skipped but must be non-empty too.
func parseServerName(data cryptobyte.String) (string, bool) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return "", false
	}
	var host []byte
	for !list.Empty() {
		var (
			typ  uint8
			name cryptobyte.String
		)
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&name) || name.Empty() {
			return "", false
		}
		if typ != 0 { // not host_name
			continue
		}
		if host != nil || name[len(name)-1] == '.' {
			return "", false
		}
		host = name
	}
	return string(host), true
}

// parseALPN parses an ALPN extension (RFC 7301 §3.1). All names share one
// string, so the list costs two allocations however long it is.
func parseALPN(data cryptobyte.String) ([]string, bool) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return nil, false
	}
	n := 0
	for l := list; !l.Empty(); n++ {
		var proto cryptobyte.String
		if !l.ReadUint8LengthPrefixed(&proto) || proto.Empty() {
			return nil, false
		}
	}
	all := string(list)
	protos := make([]string, 0, n)
	for i := 0; i < len(all); i += 1 + int(all[i]) {
		protos = append(protos, all[i+1:i+1+int(all[i])])
	}
	return protos, true
}

// parseSupportedVersions parses a supported_versions extension (RFC 8446
// §4.2.1) and reports whether it offers TLS 1.3.
func parseSupportedVersions(data cryptobyte.String) (tls13, ok bool) {
	var list cryptobyte.String
	if !data.ReadUint8LengthPrefixed(&list) || list.Empty() || !data.Empty() {
		return false, false
	}
	for !list.Empty() {
		var v uint16
		if !list.ReadUint16(&v) {
			return false, false
		}
		tls13 = tls13 || v == versionTLS13
	}
	return tls13, true
}

// extSet is a set of extension types. It lives on the stack and needs no
// allocation for up to len(small) extensions (real hellos carry about 20);
// past that it spills into a bitmap, so a hello with thousands of tiny
// extensions costs linear time and one 8 KiB allocation, not quadratic time.
type extSet struct {
	small [32]uint16
	n     int
	big   *[1 << 16 / 64]uint64
}

// add adds t to the set and reports whether it was absent.
func (s *extSet) add(t uint16) bool {
	if s.big == nil {
		for _, u := range s.small[:s.n] {
			if u == t {
				return false
			}
		}
		if s.n < len(s.small) {
			s.small[s.n] = t
			s.n++
			return true
		}
		s.big = new([1 << 16 / 64]uint64)
		for _, u := range s.small {
			s.big[u/64] |= 1 << (u % 64)
		}
	}
	bit := uint64(1) << (t % 64)
	if s.big[t/64]&bit != 0 {
		return false
	}
	s.big[t/64] |= bit
	return true
}
