package sni_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"slices"
	"testing"

	"github.com/kurier-net/kurier/relay/sni"
)

func TestParse(t *testing.T) {
	for _, tt := range helloCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			msg := payloads(tt.stream)
			got, err := sni.Parse(msg)
			if err != nil || !equalHello(got, &tt.want) {
				t.Fatalf("Parse = %+v, %v; want %+v, nil", got, err, tt.want)
			}
			chi, ok := stdlibHello(tt.stream)
			if !ok {
				t.Fatal("crypto/tls rejects the hello")
			}
			checkAgrees(t, got, chi)
		})
	}
}

// TestParseFixtures checks that the fixtures are what their names say.
func TestParseFixtures(t *testing.T) {
	cases := helloCases(t)
	if n := len(cases[0].stream); n < 1400 {
		t.Errorf("default hello is %d bytes; want an X25519MLKEM768 key share (> 1400 bytes)", n)
	}
	for _, tt := range cases {
		if tt.name != "resumption PSK" {
			continue
		}
		chi, _ := stdlibHello(tt.stream)
		if chi == nil || !slices.Contains(chi.Extensions, 41) {
			t.Errorf("resumption hello carries no pre_shared_key extension")
		}
	}
}

// TestParseCrafted checks hand-built hellos against crypto/tls: the stdlib
// column says whether crypto/tls gets as far as GetConfigForClient, and where
// both accept they must agree.
func TestParseCrafted(t *testing.T) {
	const name = "abc.office.example"
	host := sniExt(hostEntry(0, name))
	var many [][]byte // more extensions than extSet holds on the stack
	for i := range 40 {
		many = append(many, ext(0x4000+uint16(i))) // unassigned types
	}

	for _, tt := range []struct {
		name    string
		msg     []byte
		want    *sni.Hello
		wantErr error
		stdlib  bool
	}{
		{"server name", hello(host), &sni.Hello{ServerName: name}, nil, true},
		{"no extensions", handshake(fixedFields()), &sni.Hello{}, nil, true},
		{"empty extensions", hello(), &sni.Hello{}, nil, true},
		{"host_name and other type", hello(sniExt(hostEntry(1, "x"), hostEntry(0, name))), &sni.Hello{ServerName: name}, nil, true},
		{"other name type only", hello(sniExt(hostEntry(7, "x"))), &sni.Hello{}, nil, true},
		{"name not UTF-8", hello(sniExt(hostEntry(0, "a\xff\x00b"))), &sni.Hello{ServerName: "a\xff\x00b"}, nil, true},
		{"name over 255 bytes", hello(sniExt(hostEntry(0, overName))), &sni.Hello{ServerName: overName}, nil, true},
		{"trailing dot", hello(sniExt(hostEntry(0, name+"."))), nil, sni.ErrMalformed, false},
		{"two host_names", hello(sniExt(hostEntry(0, name), hostEntry(0, "b"))), nil, sni.ErrMalformed, false},
		{"empty name list", hello(ext(0, u16p())), nil, sni.ErrMalformed, false},
		{"empty host_name", hello(sniExt(hostEntry(0, ""))), nil, sni.ErrMalformed, false},
		{"empty other name", hello(sniExt(hostEntry(0, name), hostEntry(1, ""))), nil, sni.ErrMalformed, false},
		{"byte after name list", hello(ext(0, u16p(hostEntry(0, name)), []byte{0})), nil, sni.ErrMalformed, false},
		{"duplicate server_name", hello(host, host), nil, sni.ErrMalformed, false},
		{"duplicate unknown", hello(ext(0xfafa), host, ext(0xfafa)), nil, sni.ErrMalformed, false},
		{"40 extensions", hello(append(many, host)...), &sni.Hello{ServerName: name}, nil, true},
		{"duplicate in 40", hello(append(many, host, many[3])...), nil, sni.ErrMalformed, false},
		{"ALPN", hello(alpnExt("h2", "http/1.1")), &sni.Hello{ALPN: []string{"h2", "http/1.1"}}, nil, true},
		{"ALPN empty list", hello(ext(16, u16p())), nil, sni.ErrMalformed, false},
		{"ALPN empty protocol", hello(alpnExt("h2", "")), nil, sni.ErrMalformed, false},
		{"ALPN byte after list", hello(ext(16, u16p(u8p([]byte("h2"))), []byte{0})), nil, sni.ErrMalformed, false},
		{"versions with 1.3", hello(versExt(0x0a0a, 0x0304, 0x0303)), &sni.Hello{TLS13: true}, nil, true},
		{"versions without 1.3", hello(versExt(0x0303)), &sni.Hello{}, nil, true},
		{"versions empty", hello(versExt()), nil, sni.ErrMalformed, false},
		{"versions odd length", hello(ext(43, u8p([]byte{3, 4, 3}))), nil, sni.ErrMalformed, false},
		{"byte after extensions", handshake(cat(fixedFields(), u16p(host), []byte{0})), nil, sni.ErrMalformed, false},
		{"truncated extension", handshake(cat(fixedFields(), u16p([]byte{0, 0, 0}))), nil, sni.ErrMalformed, false},
		{"odd cipher suites", handshake(cat(be16(0x0303), make([]byte, 32), u8p(), u16p([]byte{0x13}), u8p([]byte{0}))), nil, sni.ErrMalformed, false},
		{"truncated random", handshake(cat(be16(0x0303), make([]byte, 20))), nil, sni.ErrMalformed, false},
		{"server_hello type", append([]byte{2}, hello(host)[1:]...), nil, sni.ErrMalformed, false},
		// crypto/tls reads the first message and gets to GetConfigForClient;
		// it fails the handshake only later (see ReadHello).
		{"bytes after the message", append(hello(host), 1, 0), nil, sni.ErrMalformed, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sni.Parse(tt.msg)
			if !equalHello(got, tt.want) || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("Parse = %+v, %v; want %+v, %v", got, err, tt.want, tt.wantErr)
			}
			chi, ok := stdlibHello(reframe(tt.msg, 1<<14))
			if ok != tt.stdlib {
				t.Fatalf("crypto/tls reaches GetConfigForClient: %v, want %v", ok, tt.stdlib)
			}
			if ok && err == nil {
				checkAgrees(t, got, chi)
			}
		})
	}
}

