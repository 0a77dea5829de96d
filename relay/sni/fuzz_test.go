package sni_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kurier-net/kurier/relay/sni"
)

// FuzzParse checks that Parse never panics, that every strict prefix of a
// message it accepts is ErrIncomplete, and that wherever crypto/tls accepts
// a message up to GetConfigForClient, Parse accepts it too and agrees on
// the server name, ALPN and TLS 1.3.
func FuzzParse(f *testing.F) {
	for _, tt := range helloCases(f) {
		f.Add(payloads(tt.stream))
	}
	f.Add(hello(sniExt(hostEntry(1, "x"), hostEntry(0, "a.example")), alpnExt("h2", "x"), versExt(0x0304)))

	f.Fuzz(func(t *testing.T, msg []byte) {
		got, err := sni.Parse(msg)
		if (err == nil) != (got != nil) || err != nil && !errors.Is(err, sni.ErrIncomplete) && !errors.Is(err, sni.ErrMalformed) {
			t.Fatalf("Parse = %+v, %v", got, err)
		}
		if err == nil {
			for n := range len(msg) {
				if _, err := sni.Parse(msg[:n]); !errors.Is(err, sni.ErrIncomplete) {
					t.Fatalf("Parse(first %d of %d bytes) = %v, want %v", n, len(msg), err, sni.ErrIncomplete)
				}
			}
		}

		// crypto/tls reads the first message of the stream; compare where
		// that is all of msg.
		if len(msg) < 4 || len(msg) != 4+(int(msg[1])<<16|int(msg[2])<<8|int(msg[3])) {
			return
		}
		chi, ok := stdlibHello(reframe(msg, 1<<14))
		if !ok {
			return
		}
		if err != nil {
			t.Fatalf("Parse = %v; crypto/tls accepts it with ServerName %q", err, chi.ServerName)
		}
		checkAgrees(t, got, chi)
	})
}

// FuzzReadHello checks that ReadHello never panics, returns exactly the
// bytes it consumed, returns ErrIncomplete for prefixes of a stream it
// accepts, and agrees with crypto/tls wherever crypto/tls accepts the
// stream up to GetConfigForClient, except for the documented deviations.
func FuzzReadHello(f *testing.F) {
	for _, tt := range helloCases(f) {
		for _, fr := range framings {
			f.Add(fr.frame(tt.stream))
		}
	}
	f.Add(append(bytes.Clone(helloCases(f)[0].stream), "next"...))

	f.Fuzz(func(t *testing.T, stream []byte) {
		src := bytes.NewReader(stream)
		raw, got, err := sni.ReadHello(src, 0)
		if consumed := len(stream) - src.Len(); len(raw) != consumed || !bytes.Equal(raw, stream[:consumed]) {
			t.Fatalf("raw is %d bytes, consumed %d; want the bytes consumed", len(raw), consumed)
		}
		if (err == nil) != (got != nil) ||
			err != nil && !errors.Is(err, sni.ErrIncomplete) && !errors.Is(err, sni.ErrMalformed) && !errors.Is(err, sni.ErrTooLarge) {
			t.Fatalf("ReadHello = %+v, %v", got, err)
		}
		if err == nil {
			if want, err := sni.Parse(payloads(raw)); err != nil || !equalHello(got, want) {
				t.Fatalf("ReadHello = %+v; Parse of its records = %+v, %v", got, want, err)
			}
			for _, n := range []int{0, 1, 4, 5, 6, 9, len(raw) / 2, len(raw) - 1} { // all would be slow
				if _, _, err := sni.ReadHello(bytes.NewReader(raw[:min(n, len(raw)-1)]), 0); !errors.Is(err, sni.ErrIncomplete) {
					t.Fatalf("ReadHello(first %d of %d bytes) = %v, want %v", n, len(raw), err, sni.ErrIncomplete)
				}
			}
		}

		chi, ok := stdlibHello(stream)
		if !ok || deviation(stream) != "" {
			return
		}
		if err != nil {
			t.Fatalf("ReadHello = %v; crypto/tls accepts it with ServerName %q", err, chi.ServerName)
		}
		checkAgrees(t, got, chi)
	})
}
