package sdk_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

type query struct {
	Location string `json:"location"`
}

type guestList struct {
	Location string   `json:"location"`
	Caller   string   `json:"caller"`
	Guests   []string `json:"guests"`
}

// TestCallTyped: the office calls the vendor's guest-lists service with a
// typed result; the vendor's software is a Mux served as the callback. A
// payload that claims another sender changes nothing.
func TestCallTyped(t *testing.T) {
	vendorMux := &sdk.Mux{Logger: testLogger(t)}
	vendorMux.Handle("guest-lists", func(ctx context.Context, m *sdk.Message) (any, error) {
		var q query
		if err := m.Decode(&q); err != nil {
			return nil, err
		}
		if m.Kind != sdk.KindRequest || m.ID.IsZero() || m.Deadline.IsZero() {
			return nil, fmt.Errorf("message %+v", m)
		}
		return guestList{Location: q.Location, Caller: m.From, Guests: []string{"Erika Mustermann"}}, nil
	})
	ms := epstest.DefaultMembers()
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{Members: ms})
	office := client(n.Member("hd-1"))

	params := map[string]any{
		"location": "Café Rot",
		// Claims to be someone else: ignored, the sender is the verified
		// certificate, and the SDK reads it only from the endpoint server.
		"from": "vendor-b", "Kurier-From": "vendor-b", "caller": "spiffe://kurier.test/provider/vendor-b",
	}
	got, err := sdk.Call[guestList](t.Context(), office, "vendor-a", "guest-lists", params)
	if err != nil {
		t.Fatal(err)
	}
	if got.Caller != "hd-1" || got.Location != "Café Rot" || len(got.Guests) != 1 {
		t.Errorf("Call = %+v", got)
	}

	pong, err := office.Ping(t.Context())
	if err != nil || pong.Member != "spiffe://kurier.test/health-office/hd-1" || pong.Version == "" {
		t.Errorf("Ping = %+v, %v", pong, err)
	}
	dir, err := office.Directory(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	v, ok := dir.Member("vendor-a")
	if dir.Self != "hd-1" || !ok || len(v.SealKeys) != 1 || len(v.Callable) != 1 || v.Callable[0] != "guest-lists" || v.Role != pki.RoleProvider {
		t.Errorf("Directory = %+v", dir)
	}
}

