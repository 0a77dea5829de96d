package jsonrpc

import (
	"encoding/json"
	"testing"
)

func mustID(t *testing.T, text string) ID {
	t.Helper()
	var id ID
	if err := id.UnmarshalJSON([]byte(text)); err != nil {
		t.Fatalf("UnmarshalJSON(%s): %v", text, err)
	}
	return id
}

func TestIDEqual(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{`1`, `1`, true},
		{`"1"`, `1`, false}, // a string is never a number
		{`"1"`, `"1"`, true},
		{`1`, `1.0`, true},
		{`1`, `1e0`, true},
		{`1`, `10e-1`, true},
		{`1`, `0.1E1`, true},
		{`100`, `1e2`, true},
		{`100`, `1E+2`, true},
		{`0`, `-0`, true},
		{`0`, `0.000e5`, true},
		{`1`, `2`, false},
		{`1`, `-1`, false},
		{`1`, `1.0000000000000000000001`, false}, // float64 would say equal
		{`9007199254740993`, `9007199254740992`, false},
		{`1e400`, `1e400`, true},
		{`1e400`, `10e399`, true},
		{`1e400`, `1e401`, false},
		{`1e123456789012345678901`, `10e123456789012345678900`, true}, // exponent beyond int64
		{`1e123456789012345678901`, `1e123456789012345678900`, false},
		{`"a"`, `"\u0061"`, true},
		{`"\/"`, `"/"`, true},
		{`"a"`, `"b"`, false},
		{`"null"`, `null`, false},
		{`null`, `null`, true},
		{`null`, `0`, false},
		{`""`, `null`, false},
	} {
		a, b := mustID(t, tt.a), mustID(t, tt.b)
		if got := a.Equal(b); got != tt.want {
			t.Errorf("%s.Equal(%s) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
		if got := b.Equal(a); got != tt.want {
			t.Errorf("%s.Equal(%s) = %v, want %v", tt.b, tt.a, got, tt.want)
		}
		if got := a.Key() == b.Key(); got != tt.want {
			t.Errorf("Key(%s) == Key(%s) is %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestIDJSON(t *testing.T) {
	for _, tt := range []struct {
		in, want string // want "" means refused
	}{
		{`1`, `1`},
		{`-1.50`, `-1.50`}, // kept as sent
		{`"x"`, `"x"`},
		{`"\u0078"`, `"\u0078"`},
		{`null`, `null`},
		{"  7 \n", `7`},
		{`true`, ``},
		{`false`, ``},
		{`{}`, ``},
		{`[1]`, ``},
		{`01`, ``},
		{`1 2`, ``},
		{``, ``},
		{"\"\xff\"", ``},
	} {
		var id ID
		err := id.UnmarshalJSON([]byte(tt.in))
		if tt.want == "" {
			if err == nil {
				t.Errorf("UnmarshalJSON(%q) accepted %s", tt.in, id)
			}
			continue
		}
		if err != nil {
			t.Errorf("UnmarshalJSON(%q): %v", tt.in, err)
			continue
		}
		got, _ := json.Marshal(id)
		if string(got) != tt.want || id.String() != tt.want {
			t.Errorf("UnmarshalJSON(%q) then Marshal = %s, String = %s; want %s", tt.in, got, id, tt.want)
		}
	}
}

func TestIDConstructors(t *testing.T) {
	for _, tt := range []struct {
		id                    ID
		text                  string
		null, isStr, isNumber bool
	}{
		{ID{}, `null`, true, false, false},
		{IntID(42), `42`, false, false, true},
		{IntID(-9223372036854775808), `-9223372036854775808`, false, false, true},
		{StringID("a\"b<"), `"a\"b\u003c"`, false, true, false},
		{StringID("\xff"), `"\ufffd"`, false, true, false},
	} {
		if got := tt.id.String(); got != tt.text {
			t.Errorf("String() = %s, want %s", got, tt.text)
		}
		if tt.id.IsNull() != tt.null || tt.id.IsString() != tt.isStr || tt.id.IsNumber() != tt.isNumber {
			t.Errorf("%s: IsNull %v IsString %v IsNumber %v", tt.text, tt.id.IsNull(), tt.id.IsString(), tt.id.IsNumber())
		}
	}
	if !StringID("a").Equal(mustID(t, `"\u0061"`)) || StringID("1").Equal(IntID(1)) {
		t.Error("StringID compares wrongly")
	}
}
