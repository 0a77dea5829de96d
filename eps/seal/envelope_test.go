package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

var (
	b64enc32 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 32))
	b64ct    = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xcd}, 17))
	b64cert  = base64.StdEncoding.EncodeToString([]byte("certificate"))
	b64sig   = base64.StdEncoding.EncodeToString([]byte("signature"))
	b64inter = base64.StdEncoding.EncodeToString([]byte("intermediate"))
)

// anonJSON and signedJSON are envelopes Parse accepts (their contents
// need not decrypt or verify).
var (
	anonJSON   = `{"v":1,"kem":32,"kdf":1,"aead":1,"key_id":"x1","enc":"` + b64enc32 + `","ct":"` + b64ct + `"}`
	signedJSON = `{"v":1,"kem":32,"kdf":1,"aead":3,"key_id":"x1","enc":"` + b64enc32 + `","ct":"` + b64ct +
		`","cert":"` + b64cert + `","chain":["` + b64inter + `"],"sig":"` + b64sig + `"}`
)

// anonSlashes has '/' in its base64.
var anonSlashes = strings.Replace(anonJSON, b64enc32, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)), 1)

func TestParseAccepts(t *testing.T) {
	for _, tt := range []struct{ name, in, canonical string }{
		{"anonymous", anonJSON, anonJSON},
		{"signed", signedJSON, signedJSON},
		{"white space", " \n{ \"v\" : 1 ,\t\"kem\":32,\"kdf\":1,\"aead\":1,\"key_id\":\"x1\",\"enc\":\"" + b64enc32 + "\",\"ct\":\"" + b64ct + "\" }\n", anonJSON},
		{"other field order", `{"ct":"` + b64ct + `","enc":"` + b64enc32 + `","key_id":"x1","aead":1,"kdf":1,"kem":32,"v":1}`, anonJSON},
		{"escaped field name", strings.Replace(anonJSON, `"kdf"`, `"\u006bdf"`, 1), anonJSON},
		{"signed without chain", strings.Replace(signedJSON, `,"chain":["`+b64inter+`"]`, "", 1), strings.Replace(signedJSON, `,"chain":["`+b64inter+`"]`, "", 1)},
		{"escaped slashes, as PHP writes them", strings.ReplaceAll(anonSlashes, "/", `\/`), anonSlashes},
		{"ML-KEM-768+X25519", strings.Replace(strings.Replace(anonJSON, `"kem":32`, `"kem":25722`, 1), b64enc32, base64.StdEncoding.EncodeToString(make([]byte, 1120)), 1), ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if tt.canonical != "" && string(got) != tt.canonical {
				t.Errorf("Marshal = %s\nwant      %s", got, tt.canonical)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	r := func(old, new string) string { return strings.Replace(anonJSON, old, new, 1) }
	rs := func(old, new string) string { return strings.Replace(signedJSON, old, new, 1) }
	long := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	for _, tt := range []struct{ name, in string }{
		{"empty", ``},
		{"null", `null`},
		{"array", `[` + anonJSON + `]`},
		{"string", `"x"`},
		{"truncated", anonJSON[:len(anonJSON)-1]},
		{"trailing object", anonJSON + `{}`},
		{"trailing garbage", anonJSON + `x`},
		{"trailing comma", r(`"}`, `",}`)},
		{"unterminated string", `{"v":1,"key_id":"x1`},
		{"no colon", r(`"v":1`, `"v" 1`)},
		{"no comma", r(`"v":1,`, `"v":1 `)},
		{"tab in string", r(`"key_id":"x1"`, "\"key_id\":\"x\t1\"")},
		{"bad escape", r(`"key_id":"x1"`, `"key_id":"x\q1"`)},
		{"leading zero", r(`"kem":32`, `"kem":032`)},
		{"plus sign", r(`"kem":32`, `"kem":+32`)},
		{"true", r(`"v":1`, `"v":true`)},
		{"unknown field", r(`{`, `{"x":1,`)},
		{"unknown nested", r(`{`, `{"x":{"y":1},`)},
		{"upper-case name", r(`"kem"`, `"KEM"`)},
		{"title-case name", r(`"kem"`, `"Kem"`)},
		{"duplicate field", r(`"v":1,`, `"v":1,"v":1,`)},
		{"duplicate, escaped", r(`"v":1,`, `"v":1,"\u0076":1,`)},
		{"missing v", r(`"v":1,`, ``)},
		{"missing kem", r(`"kem":32,`, ``)},
		{"missing key_id", r(`"key_id":"x1",`, ``)},
		{"missing enc", r(`"enc":"`+b64enc32+`",`, ``)},
		{"missing ct", r(`,"ct":"`+b64ct+`"`, ``)},
		{"null v", r(`"v":1`, `"v":null`)},
		{"null cert", r(`}`, `,"cert":null}`)},
		{"string v", r(`"v":1`, `"v":"1"`)},
		{"v 2", r(`"v":1`, `"v":2`)},
		{"v 0", r(`"v":1`, `"v":0`)},
		{"v 1.0", r(`"v":1`, `"v":1.0`)},
		{"v 1e0", r(`"v":1`, `"v":1e0`)},
		{"v -1", r(`"v":1`, `"v":-1`)},
		{"v 65537", r(`"v":1`, `"v":65537`)},
		{"kem unknown", r(`"kem":32`, `"kem":16`)},
		{"kem ML-KEM-768 alone", r(`"kem":32`, `"kem":65`)},
		{"kem 32.0", r(`"kem":32`, `"kem":32.0`)},
		{"kdf SHA-384", r(`"kdf":1`, `"kdf":2`)},
		{"aead export-only", r(`"aead":1`, `"aead":65535`)},
		{"aead 0", r(`"aead":1`, `"aead":0`)},
		{"key_id empty", r(`"key_id":"x1"`, `"key_id":""`)},
		{"key_id upper", r(`"key_id":"x1"`, `"key_id":"X1"`)},
		{"key_id NUL", r(`"key_id":"x1"`, `"key_id":"x\u00001"`)},
		{"key_id long", r(`"key_id":"x1"`, `"key_id":"`+strings.Repeat("a", 65)+`"`)},
		{"key_id number", r(`"key_id":"x1"`, `"key_id":1`)},
		{"enc short", r(b64enc32, long(31))},
		{"enc long", r(b64enc32, long(33))},
		{"enc of the other KEM", r(b64enc32, long(1120))},
		{"enc empty", r(`"enc":"`+b64enc32+`"`, `"enc":""`)},
		{"ct below tag size", r(b64ct, long(15))},
		{"ct not a string", r(`"ct":"`+b64ct+`"`, `"ct":[1]`)},
		{"base64 unpadded", r(`"ct":"`+b64ct+`"`, `"ct":"`+strings.TrimRight(b64ct, "=")+`"`)},
		{"base64 URL alphabet", r(b64enc32, base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16)))},
		{"base64 padding bits", r(b64ct, paddingBits(b64ct))},
		{"base64 line break", r(b64enc32, b64enc32[:8]+`\n`+b64enc32[8:])},
		{"base64 CR", r(b64enc32, b64enc32[:8]+`\r`+b64enc32[8:])},
		{"base64 space", r(b64enc32, b64enc32[:8]+` `+b64enc32[8:])},
		{"cert without sig", rs(`,"sig":"`+b64sig+`"`, ``)},
		{"sig without cert", rs(`"cert":"`+b64cert+`",`, ``)},
		{"chain without cert", r(`}`, `,"chain":["`+b64inter+`"]}`)},
		{"chain empty", rs(`["`+b64inter+`"]`, `[]`)},
		{"chain too long", rs(`["`+b64inter+`"]`, `["`+strings.Repeat(b64inter+`","`, 4)+b64inter+`"]`)},
		{"chain entry empty", rs(`["`+b64inter+`"]`, `[""]`)},
		{"chain entry null", rs(`["`+b64inter+`"]`, `[null]`)},
		{"chain not an array", rs(`["`+b64inter+`"]`, `"`+b64inter+`"`)},
		{"chain entry too long", rs(`["`+b64inter+`"]`, `["`+long(maxCert+1)+`"]`)},
		{"cert empty", rs(`"cert":"`+b64cert+`"`, `"cert":""`)},
		{"cert too long", rs(b64cert, long(maxCert+1))},
		{"sig too long", rs(b64sig, long(maxSig+1))},
		{"not UTF-8", r(`"key_id"`, "\"key_id\xff\"")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := Parse([]byte(tt.in)); !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%.80q) = %+v, %v; want ErrMalformed", tt.in, e, err)
			}
		})
	}
}

