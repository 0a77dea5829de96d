package wire

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

func sampleFrames() []Frame {
	tok := NewToken()
	return []Frame{
		Register{ReqID: 1, Name: "hd-1.kurier.test"},
		Register{ReqID: 2, SingleUse: true, TTL: 3600, Name: "x7k2.hd-1.kurier.test"},
		Withdraw{ReqID: 3, Name: "x7k2.hd-1.kurier.test"},
		Result{ReqID: 3, Code: CodeForbidden, Message: "not yours"},
		Result{ReqID: 4},
		Incoming{Token: tok, Name: "hd-1.kurier.test"},
		Incoming{Token: tok, Name: "hd-1.kurier.test", PairAddr: "[2001:db8::1]:4443"},
		RouteGone{Name: "a.hd-1.kurier.test", Reason: GoneUsed},
		Ping{Nonce: 1 << 60},
		Pong{Nonce: 7},
		GoAway{Message: "draining"},
		GoAway{},
	}
}

func TestFrameRoundTrip(t *testing.T) {
	var stream bytes.Buffer
	for _, f := range sampleFrames() {
		if err := WriteFrame(&stream, f); err != nil {
			t.Fatalf("WriteFrame(%#v): %v", f, err)
		}
	}
	var buf []byte
	for i, want := range sampleFrames() {
		got, b, err := ReadFrame(&stream, buf)
		buf = b
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		// Tokens are random per sampleFrames call; compare shape only.
		if in, ok := want.(Incoming); ok {
			gi := got.(Incoming)
			gi.Token = in.Token
			got = gi
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("frame %d = %#v, want %#v", i, got, want)
		}
	}
	if _, _, err := ReadFrame(&stream, buf); !errors.Is(err, io.EOF) {
		t.Errorf("after the last frame: %v, want EOF", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	enc := func(f Frame) []byte {
		b, err := Append(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		return b[frameHeader:]
	}
	reg := enc(Register{ReqID: 1, Name: "a.b"})
	for _, tt := range []struct {
		name    string
		typ     Type
		payload []byte
		want    error
	}{
		{"unknown type", 0x7f, nil, ErrUnknown},
		{"empty register", TypeRegister, nil, ErrMalformed},
		{"trailing byte", TypeRegister, append(append([]byte{}, reg...), 0), ErrMalformed},
		{"truncated", TypeRegister, reg[:len(reg)-1], ErrMalformed},
		{"unknown flag", TypeRegister, func() []byte { b := append([]byte{}, reg...); b[4] = 2; return b }(), ErrMalformed},
		{"empty name", TypeWithdraw, []byte{0, 0, 0, 1, 0}, ErrMalformed},
		{"short token", TypeIncoming, make([]byte, 31), ErrMalformed},
		{"oversize", TypePing, make([]byte, MaxFrame+1), ErrTooLarge},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Decode(tt.typ, tt.payload); !errors.Is(err, tt.want) {
				t.Errorf("Decode = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAppendRejects(t *testing.T) {
	for _, f := range []Frame{
		Register{Name: ""},
		Register{Name: strings.Repeat("a", MaxName+1)},
		Incoming{Name: "a", PairAddr: strings.Repeat("a", MaxAddr+1)},
	} {
		if _, err := Append(nil, f); !errors.Is(err, ErrMalformed) {
			t.Errorf("Append(%T) = %v, want ErrMalformed", f, err)
		}
	}
}

func TestReadFrameBounds(t *testing.T) {
	// A header announcing more than MaxFrame is refused before any
	// allocation for it.
	hdr := []byte{byte(TypePing), 0xff, 0xff, 0xff}
	if _, _, err := ReadFrame(bytes.NewReader(hdr), nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversize header: %v, want ErrTooLarge", err)
	}
	// A frame cut short is an unexpected EOF, not a clean one.
	b, _ := Append(nil, Ping{Nonce: 1})
	if _, _, err := ReadFrame(bytes.NewReader(b[:len(b)-1]), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v, want ErrUnexpectedEOF", err)
	}
}

func TestPreamble(t *testing.T) {
	p := Preamble{Token: NewToken(), Name: "link.hd-1.kurier.test"}
	b, err := AppendPreamble(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	// Exactly the preamble is consumed; what follows stays in the stream.
	r := bytes.NewReader(append(b, "client bytes"...))
	got, err := ReadPreamble(r)
	if err != nil || got != p {
		t.Fatalf("ReadPreamble = %+v, %v; want %+v", got, err, p)
	}
	rest, _ := io.ReadAll(r)
	if string(rest) != "client bytes" {
		t.Errorf("left in stream: %q", rest)
	}
	for _, bad := range [][]byte{
		append([]byte("XXXX"), b[4:]...),                  // magic
		append(append([]byte{}, b[:36]...), 0),            // zero name length
		append(append([]byte{}, b[:36]...), MaxName+1, 1), // name too long
	} {
		if _, err := ReadPreamble(bytes.NewReader(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ReadPreamble(%q) = %v, want ErrMalformed", bad[:8], err)
		}
	}
	if _, err := ReadPreamble(bytes.NewReader(b[:20])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated preamble: %v", err)
	}
}

func TestTokenNeverPrintsSecret(t *testing.T) {
	tok := NewToken()
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("x", "token", tok)
	secret := tok[16:]
	for _, s := range []string{logs.String(), tok.String()} {
		if strings.Contains(s, string(secret)) || strings.Contains(strings.ToLower(s), hexOf(secret)) || strings.Contains(s, hexOf(tok[4:16])) {
			t.Errorf("token rendering leaks it: %q", s)
		}
	}
	if tok == NewToken() {
		t.Error("two fresh tokens are equal")
	}
	u := tok
	u[31] ^= 1
	if tok.Matches(u) || !tok.Matches(tok) {
		t.Error("Matches is wrong")
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

func BenchmarkReadFrame(b *testing.B) {
	enc, _ := Append(nil, Incoming{Token: NewToken(), Name: "hd-1.kurier.test"})
	r := bytes.NewReader(enc)
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		r.Reset(enc)
		var err error
		if _, buf, err = ReadFrame(r, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, fr := range sampleFrames() {
		b, _ := Append(nil, fr)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, _, err := ReadFrame(bytes.NewReader(data), nil)
		if err != nil {
			return
		}
		// Anything accepted re-encodes to the same bytes.
		enc, err := Append(nil, fr)
		if err != nil {
			t.Fatalf("decoded %#v does not re-encode: %v", fr, err)
		}
		n := frameHeader + (int(data[1])<<16 | int(data[2])<<8 | int(data[3]))
		if !bytes.Equal(enc, data[:n]) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", enc, data[:n])
		}
	})
}

func FuzzPreamble(f *testing.F) {
	b, _ := AppendPreamble(nil, Preamble{Token: NewToken(), Name: "hd-1.kurier.test"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		p, err := ReadPreamble(r)
		if err != nil {
			return
		}
		enc, err := AppendPreamble(nil, p)
		if err != nil {
			t.Fatalf("accepted preamble does not re-encode: %v", err)
		}
		if consumed := len(data) - r.Len(); !bytes.Equal(enc, data[:consumed]) {
			t.Fatalf("consumed %d bytes, re-encoding is %x", consumed, enc)
		}
	})
}