// TestErrors: every failure arrives as an error matching its sentinel.
func TestErrors(t *testing.T) {
	vendorMux := &sdk.Mux{Logger: testLogger(t)}
	vendorMux.Handle("slow", func(ctx context.Context, m *sdk.Message) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	vendorMux.Handle("coded", func(ctx context.Context, m *sdk.Message) (any, error) {
		return nil, sdk.NewError(4001, "case closed", map[string]int{"case": 17})
	})
	vendorMux.Handle("strict", func(ctx context.Context, m *sdk.Message) (any, error) {
		var q query
		return nil, m.Decode(&q)
	})
	vendorMux.Handle("broken", func(ctx context.Context, m *sdk.Message) (any, error) {
		return nil, errors.New("database password hunter2 rejected")
	})
	vendorMux.Handle("panics", func(ctx context.Context, m *sdk.Message) (any, error) {
		panic("boom")
	})
	ms := []epstest.MemberConfig{
		{Name: "hd-1", Role: pki.RoleHealthOffice, Token: "office-token"},
		{Name: "vendor-a", Role: pki.RoleProvider, Services: []string{"admin", "broken", "coded", "panics", "slow", "strict", "unhandled"}},
		{Name: "vendor-b", Role: pki.RoleProvider, Services: []string{"guest-lists"}, Offline: true},
	}
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{
		Members: ms,
		Permissions: []pki.Permission{
			{Caller: "member:hd-1", Callee: "member:vendor-a", Services: []string{"broken", "coded", "panics", "slow", "strict", "unhandled"}},
			{Caller: "member:hd-1", Callee: "member:vendor-b", Services: []string{"guest-lists"}},
		},
		Configure: func(name string, cfg *eps.Config) {
			if name == "hd-1" {
				cfg.SyncTimeout = 2 * time.Second
				cfg.MaxBody = 64 << 10
			}
		},
		ConfigureStore: func(name string, cfg *store.Config) { cfg.Outbox.PerPeer = 1 },
	})
	office := client(n.Member("hd-1"))
	call := func(member, service string, params any) func() error {
		return func() error {
			_, err := sdk.Call[any](t.Context(), office, member, service, params)
			return err
		}
	}
	for _, tt := range []struct {
		name string
		do   func() error
		want error
		code int // if not 0, the *sdk.Error's code
	}{
		{"service the directory does not allow", call("vendor-a", "admin", nil), sdk.ErrNotAllowed, -32001},
		{"unknown member", call("nobody", "guest-lists", nil), sdk.ErrUnknownMember, -32002},
		{"member offline", call("vendor-b", "guest-lists", nil), sdk.ErrUnavailable, -32003},
		{"callee too slow", call("vendor-a", "slow", nil), sdk.ErrTimeout, -32004},
		{"params too large for the local API", call("vendor-a", "strict", map[string]string{"x": strings.Repeat("x", 100<<10)}), sdk.ErrTooLarge, -32006},
		{"no handler for the service", call("vendor-a", "unhandled", nil), sdk.ErrMethodNotFound, -32601},
		{"params the handler cannot decode", call("vendor-a", "strict", map[string]int{"location": 7}), sdk.ErrInvalidParams, -32602},
		{"handler fails", call("vendor-a", "broken", nil), sdk.ErrInternal, -32603},
		{"handler panics", call("vendor-a", "panics", nil), sdk.ErrInternal, -32603},
		{"software's own code", call("vendor-a", "coded", nil), nil, 4001},
		{"wrong token", func() error {
			_, err := (&sdk.Client{URL: n.Member("hd-1").API(), Token: "wrong"}).Ping(t.Context())
			return err
		}, sdk.ErrNotAllowed, -32001},
		{"send to a service the directory does not allow", func() error {
			_, err := office.Send(t.Context(), "vendor-a", "admin", nil, sdk.SendOptions{})
			return err
		}, sdk.ErrNotAllowed, -32001},
		{"deadline in the past", func() error {
			_, err := office.Send(t.Context(), "vendor-b", "guest-lists", nil, sdk.SendOptions{Deadline: time.Now().Add(-time.Minute)})
			return err
		}, sdk.ErrInvalidParams, -32602},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v does not match %v", err, tt.want)
			}
			if e, ok := errors.AsType[*sdk.Error](err); !ok || e.Code != tt.code {
				t.Errorf("error %v (%T), want an *sdk.Error with code %d", err, err, tt.code)
			}
		})
	}

	t.Run("detail of a software error", func(t *testing.T) {
		_, err := sdk.Call[any](t.Context(), office, "vendor-a", "coded", nil)
		e, _ := errors.AsType[*sdk.Error](err)
		if e == nil || e.Message != "case closed" || string(e.Data) != `{"case":17}` {
			t.Errorf("error %#v", e)
		}
		_, err = sdk.Call[any](t.Context(), office, "vendor-a", "broken", nil)
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("an internal error leaked its detail: %v", err)
		}
	})

	t.Run("queue full, then expired", func(t *testing.T) {
		id, err := office.Send(t.Context(), "vendor-b", "guest-lists", map[string]any{}, sdk.SendOptions{Deadline: time.Now().Add(2 * time.Second)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = office.Send(t.Context(), "vendor-b", "guest-lists", map[string]any{}, sdk.SendOptions{})
		if !errors.Is(err, sdk.ErrQueueFull) {
			t.Errorf("second Send to an offline member with a queue of 1 = %v, want ErrQueueFull", err)
		}
		d, err := office.Wait(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State != sdk.StateExpired || !errors.Is(d.Err(), sdk.ErrExpired) || d.To != "vendor-b" || d.Receipt != nil {
			t.Errorf("Wait = %+v (Err %v), want expired", d, d.Err())
		}
	})
}

// TestPoller: the office's software polls; the vendor's takes callbacks.
// An asynchronous request, its response, the delivery report, a
// notification and a synchronous call all reach the right handler.
func TestPoller(t *testing.T) {
	type seen struct {
		kind   sdk.Kind
		from   string
		sync   bool
		params string
	}
	officeSaw := make(chan seen, 16)
	officeMux := &sdk.Mux{Logger: testLogger(t)}
	officeMux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		officeSaw <- seen{m.Kind, m.From, m.Sync, string(m.Params)}
		return map[string]string{"case": "A-17", "from": m.From}, nil
	})
	vendorMux, responses := responseMux(t)
	reports := make(chan *sdk.Report, 4)
	vendorMux.HandleStatus(func(ctx context.Context, r *sdk.Report) error {
		reports <- r
		return nil
	})
	ms := epstest.DefaultMembers()
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{Members: ms})
	office, vendor := client(n.Member("hd-1")), client(n.Member("vendor-a"))
	runPoller(t, &sdk.Poller{Client: office, Mux: officeMux, Wait: 5 * time.Second})

	id, err := vendor.Send(t.Context(), "hd-1", "submit", map[string]string{"guest": "Erika"}, sdk.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s := receive(t, officeSaw, "the request"); s.kind != sdk.KindRequest || s.from != "vendor-a" || s.sync || !strings.Contains(s.params, "Erika") {
		t.Errorf("office saw %+v", s)
	}
	resp := receive(t, responses, "the response")
	var res map[string]string
	if err := resp.Result(&res); err != nil || res["case"] != "A-17" || res["from"] != "vendor-a" {
		t.Errorf("response result %v, %v", res, err)
	}
	if resp.From != "hd-1" || resp.CorrelationID != id || resp.Kind != sdk.KindResponse {
		t.Errorf("response %+v, want from hd-1 answering %s", resp, id)
	}
	if r := receive(t, reports, "the delivery report"); r.MessageID != id || r.State != sdk.StateDelivered || r.To != "hd-1" {
		t.Errorf("report %+v", r)
	}
	d, err := vendor.Status(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if d.State != sdk.StateDelivered || d.Err() != nil || d.Receipt == nil || d.Receipt.MessageID != id ||
		d.Receipt.From != "vendor-a" || d.Receipt.To != "hd-1" || len(d.Receipt.Sig) == 0 || len(d.Receipt.Raw) == 0 {
		t.Errorf("Status = %+v, receipt %+v", d, d.Receipt)
	}

	if _, err := vendor.Send(t.Context(), "hd-1", "submit", []string{"note"}, sdk.SendOptions{Notification: true}); err != nil {
		t.Fatal(err)
	}
	if s := receive(t, officeSaw, "the notification"); s.kind != sdk.KindNotification || s.from != "vendor-a" {
		t.Errorf("office saw %+v", s)
	}

	got, err := sdk.Call[map[string]string](t.Context(), vendor, "hd-1", "submit", map[string]int{"sync": 1})
	if err != nil {
		t.Fatal(err)
	}
	if s := receive(t, officeSaw, "the sync call"); s.kind != sdk.KindRequest || !s.sync || got["case"] != "A-17" {
		t.Errorf("office saw %+v, caller got %v", s, got)
	}
}

// TestDedupEPSRestartBetweenCallbackAndAck: the receiving endpoint server
// restarts while the software is handling a callback, so the message is
// delivered again, overlapping the first delivery. The handler runs once,
// and the requester gets the answer of that one run.
func TestDedupEPSRestartBetweenCallbackAndAck(t *testing.T) {
	var runs atomic.Int32
	entered, release := make(chan struct{}, 1), make(chan struct{})
	officeMux := blockingMux(t, &runs, entered, release)
	var callbacks atomic.Int32
	cb := officeMux.Handler(sdk.CallbackOptions{Token: cbToken})
	vendorMux, responses := responseMux(t)
	ms := epstest.DefaultMembers()
	withCallback(ms, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		callbacks.Add(1)
		cb.ServeHTTP(w, r)
	}))
	n := epstest.New(t, epstest.Options{Members: ms})
	vendor := client(n.Member("vendor-a"))
	runPoller(t, &sdk.Poller{Client: vendor, Mux: vendorMux, Wait: 2 * time.Second})

	id, err := vendor.Send(t.Context(), "hd-1", "submit", map[string]string{"guest": "Erika"}, sdk.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	receive(t, entered, "the first delivery")
	n.Restart("hd-1") // the first callback is cut off; the message is not acknowledged
	waitUntil(t, "the second delivery", func() bool { return callbacks.Load() >= 2 })
	close(release)

	checkAnsweredOnce(t, responses, id, &runs)
}

