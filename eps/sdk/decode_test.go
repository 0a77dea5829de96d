package sdk

import (
	"errors"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type inner struct {
		A int `json:"a"`
	}
	type params struct {
		In inner `json:"in"`
	}
	var p params
	if err := DecodeStrict([]byte(`{"in":{"a":1}}`), &p); err != nil || p.In.A != 1 {
		t.Fatalf("valid params: %+v, %v", p, err)
	}
	for _, bad := range []string{`{"in":{"a":1,"b":2}}`, `{"x":1}`, `{"in":{}} {}`, `[`, `{"in":{"a":"1"}}`} {
		if err := DecodeStrict([]byte(bad), &p); !errors.Is(err, ErrInvalidParams) {
			t.Errorf("DecodeStrict(%s) = %v, want ErrInvalidParams", bad, err)
		}
	}
	var q *params
	if err := DecodeStrict(nil, &q); err != nil || q != nil {
		t.Errorf("empty params: %v, %v; want null", q, err)
	}
}
