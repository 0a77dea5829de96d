package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// specHandler implements the methods used in the examples of the JSON-RPC
// 2.0 specification.
func specHandler(_ context.Context, req *Request) (any, error) {
	switch req.Method {
	case "subtract":
		var pos []int
		if json.Unmarshal(req.Params, &pos) == nil && len(pos) == 2 {
			return pos[0] - pos[1], nil
		}
		var named struct{ Minuend, Subtrahend int }
		if err := json.Unmarshal(req.Params, &named); err != nil {
			return nil, NewError(CodeInvalidParams, nil)
		}
		return named.Minuend - named.Subtrahend, nil
	case "sum", "notify_sum":
		var xs []int
		if err := json.Unmarshal(req.Params, &xs); err != nil {
			return nil, NewError(CodeInvalidParams, nil)
		}
		sum := 0
		for _, x := range xs {
			sum += x
		}
		return sum, nil
	case "update", "notify_hello":
		return nil, nil
	case "get_data":
		return []any{"hello", 5}, nil
	}
	return nil, &Error{Code: CodeMethodNotFound, Message: "Method not found"}
}

// TestSpecExamples runs every example of section 7 of the specification;
// the empty want means nothing is returned.
func TestSpecExamples(t *testing.T) {
	for _, tt := range []struct{ name, req, want string }{
		{"positional 1",
			`{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}`,
			`{"jsonrpc": "2.0", "result": 19, "id": 1}`},
		{"positional 2",
			`{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}`,
			`{"jsonrpc": "2.0", "result": -19, "id": 2}`},
		{"named 1",
			`{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}`,
			`{"jsonrpc": "2.0", "result": 19, "id": 3}`},
		{"named 2",
			`{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}`,
			`{"jsonrpc": "2.0", "result": 19, "id": 4}`},
		{"notification 1",
			`{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}`,
			``},
		{"notification 2",
			`{"jsonrpc": "2.0", "method": "foobar"}`,
			``},
		{"non-existent method",
			`{"jsonrpc": "2.0", "method": "foobar", "id": "1"}`,
			`{"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"}`},
		{"invalid JSON",
			`{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]`,
			`{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
		{"invalid Request object",
			`{"jsonrpc": "2.0", "method": 1, "params": "bar"}`,
			`{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
		{"batch, invalid JSON",
			`[
  {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
  {"jsonrpc": "2.0", "method"
]`,
			`{"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": null}`},
		{"empty array",
			`[]`,
			`{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}`},
		{"invalid batch, not empty",
			`[1]`,
			`[
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
]`},
		{"invalid batch",
			`[1,2,3]`,
			`[
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
  {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null}
]`},
		{"batch",
			`[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"} 
    ]`,
			`[
        {"jsonrpc": "2.0", "result": 7, "id": "1"},
        {"jsonrpc": "2.0", "result": 19, "id": "2"},
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": null},
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
        {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"}
    ]`},
		{"batch, all notifications",
			`[
        {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`,
			``},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, status := Serve(t.Context(), []byte(tt.req), specHandler, Options{Logger: testLogger(t)})
			if tt.want == "" {
				if status != http.StatusNoContent || got != nil {
					t.Errorf("Serve = %d %q; want 204 and nothing", status, got)
				}
				return
			}
			// Our encoding is compact, with the members in the order the
			// specification writes them, and a batch keeps request order:
			// the bytes must match exactly.
			if want := compact(t, tt.want); status != http.StatusOK || string(got) != want {
				t.Errorf("Serve = %d %s\nwant 200 %s", status, got, want)
			}
		})
	}
}

// TestServeIDEcho checks that ids come back exactly as they were sent.
func TestServeIDEcho(t *testing.T) {
	for _, id := range []string{
		`1`, `0`, `-0`, `-7`, `1.0`, `1.5`, `1e3`, `1E+3`, `-2.5e-3`,
		`123456789012345678901234567890`, // beyond int64 and float64 precision
		`9007199254740993`,               // 2^53+1: float64 would round it
		`1e400`,                          // beyond float64 range
		`"1"`, `""`, `"abc"`, `"\u0031"`, `"a\"b\\c"`, `"\ud83d\ude00"`, `"é"`, `"null"`,
		`null`,
	} {
		t.Run(id, func(t *testing.T) {
			body := `{"jsonrpc":"2.0","method":"m","id":` + id + `}`
			got, _ := Serve(t.Context(), []byte(body), echo, Options{})
			want := `{"jsonrpc":"2.0","result":["m",null],"id":` + id + `}`
			if string(got) != want {
				t.Errorf("Serve(%s)\n = %s\nwant %s", body, got, want)
			}
			// The same in a batch, next to an invalid element.
			got, _ = Serve(t.Context(), []byte(`[`+body+`,{"id":`+id+`}]`), echo, Options{})
			want = `[` + want + `,{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":` + id + `}]`
			if string(got) != want {
				t.Errorf("Serve(batch)\n = %s\nwant %s", got, want)
			}
		})
	}
}