// TestDedupPollerEPSRestart: as above with polling: the endpoint server's
// leases are lost in its restart, so the Poller fetches the message again
// while its handler still runs.
func TestDedupPollerEPSRestart(t *testing.T) {
	var runs atomic.Int32
	entered, release := make(chan struct{}, 1), make(chan struct{})
	officeMux := blockingMux(t, &runs, entered, release)
	vendorMux, responses := responseMux(t)
	ms := epstest.DefaultMembers()
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{Members: ms})
	rec := &recorder{}
	office := &sdk.Client{URL: n.Member("hd-1").API(), HTTPClient: &http.Client{Transport: rec}}
	runPoller(t, &sdk.Poller{Client: office, Mux: officeMux, Wait: time.Second, Concurrency: 2})

	id, err := client(n.Member("vendor-a")).Send(t.Context(), "hd-1", "submit", map[string]string{"guest": "Erika"}, sdk.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	receive(t, entered, "the first delivery")
	n.Restart("hd-1")
	waitUntil(t, "the second delivery", func() bool { return rec.answersContaining([]byte(id.String())) >= 2 })
	close(release)

	checkAnsweredOnce(t, responses, id, &runs)
}

// TestDedupSoftwareRestart: the software handles a message and records it,
// but crashes before its acknowledgement reaches the endpoint server. The
// restarted software (the dedup file reopened) gets the message again and
// acknowledges it with the recorded answer, without handling it again.
func TestDedupSoftwareRestart(t *testing.T) {
	vendorMux, responses := responseMux(t)
	ms := epstest.DefaultMembers()
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{Members: ms})
	path := filepath.Join(t.TempDir(), "software-dedup.db")

	var runs atomic.Int32
	handled := make(chan struct{}, 4)
	software := func(d *sdk.Dedup) *sdk.Mux {
		mx := &sdk.Mux{Dedup: d, Logger: testLogger(t)}
		mx.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
			run := runs.Add(1)
			handled <- struct{}{}
			return map[string]int32{"run": run}, nil
		})
		return mx
	}

	// First life: every _ack fails, as if the process died right after
	// the handler's answer was recorded.
	d1, err := sdk.OpenDedup(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{failIf: []byte(`"_ack"`)}
	office1 := &sdk.Client{URL: n.Member("hd-1").API(), HTTPClient: &http.Client{Transport: rec}}
	stop := runPoller(t, &sdk.Poller{Client: office1, Mux: software(d1), Wait: time.Second, Lease: time.Second})
	id, err := client(n.Member("vendor-a")).Send(t.Context(), "hd-1", "submit", map[string]string{"guest": "Erika"}, sdk.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	receive(t, handled, "the first delivery")
	waitUntil(t, "the failed ack", func() bool { return rec.sentContains([]byte(`"_ack"`)) })
	stop()
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}

	// Second life: the message comes back after its lease.
	d2 := openDedup(t, path)
	if ok, err := d2.Handled("vendor-a", id); !ok || err != nil {
		t.Fatalf("Handled after reopening = %v, %v", ok, err)
	}
	runPoller(t, &sdk.Poller{Client: client(n.Member("hd-1")), Mux: software(d2), Wait: time.Second})
	checkAnsweredOnce(t, responses, id, &runs)
}

