package jsonrpc

import (
	"context"
	"net/http"
	"testing"
)

func BenchmarkServe(b *testing.B) {
	sum := func(_ context.Context, req *Request) (any, error) { return 3, nil }
	for _, bb := range []struct {
		name string
		body []byte
	}{
		{"single", []byte(`{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":1}`)},
		{"batch10", batchOf(10, false)},
		{"batch10/sequential", batchOf(10, false)},
	} {
		opts := Options{}
		if bb.name == "batch10/sequential" {
			opts.Concurrency = 1
		}
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				if _, status := Serve(b.Context(), bb.body, sum, opts); status != http.StatusOK {
					b.Fatal(status)
				}
			}
		})
	}
}

func BenchmarkDecodeRequests(b *testing.B) {
	body := batchOf(10, false)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		DecodeRequests(body)
	}
}