// paddingBits sets the unused low bit of the last base64 digit of s, which
// must end in padding: a non-canonical encoding of the same bytes.
func paddingBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	i := strings.TrimRight(s, "=")
	last := strings.IndexByte(alphabet, i[len(i)-1])
	return i[:len(i)-1] + string(alphabet[last|1]) + s[len(i):]
}

func TestSizeBounds(t *testing.T) {
	// Parse checks the size before anything else: this is not even JSON.
	big := make([]byte, MaxSize+1)
	if _, err := Parse(big); !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrMalformed) {
		t.Errorf("Parse(MaxSize+1 bytes) = %v, want ErrTooLarge and ErrMalformed", err)
	}
	// An envelope of exactly MaxSize bytes is accepted.
	pad := MaxSize - len(anonJSON)
	exact := strings.Replace(anonJSON, "{", "{"+strings.Repeat(" ", pad), 1)
	if len(exact) != MaxSize {
		t.Fatalf("test envelope is %d bytes", len(exact))
	}
	if _, err := Parse([]byte(exact)); err != nil {
		t.Errorf("Parse(MaxSize bytes) = %v", err)
	}

	n := newNet(t)
	ctx := ctxFor("vendor-a", "hd-1")
	to := n.key(t, "hd-1", "s1")
	overhead := 2048 + 4*len(n.certs["vendor-a"].Certificate[0]) + 4*len(n.certs["vendor-a"].Certificate[1])/3 + 4*1120/3
	ok := MaxSize/4*3 - overhead
	env, err := Seal(to, ctx, make([]byte, ok), n.certs["vendor-a"])
	if err != nil {
		t.Fatalf("Seal(%d bytes) = %v", ok, err)
	}
	wire, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(wire) > MaxSize || len(wire) < MaxSize-8192 {
		t.Errorf("envelope is %d bytes, want just under %d", len(wire), MaxSize)
	}
	got, err := Parse(wire)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(got, ctx, VerifyOptions{Trust: n.trust(), Now: n.clk.Now}); err != nil {
		t.Error(err)
	}
	for _, size := range []int{MaxSize/4*3 - 1000, MaxSize / 4 * 3, MaxSize} {
		if _, err := Seal(to, ctx, make([]byte, size), n.certs["vendor-a"]); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Seal(%d bytes) = %v, want ErrTooLarge", size, err)
		}
	}
	// Marshal refuses what Parse would.
	e := *env
	e.CT = append(e.CT, make([]byte, 4096)...)
	if _, err := e.Marshal(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Marshal of an oversized envelope = %v, want ErrTooLarge", err)
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	good, err := Parse([]byte(signedJSON))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		edit func(*Envelope)
	}{
		{"zero", func(e *Envelope) { *e = Envelope{} }},
		{"v 2", func(e *Envelope) { e.V = 2 }},
		{"v -1", func(e *Envelope) { e.V = -1 }},
		{"key id with quote", func(e *Envelope) { e.KeyID = `a"b` }},
		{"sig only", func(e *Envelope) { e.Cert, e.Chain = nil, nil }},
		{"empty chain", func(e *Envelope) { e.Chain = [][]byte{} }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := *good
			tt.edit(&e)
			if b, err := e.Marshal(); !errors.Is(err, ErrMalformed) {
				t.Errorf("Marshal = %s, %v; want ErrMalformed", b, err)
			}
			if b, err := json.Marshal(e); err == nil {
				t.Errorf("json.Marshal = %s, want an error", b)
			}
		})
	}
}

