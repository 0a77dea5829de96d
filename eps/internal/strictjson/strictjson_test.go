package strictjson

import (
	"errors"
	"strings"
	"testing"
)

// object reads {"a": <bool>, "b": <string>, "c": <base64 list>} with a and
// b required.
func object(in string) (a bool, b string, c [][]byte, err error) {
	names := []string{"a", "b", "c"}
	p := New([]byte(in))
	seen, err := p.Object("thing", names, func(f int) error {
		var err error
		switch f {
		case 0:
			a, err = p.Bool("a")
		case 1:
			var s []byte
			s, err = p.String("b")
			b = string(s)
		case 2:
			c, err = p.Base64List("c", 2)
		}
		return err
	})
	if err == nil {
		err = Missing(seen, names, 2)
	}
	if err == nil && !p.End() {
		err = errors.New("data after the object")
	}
	return a, b, c, err
}

func TestObject(t *testing.T) {
	a, b, c, err := object(" {\"b\" : \"x\\u00e4\\/\", \"a\":true,\n\"c\":[\"AAE=\", \"Ag==\"]} ")
	if err != nil || !a || b != "xä/" || len(c) != 2 || c[0][1] != 1 || c[1][0] != 2 {
		t.Fatalf("got %v %q %v %v", a, b, c, err)
	}
	if _, _, c, err := object(`{"a":false,"b":"","c":[]}`); err != nil || c == nil || len(c) != 0 {
		t.Fatalf("empty list: %v %v", c, err)
	}
	for _, tc := range []struct{ in, want string }{
		{`[]`, "not a JSON object"},
		{`{"a":true}`, `missing field "b"`},
		{`{"a":true,"b":"x","a":false}`, `duplicate field "a"`},
		{`{"A":true,"b":"x"}`, `unknown field "A"`},
		{`{"a":null,"b":"x"}`, "a is not true or false"},
		{`{"a":tru,"b":"x"}`, "a is not true or false"},
		{`{"a":true,"b":null}`, "b is not a string"},
		{`{"a":true,"b":"x` + "\x01" + `"}`, "control character"},
		{`{"a":true,"b":"x}`, "unterminated string"},
		{`{"a":true,"b":"\x"}`, "b: "},
		{`{"a":true "b":"x"}`, `no ',' or '}' after field "a"`},
		{`{"a" true}`, `no ':' after field name "a"`},
		{`{"a":true,"b":"x"} {}`, "data after the object"},
		{`{"a":true,"b":"x","c":["AA=="`, "no ',' or ']'"},
		{`{"a":true,"b":"x","c":["AA==","AA==","AA=="]}`, "too many entries"},
		{`{"a":true,"b":"x","c":[""]}`, "c is empty"},
		{`{"a":true,"b":"x","c":["AA"]}`, "not standard base64"},
		{`{"a":true,"b":"x","c":["AA\r\n=="]}`, "line breaks"}, // JSON escapes
		{`{"a":true,"b":"x","c":["AA\\=="]}`, "not standard base64"},
		{`{"a":true,"b":"x","c":"AA=="}`, "c is not an array"},
	} {
		_, _, _, err := object(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.in, err, tc.want)
		}
	}
}

func TestUint16(t *testing.T) {
	for in, want := range map[string]uint16{"0": 0, "7": 7, "65535": 65535} {
		if v, err := New([]byte(in)).Uint16("n"); err != nil || v != want {
			t.Errorf("%s: %d %v", in, v, err)
		}
	}
	for _, in := range []string{"", "-1", "01", "1.0", "1e0", "65536", "x"} {
		if v, err := New([]byte(in)).Uint16("n"); err == nil {
			t.Errorf("%q: accepted as %d", in, v)
		}
	}
}
