package guestlist_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/epstest"
	"github.com/kurier-net/kurier/eps/guestlist"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/pki"
)

// marker is a guest's last name; it must never cross the relay, or rest
// in an endpoint server's store, in the clear.
const marker = "Zzyzxvogelsang"

// world is a test network: health office hd-1 (its software polls),
// provider vendor-a (callbacks) running a Vendor, provider vendor-x whose
// software answers with a list for the wrong window, and provider vendor-b
// that may call vendor-a's guest-lists (to show the Vendor's own role
// check).
type world struct {
	n      *epstest.Network
	vendor *guestlist.Vendor
	start  time.Time // the window every test asks for
	end    time.Time

	release chan struct{} // closes to let loc-block answer

	mu       sync.Mutex
	calls    map[string]int               // Guests calls per request id
	notified chan *guestlist.VendorRecord // Vendor.Notified
	offices  map[string]*guestlist.Office // by file
	stops    map[*guestlist.Office]func()
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{
		release: make(chan struct{}), calls: map[string]int{}, notified: make(chan *guestlist.VendorRecord, 16),
		offices: map[string]*guestlist.Office{}, stops: map[*guestlist.Office]func(){},
	}
	w.end = time.Now().UTC().Truncate(time.Second).Add(-time.Hour)
	w.start = w.end.Add(-3 * time.Hour)

	vmux, xmux := &sdk.Mux{}, &sdk.Mux{}
	const tok = "cb-token"
	w.n = epstest.New(t, epstest.Options{
		Tap: true,
		Members: []epstest.MemberConfig{
			{Name: "hd-1", Role: pki.RoleHealthOffice},
			{Name: "vendor-a", Role: pki.RoleProvider, Services: []string{guestlist.Service},
				Callback: vmux.Handler(sdk.CallbackOptions{Token: tok}), CallbackToken: tok},
			{Name: "vendor-x", Role: pki.RoleProvider, Services: []string{guestlist.Service},
				Callback: xmux.Handler(sdk.CallbackOptions{Token: tok}), CallbackToken: tok},
			{Name: "vendor-b", Role: pki.RoleProvider},
		},
		Permissions: []pki.Permission{
			{Caller: "role:health-office", Callee: "role:provider", Services: []string{guestlist.Service}},
			{Caller: "member:vendor-b", Callee: "member:vendor-a", Services: []string{guestlist.Service}},
		},
	})
	v, err := guestlist.OpenVendor(guestlist.VendorConfig{
		Client: client(w.n, "vendor-a"),
		Path:   filepath.Join(t.TempDir(), "vendor-a.db"),
		HasLocation: func(_ context.Context, id string) (bool, error) {
			return strings.HasPrefix(id, "loc-"), nil
		},
		Guests: w.guests,
		Notified: func(_ context.Context, r *guestlist.VendorRecord) error {
			w.notified <- r
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.CloseStore() })
	w.vendor = v
	v.Register(vmux)
	xmux.Handle(guestlist.Service, wrongWindow)
	t.Cleanup(func() {
		select {
		case <-w.release:
		default:
			close(w.release)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, stop := range w.stops {
			stop()
		}
	})
	return w
}

func client(n *epstest.Network, name string) *sdk.Client {
	m := n.Member(name)
	return &sdk.Client{URL: m.API(), Token: sdk.Token(m.Token())}
}

func guest(first, last string, from time.Time) contactdata.Guest {
	return contactdata.Guest{
		FirstName: first, LastName: last, Phone: "+49 221 1234567",
		Attendance: contactdata.Attendance{From: from, To: from.Add(time.Hour)},
	}
}

// guests is vendor-a's software: what it has recorded, by location.
func (w *world) guests(ctx context.Context, r *guestlist.Incoming) ([]contactdata.Guest, error) {
	w.mu.Lock()
	w.calls[r.Request.ID]++
	w.mu.Unlock()
	from := r.Request.Start.Add(30 * time.Minute)
	switch r.Request.LocationID {
	case "loc-1":
		return []contactdata.Guest{guest("Erika", marker, from), guest("Max", "Mustermann", from.Add(-time.Minute))}, nil
	case "loc-block":
		select {
		case <-w.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return []contactdata.Guest{guest("Erika", marker, from)}, nil
	case "loc-bad":
		g := guest("Erika", "Mustermann", from)
		g.Phone = "" // no way to reach her
		return []contactdata.Guest{guest("Max", "Mustermann", from), g}, nil
	case "loc-big":
		var gs []contactdata.Guest
		for range 2500 {
			g := guest("Erika", "Mustermann", from)
			g.Attendance.AdditionalInfo = strings.TrimSpace(strings.Repeat("Tisch 12 am Fenster. ", 90))
			gs = append(gs, g)
		}
		return gs, nil
	}
	return nil, guestlist.ErrUnknownLocation
}

// wrongWindow is vendor-x's software: it answers every request with a list
// that starts an hour before the request's window.
func wrongWindow(ctx context.Context, m *sdk.Message) (any, error) {
	var rm guestlist.RequestMessage
	if err := m.Decode(&rm); err != nil {
		return nil, err
	}
	r := rm.Request
	list := &contactdata.GuestList{
		DataRequestID: r.ID, Provider: r.Provider, LocationID: r.LocationID,
		Start: r.Start.Add(-time.Hour), End: r.End,
		Guests: []contactdata.Guest{guest("Erika", "Mustermann", r.Start)},
	}
	env, err := guestlist.SealList(rm.SealKey, m.From, list)
	if err != nil {
		return nil, err
	}
	return guestlist.Answer{DataRequestID: r.ID, GuestList: env}, nil
}

// startOffice runs hd-1's software on the file path: an Office and a
// Poller. The returned function stops both (as a restart would).
func (w *world) startOffice(t *testing.T, path string) (*guestlist.Office, func()) {
	t.Helper()
	c := client(w.n, "hd-1")
	o, err := guestlist.OpenOffice(guestlist.OfficeConfig{Client: c, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	mux := &sdk.Mux{}
	o.Register(mux)
	ctx, cancel := context.WithCancel(context.Background())
	p := &sdk.Poller{Client: c, Mux: mux, Wait: 2 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			o.CloseStore()
		})
	}
	w.mu.Lock()
	w.stops[o] = stop
	w.mu.Unlock()
	return o, stop
}

// waitRecord waits until cond holds for the office's request id.
func waitRecord(t *testing.T, o *guestlist.Office, id string, cond func(*guestlist.Record) bool) *guestlist.Record {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := o.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s: condition not met; record %+v refusal %+v", id, r, r.Refusal)
		}
		time.Sleep(10 * time.Millisecond) // polling a condition over real sockets
	}
}

func received(r *guestlist.Record) bool { return r.Request.Status == contactdata.StatusDataReceived }
func refused(r *guestlist.Record) bool  { return r.Refusal != nil }

// waitNotified waits until the vendor's software was told that request
// id became status, and the vendor's record says so (it is written after
// the hook returned).
func (w *world) waitNotified(t *testing.T, id string, status contactdata.Status) *guestlist.VendorRecord {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case r := <-w.notified:
			if r.Request.ID != id || r.Status != status {
				continue
			}
			for {
				vr, err := w.vendor.Get("hd-1", id)
				if err == nil && vr.Status == status {
					return vr
				}
				select {
				case <-timeout:
					t.Fatalf("vendor record of %s: %+v, %v", id, vr, err)
				case <-time.After(10 * time.Millisecond):
				}
			}
		case <-timeout:
			t.Fatalf("the vendor was not notified of %s becoming %s", id, status)
		}
	}
}