// TestSealed: the vendor's software seals a payload itself; its endpoint
// server only signs it. The plaintext is in no request to the vendor's
// local API, not in the vendor's store, not on the relay, and the office's
// software receives it with the vendor as sender.
func TestSealed(t *testing.T) {
	const marker, marker2 = "MARKER-sealed-by-software-0172", "MARKER-sealed-sync-0173"
	saw := make(chan *sdk.Message, 4)
	officeMux := &sdk.Mux{Logger: testLogger(t)}
	officeMux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		saw <- m
		return map[string]string{"case": "A-18"}, nil
	})
	n := epstest.New(t, epstest.Options{Tap: true})
	runPoller(t, &sdk.Poller{Client: client(n.Member("hd-1")), Mux: officeMux, Wait: 5 * time.Second})
	rec := &recorder{}
	vendor := &sdk.Client{URL: n.Member("vendor-a").API(), HTTPClient: &http.Client{Transport: rec}}

	env, id, err := sdk.SealFor(t.Context(), vendor, "hd-1", "submit", map[string]string{"guest": marker})
	if err != nil {
		t.Fatal(err)
	}
	if env.Signed() {
		t.Error("SealFor signed the envelope")
	}
	got, err := vendor.SendSealed(t.Context(), "hd-1", "submit", env, id, sdk.SendOptions{Deadline: time.Now().Add(time.Hour)})
	if err != nil || got != id {
		t.Fatalf("SendSealed = %s, %v; want %s", got, err, id)
	}
	m := receive(t, saw, "the sealed request")
	if m.ID != id || m.From != "vendor-a" || !bytes.Contains(m.Params, []byte(marker)) {
		t.Errorf("office received %+v", m)
	}
	if d, err := vendor.Wait(t.Context(), id); err != nil || d.State != sdk.StateDelivered {
		t.Errorf("Wait = %+v, %v", d, err)
	}

	env2, id2, err := sdk.SealFor(t.Context(), vendor, "hd-1", "submit", map[string]string{"guest": marker2})
	if err != nil {
		t.Fatal(err)
	}
	res, err := sdk.CallSealed[map[string]string](t.Context(), vendor, "hd-1", "submit", env2, id2)
	if err != nil || res["case"] != "A-18" {
		t.Fatalf("CallSealed = %v, %v", res, err)
	}
	if m := receive(t, saw, "the sealed call"); m.ID != id2 || !m.Sync || !bytes.Contains(m.Params, []byte(marker2)) {
		t.Errorf("office received %+v", m)
	}

	for _, mk := range []string{marker, marker2} {
		if rec.sentContains([]byte(mk)) {
			t.Errorf("%s reached the vendor's endpoint server in the clear", mk)
		}
		if n.Tap().Contains([]byte(mk)) {
			t.Errorf("%s crossed the relay in the clear", mk)
		}
		for _, member := range n.Members() {
			if b, err := os.ReadFile(member.StorePath()); err != nil || bytes.Contains(b, []byte(mk)) {
				t.Errorf("%s's store holds %s in the clear (read error %v)", member.Name(), mk, err)
			}
		}
	}
	if !rec.sentContains([]byte(`"sealed"`)) || n.Tap().Len() == 0 {
		t.Error("the test saw no sealed request or no relay traffic: it proves nothing")
	}

	t.Run("refusals", func(t *testing.T) {
		if _, _, err := sdk.SealFor(t.Context(), vendor, "nobody", "submit", nil); !errors.Is(err, sdk.ErrUnknownMember) {
			t.Errorf("SealFor unknown member = %v", err)
		}
		if _, _, err := sdk.SealFor(t.Context(), vendor, "hd-1", "other", nil); !errors.Is(err, sdk.ErrNotAllowed) {
			t.Errorf("SealFor service not allowed = %v", err)
		}
		if _, err := vendor.SendSealed(t.Context(), "hd-1", "submit", env, id, sdk.SendOptions{Notification: true}); !errors.Is(err, sdk.ErrInvalidParams) {
			t.Errorf("SendSealed as notification = %v", err)
		}
		// The same envelope and id again: a retry, answered with the message
		// already queued, not a second message.
		if again, err := vendor.SendSealed(t.Context(), "hd-1", "submit", env, id, sdk.SendOptions{}); err != nil || again != id {
			t.Errorf("SendSealed twice = %v, %v; want the same message id", again, err)
		}
	})
}

