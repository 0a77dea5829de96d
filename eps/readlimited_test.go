package eps

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadLimited(t *testing.T) {
	body := strings.Repeat("x", 5000)
	for _, hint := range []int64{-1, 0, 10, 4999, 5000, 5001, 1 << 20} {
		for name, r := range map[string]func() *strings.Reader{"whole": func() *strings.Reader { return strings.NewReader(body) }} {
			got, err := readLimited(r(), 8000, hint)
			if err != nil || string(got) != body {
				t.Errorf("%s, hint %d: %d bytes, %v", name, hint, len(got), err)
			}
		}
		got, err := readLimited(iotest.OneByteReader(strings.NewReader(body)), 8000, hint)
		if err != nil || string(got) != body {
			t.Errorf("one byte at a time, hint %d: %d bytes, %v", hint, len(got), err)
		}
		if _, err := readLimited(strings.NewReader(body), 4999, hint); !errors.Is(err, errTooLarge) {
			t.Errorf("over the limit, hint %d: %v", hint, err)
		}
		if got, err := readLimited(strings.NewReader(body), 5000, hint); err != nil || len(got) != 5000 {
			t.Errorf("at the limit, hint %d: %d bytes, %v", hint, len(got), err)
		}
	}
	if _, err := readLimited(iotest.ErrReader(errors.New("boom")), 10, -1); err == nil || err.Error() != "boom" {
		t.Errorf("reader error: %v", err)
	}
	if got, _ := readLimited(bytes.NewReader(nil), 10, 0); len(got) != 0 {
		t.Errorf("empty body: %q", got)
	}
	// The hint sizes the buffer: one allocation for a body of the hinted
	// length.
	if n := testing.AllocsPerRun(20, func() { readLimited(strings.NewReader(body), 8000, 5000) }); n > 2 {
		t.Errorf("%v allocations for a hinted body, want at most 2", n)
	}
}
