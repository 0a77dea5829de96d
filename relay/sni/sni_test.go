package sni_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/kurier-net/kurier/relay/sni"
)

// framings re-frames a hello's message the ways a client may send it.
var framings = []struct {
	name  string
	frame func(stream []byte) []byte
}{
	{"as sent", func(s []byte) []byte { return s }},
	{"100-byte records", func(s []byte) []byte { return reframe(payloads(s), 100) }},
	{"header split", func(s []byte) []byte { return reframe(payloads(s), 1, 2, 3, 500) }},
	{"last record exactly full", func(s []byte) []byte { m := payloads(s); return reframe(m, len(m)-1, 1) }},
}

// readers deliver a stream the ways a socket may.
var readers = []struct {
	name string
	wrap func(io.Reader) io.Reader
}{
	{"whole", func(r io.Reader) io.Reader { return r }},
	{"one byte per read", iotest.OneByteReader},
	{"half per read", iotest.HalfReader},
	{"data and EOF together", iotest.DataErrReader},
}

func TestReadHello(t *testing.T) {
	const after = "next bytes on the wire"
	for _, tt := range helloCases(t) {
		for _, fr := range framings {
			for _, rd := range readers {
				t.Run(tt.name+"/"+fr.name+"/"+rd.name, func(t *testing.T) {
					stream := fr.frame(tt.stream)
					r := rd.wrap(bytes.NewReader(append(bytes.Clone(stream), after...)))
					raw, got, err := sni.ReadHello(r, 0)
					if err != nil || !equalHello(got, &tt.want) {
						t.Fatalf("ReadHello = %+v, %v; want %+v, nil", got, err, tt.want)
					}
					if !bytes.Equal(raw, stream) {
						t.Errorf("raw is %d bytes, want the %d bytes of the hello's records", len(raw), len(stream))
					}
					if rest, _ := io.ReadAll(r); string(rest) != after {
						t.Errorf("left %q unread, want %q", rest, after)
					}
				})
			}
		}
	}
}

// TestReadHelloTCP reads a hello from a loopback socket that receives it in
// small writes, and checks the next bytes are still there to forward.
func TestReadHelloTCP(t *testing.T) {
	const after = "rest of the stream"
	stream := helloCases(t)[0].stream
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for p := append(bytes.Clone(stream), after...); len(p) > 0; {
			n := min(len(p), 37) // odd-sized TCP segments: Nagle is off
			if _, err := c.Write(p[:n]); err != nil {
				t.Error(err)
				return
			}
			p = p[n:]
		}
	})

	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second)) // the caller's job
	raw, got, err := sni.ReadHello(c, 0)
	c.SetReadDeadline(time.Time{})
	if err != nil || got.ServerName != "abc.office.example" || !bytes.Equal(raw, stream) {
		t.Fatalf("ReadHello = %d bytes, %+v, %v; want the %d-byte hello for abc.office.example", len(raw), got, err, len(stream))
	}
	if rest, err := io.ReadAll(c); err != nil || string(rest) != after {
		t.Errorf("read after hello = %q, %v; want %q", rest, err, after)
	}
}

func TestReadHelloPrefixes(t *testing.T) {
	for _, tt := range helloCases(t)[:2] {
		for _, fr := range framings {
			t.Run(tt.name+"/"+fr.name, func(t *testing.T) {
				stream := fr.frame(tt.stream)
				for n := range len(stream) {
					raw, got, err := sni.ReadHello(bytes.NewReader(stream[:n]), 0)
					if !errors.Is(err, sni.ErrIncomplete) || got != nil || !bytes.Equal(raw, stream[:n]) {
						t.Fatalf("ReadHello(first %d of %d bytes) = %d bytes, %+v, %v; want all of them, nil, %v",
							n, len(stream), len(raw), got, err, sni.ErrIncomplete)
					}
					// An empty stream is a peer that hung up; a cut one is not.
					if wantEOF := n == 0; errors.Is(err, io.EOF) != wantEOF || errors.Is(err, io.ErrUnexpectedEOF) == wantEOF {
						t.Fatalf("ReadHello(first %d bytes) = %v; want io.EOF %v", n, err, wantEOF)
					}
				}
			})
		}
	}
}