// TestServeInvalidElements checks the id given to invalid elements and that
// the valid elements of the batch still run.
func TestServeInvalidElements(t *testing.T) {
	const inv = `"error":{"code":-32600,"message":"Invalid Request"}`
	for _, tt := range []struct{ name, req, want string }{
		{"id kept when valid", `{"jsonrpc":"2.0","id":7}`, `{"jsonrpc":"2.0",` + inv + `,"id":7}`},
		{"wrong version", `{"jsonrpc":"1.0","method":"m","id":"x"}`, `{"jsonrpc":"2.0",` + inv + `,"id":"x"}`},
		{"version as number", `{"jsonrpc":2.0,"method":"m","id":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"no version", `{"method":"m","id":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"params null", `{"jsonrpc":"2.0","method":"m","params":null,"id":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"params string", `{"jsonrpc":"2.0","method":"m","params":"x","id":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"extra member", `{"jsonrpc":"2.0","method":"m","id":1,"x":0}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"duplicate method", `{"jsonrpc":"2.0","method":"a","method":"b","id":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":1}`},
		{"duplicate id", `{"jsonrpc":"2.0","method":"m","id":1,"id":2}`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"duplicate by escape", `{"jsonrpc":"2.0","method":"m","id":1,"\u0069d":2}`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"id bool", `{"jsonrpc":"2.0","method":"m","id":true}`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"id object", `{"jsonrpc":"2.0","method":"m","id":{}}`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"notification invalid", `{"jsonrpc":"2.0","method":1}`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"scalar", `"x"`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"null", `null`, `{"jsonrpc":"2.0",` + inv + `,"id":null}`},
		{"nested batch", `[[]]`, `[{"jsonrpc":"2.0",` + inv + `,"id":null}]`},
		{"mixed batch",
			`[{"jsonrpc":"2.0","method":"a","id":1},{"jsonrpc":"2.0","id":2},{"jsonrpc":"2.0","method":"c","id":3},{"jsonrpc":"2.0","method":"n"}]`,
			`[{"jsonrpc":"2.0","result":["a",null],"id":1},{"jsonrpc":"2.0",` + inv + `,"id":2},{"jsonrpc":"2.0","result":["c",null],"id":3}]`},
		{"escaped names", `{"jsonr\u0070c":"2\u002e0","\u006dethod":"\u0061","id":1}`, `{"jsonrpc":"2.0","result":["a",null],"id":1}`},
		{"white space", " \t\r\n{ \"jsonrpc\" : \"2.0\" , \"method\" : \"m\" , \"params\" : [ 1 , 2 ] , \"id\" : 1 } \n",
			`{"jsonrpc":"2.0","result":["m",[1,2]],"id":1}`},
		{"empty method", `{"jsonrpc":"2.0","method":"","id":1}`, `{"jsonrpc":"2.0","result":["",null],"id":1}`},
		{"parse error: trailing data", `{"jsonrpc":"2.0","method":"m","id":1} {}`,
			`{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`},
		{"parse error: invalid UTF-8", "{\"jsonrpc\":\"2.0\",\"method\":\"\xff\",\"id\":1}",
			`{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`},
		{"parse error: empty body", ``, `{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`},
		{"parse error: too deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001),
			`{"jsonrpc":"2.0","error":{"code":-32700,"message":"Parse error"},"id":null}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, status := Serve(t.Context(), []byte(tt.req), echo, Options{Logger: testLogger(t)})
			if status != http.StatusOK || string(got) != tt.want {
				t.Errorf("Serve(%s)\n = %d %s\nwant 200 %s", tt.req, status, got, tt.want)
			}
		})
	}
}

func batchOf(n int, notification bool) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		if notification {
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"m%d"}`, i)
		} else {
			fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"m%d","id":%d}`, i, i)
		}
	}
	b.WriteByte(']')
	return []byte(b.String())
}

func TestServeBatchLimit(t *testing.T) {
	for _, tt := range []struct {
		name     string
		max, n   int
		wantRuns int
	}{
		{"default at limit", 0, 100, 100},
		{"default over limit", 0, 101, 0},
		{"set at limit", 3, 3, 3},
		{"set over limit", 3, 4, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var runs atomic.Int32
			h := func(ctx context.Context, req *Request) (any, error) {
				runs.Add(1)
				return 1, nil
			}
			got, _ := Serve(t.Context(), batchOf(tt.n, false), h, Options{MaxBatch: tt.max})
			if int(runs.Load()) != tt.wantRuns {
				t.Errorf("ran %d requests, want %d", runs.Load(), tt.wantRuns)
			}
			var resps []Response
			if tt.wantRuns == 0 {
				var r Response
				err := json.Unmarshal(got, &r)
				if err != nil || r.Error == nil || r.Error.Code != CodeInvalidRequest || !r.ID.IsNull() {
					t.Errorf("Serve = %s; want one Invalid Request with id null", got)
				}
			} else if err := json.Unmarshal(got, &resps); err != nil || len(resps) != tt.n {
				t.Errorf("Serve = %s (%v); want %d responses", got, err, tt.n)
			}
		})
	}
}

// TestServeConcurrency checks that a batch runs with exactly the configured
// number of elements at once, and answers in request order whatever order
// the elements finish in.
func TestServeConcurrency(t *testing.T) {
	for _, tt := range []struct {
		name        string
		concurrency int
		want        int
	}{
		{"default", 0, 8},
		{"three", 3, 3},
		{"sequential", 1, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const n = 20
				var active, peak atomic.Int32
				release := make(chan struct{})
				var mu sync.Mutex // guards started
				var started []string
				h := func(ctx context.Context, req *Request) (any, error) {
					mu.Lock()
					started = append(started, req.Method)
					mu.Unlock()
					a := active.Add(1)
					for p := peak.Load(); a > p && !peak.CompareAndSwap(p, a); p = peak.Load() {
					}
					<-release
					i, _ := strconv.Atoi(strings.TrimPrefix(req.Method, "m"))
					time.Sleep(time.Duration(n-i) * time.Millisecond) // later elements finish first
					active.Add(-1)
					return i, nil
				}
				done := make(chan []byte)
				go func() {
					got, _ := Serve(t.Context(), batchOf(n, false), h, Options{Concurrency: tt.concurrency})
					done <- got
				}()
				synctest.Wait() // every goroutine blocked: the first elements wait on release
				if got := active.Load(); int(got) != tt.want {
					t.Errorf("%d elements running at once, want %d", got, tt.want)
				}
				close(release)
				got := <-done
				if p := peak.Load(); int(p) != tt.want {
					t.Errorf("peak concurrency %d, want %d", p, tt.want)
				}
				var resps []Response
				if err := json.Unmarshal(got, &resps); err != nil || len(resps) != n {
					t.Fatalf("Serve = %s (%v)", got, err)
				}
				for i, r := range resps {
					if !r.ID.Equal(IntID(int64(i))) || string(r.Result) != strconv.Itoa(i) {
						t.Errorf("response %d = id %s result %s; want request order", i, r.ID, r.Result)
					}
				}
				if tt.concurrency == 1 {
					for i, m := range started {
						if m != "m"+strconv.Itoa(i) {
							t.Errorf("sequential batch started %v, want in order", started)
							break
						}
					}
				}
			})
		})
	}
}

// TestServeHandlerErrors checks how handler errors, panics and results are
// answered, and that internal details reach the log but not the caller.
func TestServeHandlerErrors(t *testing.T) {
	const internal = `"error":{"code":-32603,"message":"Internal error"}`
	for _, tt := range []struct {
		name    string
		result  any
		err     error
		panicV  any
		want    string // response members between jsonrpc and id
		wantLog string
	}{
		{"plain error", nil, errors.New("bbolt: disk on fire at /var/lib/secret"), nil, internal, "disk on fire"},
		{"wrapped plain error", nil, fmt.Errorf("open store: %w", errors.New("secret detail")), nil, internal, "secret detail"},
		{"Error", nil, NewError(CodeTimeout, nil), nil, `"error":{"code":-32004,"message":"Timeout"}`, ""},
		{"Error with data", nil, NewError(CodeTooLarge, map[string]int{"max": 5}),
			nil, `"error":{"code":-32006,"message":"Too large","data":{"max":5}}`, ""},
		{"wrapped Error", nil, fmt.Errorf("call hd-1: %w", &Error{Code: CodeUnavailable, Message: "Unavailable", Data: json.RawMessage(`"no route"`)}),
			nil, `"error":{"code":-32003,"message":"Unavailable","data":"no route"}`, ""},
		{"Error with invalid data", nil, &Error{Code: 1, Message: "x", Data: json.RawMessage(`{`)}, nil, internal, "not valid JSON"},
		{"typed nil Error", nil, (*Error)(nil), nil, internal, "handler failed"},
		{"unencodable result", make(chan int), nil, nil, internal, "unsupported type"},
		{"invalid raw result", json.RawMessage(`{"a":`), nil, nil, internal, "encode result"},
		{"nil result", nil, nil, nil, `"result":null`, ""},
		{"raw result", json.RawMessage(` {"a" : 1} `), nil, nil, `"result":{"a":1}`, ""},
		{"panic", nil, nil, "secret panic value", internal, "secret panic value"},
		{"panic with error", nil, nil, errors.New("boom"), internal, "boom"},
		{"result panics while encoding", panicker{}, nil, nil, internal, "MarshalJSON of panicker"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logs := new(syncBuffer)
			opts := Options{Logger: slog.New(slog.NewTextHandler(logs, nil))}
			h := func(ctx context.Context, req *Request) (any, error) {
				if tt.panicV != nil {
					panic(tt.panicV)
				}
				return tt.result, tt.err
			}
			got, _ := Serve(t.Context(), []byte(`{"jsonrpc":"2.0","method":"m","id":1}`), h, opts)
			want := `{"jsonrpc":"2.0",` + tt.want + `,"id":1}`
			if string(got) != want {
				t.Errorf("Serve = %s\nwant %s", got, want)
			}
			if !strings.Contains(logs.String(), tt.wantLog) {
				t.Errorf("log %q does not mention %q", logs.String(), tt.wantLog)
			}
			if tt.panicV != nil && !strings.Contains(logs.String(), "stack=") {
				t.Errorf("log of a panic has no stack: %q", logs.String())
			}

			// In a batch, the failure stays with its element.
			got, _ = Serve(t.Context(), []byte(`[{"jsonrpc":"2.0","method":"m","id":1},{"jsonrpc":"2.0","method":"m"},{"jsonrpc":"2.0","method":"m","id":2}]`), h, opts)
			want = `[{"jsonrpc":"2.0",` + tt.want + `,"id":1},{"jsonrpc":"2.0",` + tt.want + `,"id":2}]`
			if string(got) != want {
				t.Errorf("Serve(batch) = %s\nwant %s", got, want)
			}
		})
	}
}

type panicker struct{}

func (panicker) MarshalJSON() ([]byte, error) { panic("MarshalJSON of panicker") }

// TestServeNotifications checks that notifications run and get nothing
// back.
func TestServeNotifications(t *testing.T) {
	var mu sync.Mutex // guards ran
	ran := map[string]bool{}
	h := func(ctx context.Context, req *Request) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		ran[req.Method] = true
		if req.Method == "m1" {
			return nil, errors.New("fails quietly")
		}
		return nil, NewError(CodeMethodNotFound, nil)
	}
	got, status := Serve(t.Context(), batchOf(5, true), h, Options{Logger: testLogger(t)})
	if status != http.StatusNoContent || got != nil {
		t.Errorf("Serve = %d %q; want 204 and nothing", status, got)
	}
	if len(ran) != 5 {
		t.Errorf("ran %v, want all five", ran)
	}
	got, status = Serve(t.Context(), []byte(`{"jsonrpc":"2.0","method":"m1"}`), h, Options{})
	if status != http.StatusNoContent || got != nil {
		t.Errorf("Serve = %d %q; want 204 and nothing", status, got)
	}
}

// TestServeCanceled checks that nothing runs once ctx has ended, and that
// the requests are still answered.
func TestServeCanceled(t *testing.T) {
	for _, concurrency := range []int{1, 8} {
		t.Run(strconv.Itoa(concurrency), func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			h := func(ctx context.Context, req *Request) (any, error) {
				t.Errorf("handler ran for %s after cancel", req.Method)
				return nil, nil
			}
			body := `[{"jsonrpc":"2.0","method":"a","id":1},{"jsonrpc":"2.0","method":"n"},{"jsonrpc":"2.0","id":2}]`
			got, _ := Serve(ctx, []byte(body), h, Options{Concurrency: concurrency})
			want := `[{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":1},` +
				`{"jsonrpc":"2.0","error":{"code":-32600,"message":"Invalid Request"},"id":2}]`
			if string(got) != want {
				t.Errorf("Serve = %s\nwant %s", got, want)
			}
		})
	}
}

// TestServeCancelMidBatch checks that a batch stops starting elements
// when ctx ends while it runs.
func TestServeCancelMidBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		var runs atomic.Int32
		h := func(ctx context.Context, req *Request) (any, error) {
			runs.Add(1)
			<-ctx.Done()
			return nil, NewError(CodeTimeout, nil)
		}
		done := make(chan []byte)
		go func() {
			got, _ := Serve(ctx, batchOf(10, false), h, Options{Concurrency: 2})
			done <- got
		}()
		synctest.Wait()
		cancel()
		got := <-done
		if n := runs.Load(); n != 2 {
			t.Errorf("%d handlers ran, want 2", n)
		}
		var resps []Response
		if err := json.Unmarshal(got, &resps); err != nil || len(resps) != 10 {
			t.Fatalf("Serve = %s (%v); want 10 responses", got, err)
		}
		for i, r := range resps {
			want := CodeInternalError
			if i < 2 {
				want = CodeTimeout
			}
			if r.Error == nil || r.Error.Code != want {
				t.Errorf("response %d = %+v, want code %d", i, r.Error, want)
			}
		}
	})
}
