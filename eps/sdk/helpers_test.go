package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/sdk"
)

const cbToken = "callback-secret"

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// client returns an SDK client of m's local API.
func client(m *epstest.Member) *sdk.Client {
	return &sdk.Client{URL: m.API(), Token: sdk.Token(m.Token())}
}

// withCallback makes mux the software of member i, by callback.
func withCallback(ms []epstest.MemberConfig, i int, h http.Handler) {
	ms[i].Callback = h
	ms[i].CallbackToken = cbToken
}

func openDedup(t *testing.T, path string) *sdk.Dedup {
	t.Helper()
	if path == "" {
		path = filepath.Join(t.TempDir(), "dedup.db")
	}
	d, err := sdk.OpenDedup(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// responseMux returns a Mux that passes the responses to service submit
// on to the channel returned.
func responseMux(t *testing.T) (*sdk.Mux, <-chan *sdk.Message) {
	responses := make(chan *sdk.Message, 4)
	mx := &sdk.Mux{Logger: testLogger(t)}
	mx.HandleResponse("submit", func(ctx context.Context, m *sdk.Message) error {
		responses <- m
		return nil
	})
	return mx, responses
}

// blockingMux returns a Mux with a Dedup whose handler of service submit
// counts its runs, signals entered and waits for release (ignoring ctx:
// the software finishes its work), then answers {"run": n}.
func blockingMux(t *testing.T, runs *atomic.Int32, entered chan<- struct{}, release <-chan struct{}) *sdk.Mux {
	mx := &sdk.Mux{Dedup: openDedup(t, ""), Logger: testLogger(t)}
	mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		n := runs.Add(1)
		entered <- struct{}{}
		<-release
		return map[string]int32{"run": n}, nil
	})
	return mx
}

// checkAnsweredOnce checks that the next response answers id with the
// result of the handler's first run, and that the handler ran once.
func checkAnsweredOnce(t *testing.T, responses <-chan *sdk.Message, id sdk.MessageID, runs *atomic.Int32) {
	t.Helper()
	resp := receive(t, responses, "the response")
	var res map[string]int32
	if err := resp.Result(&res); err != nil || res["run"] != 1 || resp.CorrelationID != id {
		t.Errorf("response %+v: %v, %v", resp, res, err)
	}
	if r := runs.Load(); r != 1 {
		t.Errorf("the handler ran %d times, want 1", r)
	}
}

// runPoller runs p until the returned stop is called or the test ends;
// Run must return nil.
func runPoller(t *testing.T, p *sdk.Poller) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := p.Run(ctx); err != nil {
			t.Errorf("Poller.Run = %v", err)
		}
	})
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// receive waits for a value on ch.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// waitUntil polls cond (over real sockets) until it holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition
	}
}

// recorder is an http.RoundTripper that keeps every request and response
// body, and can fail requests whose body contains a string.
type recorder struct {
	next http.RoundTripper

	mu       sync.Mutex // guards the fields below
	requests [][]byte
	answers  [][]byte
	failIf   []byte
}

var errInjected = errors.New("injected transport failure")

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	r.mu.Lock()
	r.requests = append(r.requests, body)
	fail := r.failIf != nil && bytes.Contains(body, r.failIf)
	r.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	next := r.next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	ans, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(ans))
	r.mu.Lock()
	r.answers = append(r.answers, ans)
	r.mu.Unlock()
	return resp, err
}

func (r *recorder) setFail(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if s == "" {
		r.failIf = nil
	} else {
		r.failIf = []byte(s)
	}
}

// sentContains reports whether any request body contained b.
func (r *recorder) sentContains(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, req := range r.requests {
		if bytes.Contains(req, b) {
			return true
		}
	}
	return false
}

// answersContaining counts the response bodies that contained b.
func (r *recorder) answersContaining(b []byte) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, a := range r.answers {
		if bytes.Contains(a, b) {
			n++
		}
	}
	return n
}