func TestParsePrefixes(t *testing.T) {
	for _, tt := range helloCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			msg := payloads(tt.stream)
			for n := range len(msg) {
				if got, err := sni.Parse(msg[:n]); !errors.Is(err, sni.ErrIncomplete) {
					t.Fatalf("Parse(first %d of %d bytes) = %+v, %v; want %v", n, len(msg), got, err, sni.ErrIncomplete)
				}
			}
		})
	}
}

// TestParseAllocs pins Parse's allocations: the Hello, the server name, and
// with ALPN the slice and one string shared by all protocol names.
func TestParseAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("-race adds allocations")
	}
	for _, tt := range []struct {
		name string
		alpn []string
		want float64
	}{
		{"default PQ", nil, 2},
		{"ALPN", []string{"h2", "http/1.1"}, 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			msg := payloads(clientHello(t, &tls.Config{ServerName: "abc.office.example", NextProtos: tt.alpn}))
			got := testing.AllocsPerRun(100, func() {
				if _, err := sni.Parse(msg); err != nil {
					t.Fatal(err)
				}
			})
			if got != tt.want {
				t.Errorf("Parse allocates %v times per call, want %v", got, tt.want)
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	msg := payloads(helloCases(b)[0].stream)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sni.Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func equalHello(a, b *sni.Hello) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.ServerName == b.ServerName && slices.Equal(a.ALPN, b.ALPN) && a.TLS13 == b.TLS13
}

// Builders for hand-made hellos.

// hello returns a ClientHello message with the given extensions.
func hello(exts ...[]byte) []byte { return handshake(cat(fixedFields(), u16p(exts...))) }

// fixedFields returns the fields before the extensions: version, random,
// a 32-byte session ID, one cipher suite, null compression.
func fixedFields() []byte {
	return cat(be16(0x0303), make([]byte, 32), u8p(make([]byte, 32)), u16p(be16(0x1301)), u8p([]byte{0}))
}

// handshake adds a client_hello handshake header to body.
func handshake(body []byte) []byte {
	n := len(body)
	return cat([]byte{1, byte(n >> 16), byte(n >> 8), byte(n)}, body)
}

func ext(typ uint16, data ...[]byte) []byte { return cat(be16(typ), u16p(data...)) }
func sniExt(entries ...[]byte) []byte       { return ext(0, u16p(entries...)) }
func hostEntry(typ byte, name string) []byte {
	return cat([]byte{typ}, u16p([]byte(name)))
}

func alpnExt(protos ...string) []byte {
	var list [][]byte
	for _, p := range protos {
		list = append(list, u8p([]byte(p)))
	}
	return ext(16, u16p(list...))
}

func versExt(vers ...uint16) []byte {
	var list [][]byte
	for _, v := range vers {
		list = append(list, be16(v))
	}
	return ext(43, u8p(list...))
}

func cat(b ...[]byte) []byte { return bytes.Join(b, nil) }
func be16(v uint16) []byte   { return []byte{byte(v >> 8), byte(v)} }
func u8p(b ...[]byte) []byte {
	c := cat(b...)
	return append([]byte{byte(len(c))}, c...)
}
func u16p(b ...[]byte) []byte {
	c := cat(b...)
	return append(be16(uint16(len(c))), c...)
}