// waitAnswered waits until the vendor has recorded the id of its answer
// to request id (it does so once its endpoint server took the answer).
func (w *world) waitAnswered(t *testing.T, id string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if vr, err := w.vendor.Get("hd-1", id); err == nil && !vr.ResponseID.IsZero() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the vendor did not answer %s", id)
		}
	}
}

func hasField(r *guestlist.Refusal, field, rulePrefix string) bool {
	for _, f := range r.Fields {
		if f.Field == field && strings.HasPrefix(f.Rule, rulePrefix) {
			return true
		}
	}
	return false
}

func TestGuestListRequests(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	officePath := filepath.Join(t.TempDir(), "office.db")
	office, stopOffice := w.startOffice(t, officePath)
	ask := func(provider, location string) *guestlist.Record {
		t.Helper()
		r, err := office.Request(ctx, guestlist.RequestOptions{Provider: provider, LocationID: location, Start: w.start, End: w.end, Reference: "GA 53.2-0815"})
		if err != nil {
			t.Fatalf("Request(%s, %s): %v", provider, location, err)
		}
		if r.Request.Status != contactdata.StatusDataRequested || !r.Sent {
			t.Fatalf("new request %+v", r)
		}
		return r
	}

	t.Run("requested, received, closed, with receipts", func(t *testing.T) {
		r := ask("vendor-a", "loc-1")
		id := r.Request.ID
		got := waitRecord(t, office, id, received)
		if l := got.GuestList; l == nil || len(l.Guests) != 2 || l.Guests[0].LastName != marker || l.Provider != "vendor-a" || !l.Start.Equal(w.start) {
			t.Fatalf("guest list %+v", got.GuestList)
		}
		if got.Refusal != nil || got.ResponseID.IsZero() || got.ReceivedAt.IsZero() {
			t.Errorf("record %+v", got)
		}
		// Receipts: the vendor's endpoint server's for the request, the
		// office's for the answer.
		got, err := office.WaitDelivered(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := got.RequestReceipt()
		if err != nil || rc == nil || rc.From != "hd-1" || rc.To != "vendor-a" || rc.MessageID != got.MessageID || len(rc.Sig) == 0 {
			t.Fatalf("request receipt %+v, %v", rc, err)
		}
		w.waitAnswered(t, id)
		w.waitAnswered(t, id)
		vr, err := w.vendor.WaitDelivered(ctx, "hd-1", id)
		if err != nil {
			t.Fatal(err)
		}
		vrc, err := vr.ResponseReceipt()
		if err != nil || vrc == nil || vrc.From != "vendor-a" || vrc.To != "hd-1" || vrc.MessageID != vr.ResponseID || vr.ResponseID != got.ResponseID {
			t.Fatalf("response receipt %+v, %v (record %+v)", vrc, err, vr)
		}
		if vr.Status != contactdata.StatusDataReceived || vr.Guests != 2 {
			t.Errorf("vendor record %+v", vr)
		}

		// Close: the vendor is told, the office gets a receipt for that too.
		if got, err = office.Close(ctx, id); err != nil || got.Request.Status != contactdata.StatusClosed {
			t.Fatalf("Close = %+v, %v", got, err)
		}
		vr = w.waitNotified(t, id, contactdata.StatusClosed)
		if got, err = office.WaitDelivered(ctx, id); err != nil || got.Notice == nil || len(got.Notice.Receipt) == 0 {
			t.Fatalf("notice receipt: %+v, %v", got.Notice, err)
		}
		if vr.Answer != nil {
			t.Errorf("vendor record after close still holds the answer: %+v", vr)
		}
		if _, err := office.Close(ctx, id); err != nil {
			t.Errorf("closing twice = %v", err)
		}
		if _, err := office.Abort(ctx, id, "zu spät"); !errors.Is(err, contactdata.ErrTransition) {
			t.Errorf("Abort after Close = %v, want ErrTransition", err)
		}

		// The guest list never crossed the relay in the clear, and no
		// endpoint server stored it in the clear.
		tap := w.n.Tap()
		if tap.Len() == 0 {
			t.Fatal("the tap saw nothing: the test proves nothing")
		}
		if tap.Contains([]byte(marker)) {
			t.Error("the guest's name crossed the relay in the clear")
		}
		for _, m := range []string{"hd-1", "vendor-a"} {
			if b, _ := os.ReadFile(w.n.Member(m).StorePath()); bytes.Contains(b, []byte(marker)) {
				t.Errorf("%s's endpoint server stored the guest's name in the clear", m)
			}
		}
	})

	t.Run("status transitions are checked", func(t *testing.T) {
		r := ask("vendor-a", "loc-nowhere")
		if _, err := office.Close(ctx, r.Request.ID); !errors.Is(err, contactdata.ErrTransition) || !strings.Contains(err.Error(), "DATA_REQUESTED to CLOSED") {
			t.Errorf("Close before the list = %v", err)
		}
		if _, err := office.Close(ctx, "3f2a7c1e-9b4d-4e0a-8c6f-2d5b1a9e7f30"); !errors.Is(err, guestlist.ErrNotFound) {
			t.Errorf("Close of an unknown request = %v", err)
		}
		_, err := office.Request(ctx, guestlist.RequestOptions{Provider: "vendor-a", LocationID: "loc-1", Start: w.start, End: w.start.Add(15 * 24 * time.Hour)})
		if ve, ok := errors.AsType[contactdata.ValidationErrors](err); !ok || ve[0].Field != "end" {
			t.Errorf("15-day window = %v", err)
		}
		if _, err := office.Request(ctx, guestlist.RequestOptions{Provider: "vendor-b", LocationID: "loc-1", Start: w.start, End: w.end}); !errors.Is(err, sdk.ErrNotAllowed) {
			t.Errorf("request to a provider without guest-lists = %v", err)
		}
	})

	t.Run("unknown location, then abort reaches the vendor", func(t *testing.T) {
		r := ask("vendor-a", "elsewhere")
		id := r.Request.ID
		got := waitRecord(t, office, id, refused)
		if f := got.Refusal; f.Code != guestlist.CodeUnknownLocation || !f.ByProvider || !hasField(f, "request.location_id", "must be a location") || got.Request.Status != contactdata.StatusDataRequested {
			t.Fatalf("refusal %+v, status %s", f, got.Request.Status)
		}
		if got, err := office.Abort(ctx, id, "falscher Ort"); err != nil || got.Request.Status != contactdata.StatusAborted {
			t.Fatalf("Abort = %+v, %v", got, err)
		}
		if vr := w.waitNotified(t, id, contactdata.StatusAborted); vr.Reason != "falscher Ort" {
			t.Errorf("vendor record %+v", vr)
		}
	})

	t.Run("abort of an answered request", func(t *testing.T) {
		r := ask("vendor-a", "loc-1")
		waitRecord(t, office, r.Request.ID, received)
		if _, err := office.Abort(ctx, r.Request.ID, "Fall erledigt"); err != nil {
			t.Fatal(err)
		}
		w.waitNotified(t, r.Request.ID, contactdata.StatusAborted)
	})

	t.Run("bad guest lists are refused naming the field", func(t *testing.T) {
		bad := ask("vendor-a", "loc-bad")
		big := ask("vendor-a", "loc-big")
		wrong := ask("vendor-x", "loc-1")

		f := waitRecord(t, office, bad.Request.ID, refused).Refusal
		if f.Code != guestlist.CodeInvalidGuestList || !f.ByProvider || !hasField(f, "guests[1]", "must have at least one of") {
			t.Errorf("invalid list: %+v", f)
		}
		f = waitRecord(t, office, big.Request.ID, refused).Refusal
		if f.Code != -32006 || !hasField(f, "guests", "must encode to at most 4194304 bytes") {
			t.Errorf("oversized list: %+v", f)
		}
		got := waitRecord(t, office, wrong.Request.ID, refused)
		if f := got.Refusal; f.Code != guestlist.CodeInvalidGuestList || f.ByProvider || !hasField(f, "start", "must not be before the request's start") {
			t.Errorf("list for the wrong window: %+v", f)
		}
		if got.Request.Status != contactdata.StatusDataRequested || got.GuestList != nil {
			t.Errorf("a refused list changed the request: %+v", got)
		}
	})

	t.Run("requests the vendor refuses, repeats and conflicts", func(t *testing.T) {
		hd := client(w.n, "hd-1")
		key, err := pki.NewSealKey("")
		if err == nil {
			t.Fatal("NewSealKey accepted an empty id")
		}
		req := contactdata.DataRequest{
			ID: contactdata.NewRequestID(), LocationID: "loc-1", Provider: "vendor-a",
			Start: w.start, End: w.end, RequestedAt: time.Now().UTC(), Status: contactdata.StatusDataRequested,
		}
		if key, err = pki.NewSealKey(req.ID); err != nil {
			t.Fatal(err)
		}
		call := func(c *sdk.Client, params any) (*guestlist.Answer, error) {
			return sdk.Call[*guestlist.Answer](ctx, c, "vendor-a", guestlist.Service, params)
		}
		a1, err := call(hd, guestlist.RequestMessage{Request: req, SealKey: key.Public()})
		if err != nil {
			t.Fatal(err)
		}
		a2, err := call(hd, guestlist.RequestMessage{Request: req, SealKey: key.Public()})
		if err != nil {
			t.Fatal(err)
		}
		b1, _ := json.Marshal(a1)
		b2, _ := json.Marshal(a2)
		w.mu.Lock()
		n := w.calls[req.ID]
		w.mu.Unlock()
		if !bytes.Equal(b1, b2) || n != 1 {
			t.Errorf("a repeated request was not answered alike (Guests called %d times)", n)
		}
		other := req
		other.End = w.end.Add(-time.Minute)
		if _, err := call(hd, guestlist.RequestMessage{Request: other, SealKey: key.Public()}); !isCode(err, guestlist.CodeConflict) {
			t.Errorf("same id, other window = %v", err)
		}
		long := req
		long.ID = contactdata.NewRequestID()
		long.End = long.Start.Add(20 * 24 * time.Hour)
		lkey, _ := pki.NewSealKey(long.ID)
		_, err = call(hd, guestlist.RequestMessage{Request: long, SealKey: lkey.Public()})
		if !errors.Is(err, sdk.ErrInvalidParams) || !strings.Contains(err.Error(), "request.end: must be at most 14 days after start") {
			t.Errorf("20-day window = %v", err)
		}
		_, err = call(hd, guestlist.RequestMessage{Request: req, SealKey: pki.SealKey{ID: "other", KEM: key.Public().KEM, Public: key.Public().Public}})
		if !errors.Is(err, sdk.ErrInvalidParams) || !strings.Contains(err.Error(), "seal_key.id") {
			t.Errorf("key of another id = %v", err)
		}
		_, err = call(client(w.n, "vendor-b"), guestlist.RequestMessage{Request: req, SealKey: key.Public()})
		if !errors.Is(err, sdk.ErrNotAllowed) || !strings.Contains(err.Error(), "not a health office") {
			t.Errorf("a provider asking = %v", err)
		}
	})

	t.Run("office software restarts between request and answer", func(t *testing.T) {
		// One office software per endpoint server: it takes every answer
		// that arrives there.
		o, stop, path := office, stopOffice, officePath
		r, err := o.Request(ctx, guestlist.RequestOptions{Provider: "vendor-a", LocationID: "loc-block", Start: w.start, End: w.end})
		if err != nil {
			t.Fatal(err)
		}
		id := r.Request.ID
		if _, err := o.WaitDelivered(ctx, id); err != nil {
			t.Fatal(err)
		}
		stop() // the office's software goes away, its endpoint server too
		w.n.Stop("hd-1")
		close(w.release) // the vendor answers meanwhile
		w.n.Start("hd-1")
		w.waitAnswered(t, id)
		vr, err := w.vendor.WaitDelivered(ctx, "hd-1", id)
		if err != nil || len(vr.Receipt) == 0 {
			t.Fatalf("the answer did not reach the office's endpoint server: %+v, %v", vr, err)
		}
		o, _ = w.startOffice(t, path)
		if err := o.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		got := waitRecord(t, o, id, received)
		if len(got.GuestList.Guests) != 1 || got.GuestList.Guests[0].LastName != marker {
			t.Errorf("guest list after the restart %+v", got.GuestList)
		}
	})
}

func isCode(err error, code int) bool {
	e, ok := errors.AsType[*sdk.Error](err)
	return ok && e.Code == code
}