// TestConcurrentCalls: many goroutines share one Client and get their own
// answers.
func TestConcurrentCalls(t *testing.T) {
	vendorMux := &sdk.Mux{}
	vendorMux.Handle("guest-lists", func(ctx context.Context, m *sdk.Message) (any, error) {
		var q query
		return q, m.Decode(&q)
	})
	ms := epstest.DefaultMembers()
	withCallback(ms, 1, vendorMux.Handler(sdk.CallbackOptions{Token: cbToken}))
	n := epstest.New(t, epstest.Options{Members: ms})
	office := client(n.Member("hd-1"))
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			loc := fmt.Sprint("loc-", i)
			got, err := sdk.Call[query](t.Context(), office, "vendor-a", "guest-lists", query{Location: loc})
			if err != nil || got.Location != loc {
				t.Errorf("Call %d = %+v, %v", i, got, err)
			}
		})
	}
	wg.Wait()
}

// TestPassSealed: an endpoint server that passes payloads on sealed hands
// the software the envelope, which the software opens with the seal key it
// keeps.
func TestPassSealed(t *testing.T) {
	const marker = "MARKER-opened-by-software-0174"
	ms := epstest.DefaultMembers()
	ms[0].PassSealed = true
	n := epstest.New(t, epstest.Options{Members: ms})
	office := n.Member("hd-1")
	saw := make(chan string, 2)
	officeMux := &sdk.Mux{Logger: testLogger(t)}
	officeMux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
		var p map[string]string
		if err := m.Decode(&p); !errors.Is(err, sdk.ErrSealed) || m.Sealed == nil {
			return nil, fmt.Errorf("Decode of a sealed payload = %v", err)
		}
		if err := m.Open("hd-1", []pki.SealPrivateKey{office.SealKey()}); err != nil {
			return nil, err
		}
		if err := m.Decode(&p); err != nil {
			return nil, err
		}
		saw <- p["guest"]
		return "ok", nil
	})
	runPoller(t, &sdk.Poller{Client: client(office), Mux: officeMux, Wait: 5 * time.Second})
	vendor := client(n.Member("vendor-a"))
	id, err := vendor.Send(t.Context(), "hd-1", "submit", map[string]string{"guest": marker}, sdk.SendOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := receive(t, saw, "the opened payload"); got != marker {
		t.Errorf("software opened %q", got)
	}
	if d, err := vendor.Wait(t.Context(), id); err != nil || d.State != sdk.StateDelivered {
		t.Errorf("Wait = %+v, %v", d, err)
	}
}
