package jsonrpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
)

// HandlerFunc runs one request. It returns the result, which is encoded
// with encoding/json (a json.RawMessage is sent as it is, nil as null), or
// an error: an *Error, also wrapped, goes to the caller unchanged; any
// other error is logged and the caller gets Internal error. For a
// notification the result is dropped.
//
// A HandlerFunc must be safe for concurrent use: the elements of a batch
// run concurrently. It must not keep ctx past its return. req.Params
// aliases the body: a handler may keep it if the body is not reused, as
// HTTPHandler never reuses one; callers of Serve must say whether theirs do.
type HandlerFunc func(ctx context.Context, req *Request) (result any, err error)

// Options configures Serve and NewHTTPHandler. The zero value is ready to
// use.
type Options struct {
	// MaxBatch bounds the elements of a batch; a longer batch is answered
	// with a single Invalid Request and none of it runs. If zero, 100.
	MaxBatch int
	// Concurrency bounds the elements of one batch that run at once; 1 runs
	// them one after another in order. If zero, 8.
	Concurrency int
	// MaxBodyBytes bounds the request body over HTTP; a larger one is
	// answered with 413. If zero, 8 MiB, the largest message the network
	// carries. Serve does not use it: its caller has bounded the body.
	MaxBodyBytes int64
	// Token, if not empty, is the bearer token every HTTP request must
	// carry. Serve does not use it.
	Token Token
	// Logger receives handler errors and panics (Error) and malformed
	// requests (Debug). If nil, logs are discarded.
	Logger *slog.Logger
}

const (
	defaultMaxBatch    = 100
	defaultConcurrency = 8
	defaultMaxBody     = 8 << 20 // bytes
)

// withDefaults fills in the defaults for fields that are zero or negative.
// A nil Logger stays nil: code here checks for it rather than allocate a
// discarding one on every Serve.
func (o Options) withDefaults() Options {
	if o.MaxBatch <= 0 {
		o.MaxBatch = defaultMaxBatch
	}
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBody
	}
	return o
}

// Serve decodes body, runs its requests with h, and returns the response
// body and the HTTP status for it: 200 with a JSON body, or 204 and a nil
// body when nothing is to be answered (notifications only). The caller
// bounds the size of body. Fields of opts that are zero or negative take
// their defaults.
//
// Serve blocks until every request it started has returned. Elements that
// have not started when ctx ends are not run; a request among them is
// answered with Internal error. Serve is safe for concurrent use if h is.
func Serve(ctx context.Context, body []byte, h HandlerFunc, opts Options) (respBody []byte, status int) {
	return serve(ctx, body, h, opts.withDefaults())
}

// serve is Serve with opts already defaulted.
func serve(ctx context.Context, body []byte, h HandlerFunc, opts Options) ([]byte, int) {
	reqs, batch, errResp := decodeBody(body, opts.MaxBatch, opts.Logger)
	if errResp != nil {
		return errResp, http.StatusOK
	}
	r := runner{h: h, log: opts.Logger}
	if !batch {
		if out := r.run(ctx, &reqs[0]); out != nil {
			return out, http.StatusOK
		}
		return nil, http.StatusNoContent
	}

	outs := make([][]byte, len(reqs)) // nil for notifications
	if opts.Concurrency == 1 || len(reqs) == 1 {
		for i := range reqs {
			outs[i] = r.run(ctx, &reqs[i])
		}
	} else {
		sem := make(chan struct{}, opts.Concurrency)
		var wg sync.WaitGroup
		for i := range reqs {
			req := &reqs[i]
			if req.Err != nil || ctx.Err() != nil { // answered without a handler: no goroutine
				outs[i] = r.run(ctx, req)
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				outs[i] = r.run(ctx, req)
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				outs[i] = r.run(ctx, req)
			})
		}
		wg.Wait()
	}

	n := 1 // '[', then each response and a ',' or ']'
	for _, o := range outs {
		if o != nil {
			n += len(o) + 1
		}
	}
	if n == 1 {
		return nil, http.StatusNoContent
	}
	resp := make([]byte, 0, n)
	resp = append(resp, '[')
	for _, o := range outs {
		if o != nil {
			if len(resp) > 1 {
				resp = append(resp, ',')
			}
			resp = append(resp, o...)
		}
	}
	return append(resp, ']'), http.StatusOK
}

// runner runs single requests for Serve.
type runner struct {
	h   HandlerFunc
	log *slog.Logger
}

func (r runner) debug(msg string, args ...any) {
	if r.log != nil {
		r.log.Debug(msg, args...)
	}
}

func (r runner) error(msg string, args ...any) {
	if r.log != nil {
		r.log.Error(msg, args...)
	}
}

// errPanic stands for a handler panic, already logged.
var errPanic = errors.New("jsonrpc: handler panicked")

// run answers one decoded element: the encoded response, or nil for a
// notification. A request not yet run when ctx has ended is not run.
func (r runner) run(ctx context.Context, req *Request) []byte {
	id, idText := ID{}, "none" // idText for logs: a notification has no id
	if req.ID != nil {
		id, idText = *req.ID, req.ID.String()
	}
	if req.Err != nil {
		b, _ := appendResponse(nil, id, nil, req.Err) // our own Error: no data
		return b
	}
	if err := ctx.Err(); err != nil {
		r.debug("request not run", "rpc_method", req.Method, "rpc_id", idText, "err", err)
		if req.ID == nil {
			return nil
		}
		return errorResponse(id, CodeInternalError)
	}

	result, err := r.call(ctx, req, idText)
	if err != nil {
		e, ok := errors.AsType[*Error](err)
		switch {
		case ok && e != nil:
			if req.ID == nil {
				r.debug("notification failed", "rpc_method", req.Method, "err", err)
				return nil
			}
			b, aerr := appendResponse(nil, id, nil, e)
			if aerr == nil {
				return b
			}
			r.error("handler error not encodable", "rpc_method", req.Method, "rpc_id", idText, "err", aerr)
		case errors.Is(err, errPanic): // logged with its stack
		default:
			r.error("handler failed", "rpc_method", req.Method, "rpc_id", idText, "err", err)
		}
		if req.ID == nil {
			return nil
		}
		return errorResponse(id, CodeInternalError)
	}
	if req.ID == nil {
		return nil
	}
	b, _ := appendResponse(nil, id, result, nil) // result is valid JSON
	return b
}

// call runs the handler and encodes its result (nil for a notification),
// turning a panic in either into errPanic.
func (r runner) call(ctx context.Context, req *Request, idText string) (result []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			r.error("handler panicked", "rpc_method", req.Method, "rpc_id", idText, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			result, err = nil, errPanic
		}
	}()
	v, err := r.h(ctx, req)
	if err != nil || req.ID == nil {
		return nil, err
	}
	if result, err = json.Marshal(v); err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return result, nil
}
