package cluster

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kurier-net/kurier/relay/wire"
)

func sampleMessages() []message {
	tok := wire.Token{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	req := request{id: 42, from: "ra", addr: "127.0.0.1:7946"}
	return []message{
		routesMsg{origin: "ra", inc: 1, base: 7, changes: []change{{held: true, name: "hd-1.kurier.test"}, {held: false, name: "x.hd-1.kurier.test"}}},
		dirMsg{origin: "ra", inc: 1, version: 9},
		stateMsg{records: []record{
			{origin: "ra", inc: 1, version: 2, dir: 3, names: []string{"a.kurier.test", "b.kurier.test"}},
			{origin: "rb", inc: 5, version: 0, dir: 0, names: []string{}},
		}},
		forwardMsg{request: req, in: wire.Incoming{Token: tok, Name: "hd-1.kurier.test", PairAddr: "192.0.2.1:4434"}},
		forwardMsg{request: request{id: 1, from: "rb", addr: "[2001:db8::1]:7946"}, in: wire.Incoming{Token: tok, Name: "hd-1.kurier.test"}},
		fetchDirMsg{request: req, version: 3},
		pullMsg{request: req},
		refusedMsg{from: "rb", tokens: []wire.Token{tok}},
		refusedMsg{from: "rb", tokens: make([]wire.Token, maxRefused)},
		replyMsg{id: 42, from: "rb", code: codeOK, body: []byte("kurier-directory/v1\n...")},
		replyMsg{id: 43, from: "rb", code: codeNoRoute},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		t.Run(m.msgType().String(), func(t *testing.T) {
			b, err := encode(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decode(b, testLimits)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if r, ok := got.(replyMsg); ok && len(r.body) == 0 {
				r.body = nil
				got = r
			}
			if st, ok := got.(stateMsg); ok {
				for i := range st.records {
					if len(st.records[i].names) == 0 {
						st.records[i].names = []string{}
					}
				}
			}
			if !reflect.DeepEqual(got, m) {
				t.Errorf("decode(encode(m)) = %+v, want %+v", got, m)
			}
			for n := range len(b) {
				if _, err := decode(b[:n], testLimits); err == nil {
					t.Fatalf("decode of the first %d of %d bytes succeeded", n, len(b))
				}
			}
			if _, err := decode(append(b, 0), testLimits); !errors.Is(err, errMalformed) {
				t.Errorf("decode with a trailing byte = %v, want errMalformed", err)
			}
		})
	}
}

func TestDecodeRefuses(t *testing.T) {
	long := strings.Repeat("a", 300)
	for _, tt := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, errMalformed},
		{"version", []byte{2, byte(typeDir)}, errUnknown},
		{"type", []byte{1, 0x7f}, errUnknown},
		{"gossip too large", append([]byte{1, byte(typeRoutes)}, make([]byte, maxGossip)...), errTooLarge},
		{"request too large", append([]byte{1, byte(typePull)}, make([]byte, maxRequest)...), errTooLarge},
		{"uppercase route", mustEncode(t, routesMsg{origin: "ra", changes: []change{{true, "A.kurier.test"}}}), errMalformed},
		{"bad origin", mustEncode(t, dirMsg{origin: "-ra-"}), errMalformed},
		{"bad op", bytes.Replace(mustEncode(t, routesMsg{origin: "ra", changes: []change{{true, "a.kurier.test"}}}), []byte{1, 13}, []byte{2, 13}, 1), errMalformed},
		{"no changes", mustEncode(t, routesMsg{origin: "ra"}), errMalformed},
		{"version wraps", mustEncode(t, routesMsg{origin: "ra", base: ^uint64(0), changes: []change{{true, "a.kurier.test"}}}), errMalformed},
		{"reply addr not an IP", mustEncode(t, pullMsg{request{id: 1, from: "ra", addr: "relay.example:7946"}}), errMalformed},
		{"reply addr port 0", mustEncode(t, pullMsg{request{id: 1, from: "ra", addr: "127.0.0.1:0"}}), errMalformed},
		{"too many names", mustEncode(t, stateMsg{records: []record{{origin: "ra", names: manyNames(testLimits.maxNames + 1)}}}), errMalformed},
		{"claimed counts", []byte{1, byte(typeState), 0xff, 0xff, 0xff, 0xff}, errMalformed},
		{"refused without tokens", []byte{1, byte(typeRefused), 2, 'r', 'b', 0}, errMalformed},
		{"refused, too many tokens", append([]byte{1, byte(typeRefused), 2, 'r', 'b', maxRefused + 1}, make([]byte, (maxRefused+1)*32)...), errMalformed},
		{"refused, short token", append([]byte{1, byte(typeRefused), 2, 'r', 'b', 1}, make([]byte, 31)...), errMalformed},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decode(tt.b, testLimits); !errors.Is(err, tt.want) {
				t.Errorf("decode = %v, want %v", err, tt.want)
			}
		})
	}
	if _, err := encode(routesMsg{origin: "ra", changes: []change{{true, long}}}); err == nil {
		t.Error("encode of a 300-byte name succeeded")
	}
	if _, err := encode(refusedMsg{from: "ra", tokens: make([]wire.Token, maxRefused+1)}); err == nil {
		t.Errorf("encode of a refused message with %d tokens succeeded", maxRefused+1)
	}
}

func mustEncode(t *testing.T, m message) []byte {
	t.Helper()
	b, err := encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func manyNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = "n" + strings.Repeat("x", i%50) + ".kurier.test"
	}
	return out
}

// FuzzDecode checks that decode never panics on remote bytes, and that
// every message it accepts re-encodes to exactly the same bytes (the
// encoding is canonical, so nothing is accepted that we would not send).
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b, testLimits)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errTooLarge) && !errors.Is(err, errUnknown) {
				t.Fatalf("decode error %v is none of ours", err)
			}
			return
		}
		again, err := encode(m)
		if err != nil {
			t.Fatalf("encode(decode(b)): %v", err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("encode(decode(b)) = %x, want %x", again, b)
		}
	})
}

// FuzzMerge feeds decoded remote state and gossip into a table and checks
// that it never panics and its index stays consistent and bounded.
func FuzzMerge(f *testing.F) {
	for _, m := range sampleMessages() {
		b, _ := encode(m)
		f.Add(b, b)
	}
	st, _ := encode(stateMsg{records: []record{{origin: "rb", inc: 3, version: 4, names: []string{"a.kurier.test", "b.kurier.test"}}}})
	rt, _ := encode(routesMsg{origin: "rb", inc: 3, base: 4, changes: []change{{false, "a.kurier.test"}, {true, "c.kurier.test"}}})
	f.Add(st, rt)
	f.Add(rt, st)
	f.Fuzz(func(t *testing.T, first, second []byte) {
		r := newTable("ra", 1, limits{maxNames: 8, maxNameBytes: 200})
		now := time.Now()
		r.addOrigin("rb", now)
		r.addOrigin("rc", now)
		for _, b := range [][]byte{first, second, first} {
			m, err := decode(b, r.lim)
			if err != nil {
				continue
			}
			switch m := m.(type) {
			case stateMsg:
				for _, rec := range m.records {
					r.applyRecord(rec, now)
				}
			case routesMsg:
				r.applyDelta(m, now)
			case dirMsg:
				r.applyDir(m)
			}
			checkInvariants(t, r)
			r.pullsDue(now.Add(time.Hour), pullGrace)
			r.records(0, maxState)
			r.newerDirs(0)
		}
		r.dropOrigin("rb")
		checkInvariants(t, r)
	})
}