func TestReadHelloBad(t *testing.T) {
	hs := helloCases(t)[0].stream
	msg := payloads(hs)
	withHeader := func(hdr ...byte) []byte { return append(hdr, msg...) }

	for _, tt := range []struct {
		name    string
		stream  []byte
		maxLen  int
		wantErr error
		wantRaw int  // bytes consumed
		stdlib  bool // crypto/tls gets to GetConfigForClient: a documented deviation
	}{
		{"application data", withHeader(0x17, 3, 3, 0x05, 0xe1), 0, sni.ErrMalformed, 5, false},
		{"change cipher spec", append([]byte{0x14, 3, 3, 0, 1, 1}, hs...), 0, sni.ErrMalformed, 5, false},
		// crypto/tls skips warning alerts; no client sends one first.
		{"warning alert first", append([]byte{0x15, 3, 1, 0, 2, 1, 90}, hs...), 0, sni.ErrMalformed, 5, true},
		{"SSLv2 hello", []byte{0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15}, 0, sni.ErrMalformed, 5, false},
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0, sni.ErrMalformed, 5, false},
		{"record version 0x1000", withHeader(0x16, 0x10, 0, 0x05, 0xe1), 0, sni.ErrMalformed, 5, false},
		{"empty record", withHeader(0x16, 3, 1, 0, 0), 0, sni.ErrMalformed, 5, false},
		{"record over 16 KiB", withHeader(0x16, 3, 1, 0x40, 0x01), 0, sni.ErrMalformed, 5, false},
		{"server_hello", []byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0}, 0, sni.ErrMalformed, 9, false},
		{"server_hello in 1-byte record", []byte{0x16, 3, 3, 0, 1, 2, 0x16}, 0, sni.ErrMalformed, 6, false},
		{"message of 16 MiB", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff, 0, 0}, 0, sni.ErrTooLarge, 9, false},
		{"over maxLen", hs, 1000, sni.ErrTooLarge, 5, true},
		{"over maxLen, header split", reframe(msg, 2, 2, 1000), 1000, sni.ErrTooLarge, 14, true},
		{"too many records", reframe(msg, 20), 0, sni.ErrTooLarge, sni.MaxRecords*25 + 5, true},
		{"handshake data after hello, same record", reframe(append(bytes.Clone(msg), 20, 0, 0, 0), 1<<14), 0, sni.ErrMalformed, 5 + len(msg) + 4, true},
		{"handshake data after hello, later record", reframe(append(bytes.Clone(msg), 20, 0, 0, 0), 1000), 0, sni.ErrMalformed, 1010, true},
		{"cut record", withHeader(0x16, 3, 1, 0x05, 0xe1)[:100], 0, sni.ErrIncomplete, 100, false},
		{"garbage", append([]byte{0x16, 3, 1, 0, 64, 1, 0, 0, 60}, bytes.Repeat([]byte{0xab}, 60)...), 0, sni.ErrMalformed, 69, false},
		{"bad hello", reframe(append([]byte{1, 0, 0, 6}, "\x03\x03junk"...), 10), 0, sni.ErrMalformed, 15, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := bytes.NewReader(tt.stream)
			raw, got, err := sni.ReadHello(src, tt.maxLen)
			if !errors.Is(err, tt.wantErr) || got != nil {
				t.Fatalf("ReadHello = %+v, %v; want nil, %v", got, err, tt.wantErr)
			}
			if consumed := len(tt.stream) - src.Len(); len(raw) != tt.wantRaw || consumed != tt.wantRaw || !bytes.Equal(raw, tt.stream[:len(raw)]) {
				t.Errorf("raw is %d bytes, consumed %d; want the first %d bytes of the stream", len(raw), consumed, tt.wantRaw)
			}
			if _, ok := stdlibHello(tt.stream); ok != tt.stdlib {
				t.Errorf("crypto/tls reaches GetConfigForClient: %v, want %v", ok, tt.stdlib)
			}
		})
	}
}

// TestReadHelloLenient checks record headers crypto/tls accepts in a hello.
func TestReadHelloLenient(t *testing.T) {
	msg := payloads(helloCases(t)[0].stream)
	want, err := sni.Parse(msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, vers := range []uint16{0x0000, 0x0300, 0x0301, 0x0303, 0x0304, 0x0fff} {
		stream := reframe(msg, 700)
		for i := 0; i < len(stream); i += 5 + (int(stream[i+3])<<8 | int(stream[i+4])) {
			stream[i+1], stream[i+2] = byte(vers>>8), byte(vers)
		}
		if _, ok := stdlibHello(stream); !ok {
			t.Fatalf("record version %#04x: crypto/tls rejects the hello", vers)
		}
		_, got, err := sni.ReadHello(bytes.NewReader(stream), 0)
		if err != nil || !equalHello(got, want) {
			t.Errorf("record version %#04x: ReadHello = %+v, %v; want %+v, nil", vers, got, err, want)
		}
	}
}

// TestReadHelloBoundedAlloc checks that a claimed length is not allocated:
// a few bytes claiming a 16 MiB message, with maxLen allowing it, cost no
// more than the bytes actually read.
func TestReadHelloBoundedAlloc(t *testing.T) {
	for _, tt := range []struct {
		name   string
		stream []byte
	}{
		{"one record", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff}},
		{"two records", []byte{0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff, 0x16, 3, 3, 0, 1, 3}},
		{"header split", []byte{0x16, 3, 1, 0, 1, 1, 0x16, 3, 3, 0, 3, 0xff, 0xff, 0xff, 0x16, 3, 3, 0, 1, 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			const runs = 100
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range runs {
				if _, _, err := sni.ReadHello(bytes.NewReader(tt.stream), 1<<30); !errors.Is(err, sni.ErrIncomplete) {
					t.Fatalf("ReadHello = %v, want %v", err, sni.ErrIncomplete)
				}
			}
			runtime.ReadMemStats(&after)
			if got := (after.TotalAlloc - before.TotalAlloc) / runs; got > 1<<10 {
				t.Errorf("ReadHello allocated %d bytes per call for a %d-byte stream", got, len(tt.stream))
			}
		})
	}
}

// TestReadHelloAllocs pins ReadHello's allocations for a one-record hello:
// the record header buffer (it escapes through the io.Reader), raw (which
// the message aliases), and Parse's two.
func TestReadHelloAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("-race adds allocations")
	}
	stream := helloCases(t)[0].stream
	r := bytes.NewReader(stream)
	got := testing.AllocsPerRun(100, func() {
		r.Reset(stream)
		if _, _, err := sni.ReadHello(r, 0); err != nil {
			t.Fatal(err)
		}
	})
	if got != 4 {
		t.Errorf("ReadHello allocates %v times per call, want 4", got)
	}
}

func BenchmarkReadHello(b *testing.B) {
	for _, fr := range framings[:2] {
		b.Run(fr.name, func(b *testing.B) {
			stream := fr.frame(helloCases(b)[0].stream)
			r := bytes.NewReader(stream)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			for b.Loop() {
				r.Reset(stream)
				if _, _, err := sni.ReadHello(r, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