// TestJSONEmbedding checks that an envelope inside another document is
// encoded canonically and decoded strictly by encoding/json.
func TestJSONEmbedding(t *testing.T) {
	type message struct {
		ID     string    `json:"id"`
		Sealed Envelope  `json:"sealed"`
		Ptr    *Envelope `json:"ptr,omitempty"`
	}
	var m message
	if err := json.Unmarshal([]byte(`{"id":"x","sealed":`+signedJSON+`,"ptr":`+anonJSON+`}`), &m); err != nil {
		t.Fatal(err)
	}
	want, _ := Parse([]byte(signedJSON))
	if !reflect.DeepEqual(&m.Sealed, want) {
		t.Errorf("decoded %+v, want %+v", m.Sealed, want)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if w := `{"id":"x","sealed":` + signedJSON + `,"ptr":` + anonJSON + `}`; string(b) != w {
		t.Errorf("json.Marshal = %s\nwant %s", b, w)
	}
	bad := strings.Replace(signedJSON, `{`, `{"extra":1,`, 1)
	if err := json.Unmarshal([]byte(`{"id":"x","sealed":`+bad+`}`), &m); !errors.Is(err, ErrMalformed) {
		t.Errorf("json.Unmarshal with an unknown envelope field = %v, want ErrMalformed", err)
	}
}

func ExampleParse() {
	e, err := Parse([]byte(anonJSON))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(e.KEM == KEMX25519, e.AEAD == AEADAES128GCM, e.Signed())
	_, err = Parse([]byte(strings.Replace(anonJSON, `"kem"`, `"KEM"`, 1)))
	fmt.Println(err)
	// Output:
	// true true false
	// seal: malformed envelope: unknown field "KEM"
}
