package store

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"
)

func TestEnqueueOrder(t *testing.T) {
	s := openTest(t, Config{})
	want := map[string][]ID{}
	for i := range 40 {
		peer := []string{"hd-1", "hd-2", "vendor-a"}[i%3]
		m := newMsg(peer, Request)
		if err := s.Enqueue(m); err != nil {
			t.Fatal(err)
		}
		want[peer] = append(want[peer], m.ID)
	}
	for peer, ids := range want {
		q, err := s.Queue(peer, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []ID
		for i, o := range q {
			got = append(got, o.ID)
			if o.Seq != uint64(i) || o.State != Queued || o.Peer != peer || len(o.Sealed) == 0 {
				t.Errorf("%s[%d] = seq %d, %v, %s, %d sealed bytes", peer, i, o.Seq, o.State, o.Peer, len(o.Sealed))
			}
		}
		if !slices.Equal(got, ids) {
			t.Errorf("Queue(%s) = %v, want %v", peer, got, ids)
		}
	}

	// Delivering the head moves Next on; sequence numbers keep rising.
	head, ok, err := s.Next("hd-1")
	if err != nil || !ok || head.ID != want["hd-1"][0] {
		t.Fatalf("Next = %s, %v, %v", head.ID, ok, err)
	}
	if err := s.MarkDelivered(head.ID, []byte("receipt")); err != nil {
		t.Fatal(err)
	}
	if head, _, _ = s.Next("hd-1"); head.ID != want["hd-1"][1] {
		t.Errorf("Next after delivery = %s, want %s", head.ID, want["hd-1"][1])
	}
	m := newMsg("hd-1", Request)
	if err := s.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Get(m.ID); o.Seq != uint64(len(want["hd-1"])) {
		t.Errorf("seq after delivery = %d, want %d", o.Seq, len(want["hd-1"]))
	}
	if _, ok, err := s.Next("nobody"); ok || err != nil {
		t.Errorf("Next(nobody) = %v, %v", ok, err)
	}
	checkInvariants(t, s)
}

func TestEnqueueInvalid(t *testing.T) {
	s := openTest(t, Config{MaxSealed: 100, MaxHorizon: 24 * time.Hour})
	taken := newMsg("hd-1", Request)
	if err := s.Enqueue(taken); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		edit    func(*Message)
		wantErr error
	}{
		{"zero id", func(m *Message) { m.ID = ID{} }, ErrInvalid},
		{"kind", func(m *Message) { m.Kind = 9 }, ErrInvalid},
		{"response without correlation", func(m *Message) { m.Kind = Response }, ErrInvalid},
		{"correlation on request", func(m *Message) { m.CorrelationID = NewID() }, ErrInvalid},
		{"sync notification", func(m *Message) { m.Kind, m.Sync = Notification, true }, ErrInvalid},
		{"no deadline", func(m *Message) { m.Deadline = time.Time{} }, ErrInvalid},
		{"past deadline", func(m *Message) { m.Deadline = time.Now().Add(-time.Second) }, ErrExpired},
		{"deadline too far", func(m *Message) { m.Deadline = time.Now().Add(25 * time.Hour) }, ErrInvalid},
		{"empty envelope", func(m *Message) { m.Sealed = nil }, ErrInvalid},
		{"envelope too large", func(m *Message) { m.Sealed = make([]byte, 101) }, ErrTooLarge},
		{"bad peer", func(m *Message) { m.Peer = "HD_1" }, ErrInvalid},
		{"long peer", func(m *Message) { m.Peer = strings.Repeat("a", 64) }, ErrInvalid},
		{"bad service", func(m *Message) { m.Service = "_ping" }, ErrInvalid},
		{"taken id", func(m *Message) { m.ID = taken.ID }, ErrExists},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMsg("hd-1", Request)
			tt.edit(&m)
			if err := s.Enqueue(m); !errors.Is(err, tt.wantErr) {
				t.Errorf("Enqueue: %v, want %v", err, tt.wantErr)
			}
		})
	}
	if st, _ := s.Stats(); st.OutboxMessages != 1 {
		t.Errorf("%d messages queued, want 1", st.OutboxMessages)
	}
	checkInvariants(t, s)
}

func TestEnqueueBounds(t *testing.T) {
	for _, tt := range []struct {
		name   string
		limits Limits
		size   int      // envelope bytes
		peers  []string // recipients in turn
		want   int      // accepted before ErrQueueFull
	}{
		{"per peer", Limits{PerPeer: 3}, 10, []string{"hd-1"}, 3},
		{"total", Limits{Total: 5}, 10, []string{"hd-1", "hd-2", "hd-3"}, 5},
		{"per peer bytes", Limits{PerPeerBytes: 25}, 10, []string{"hd-1"}, 2},
		{"total bytes", Limits{TotalBytes: 35}, 10, []string{"hd-1", "hd-2"}, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openTest(t, Config{Outbox: tt.limits})
			var ids []ID
			for i := 0; ; i++ {
				m := newMsg(tt.peers[i%len(tt.peers)], Notification)
				m.Sealed = make([]byte, tt.size)
				err := s.Enqueue(m)
				if errors.Is(err, ErrQueueFull) {
					if i != tt.want {
						t.Errorf("ErrQueueFull after %d, want %d: %v", i, tt.want, err)
					}
					break
				}
				if err != nil || i > tt.want {
					t.Fatalf("Enqueue %d: %v", i, err)
				}
				ids = append(ids, m.ID)
			}
			// Finishing a message makes room again.
			if err := s.MarkExpired(ids[0]); err != nil {
				t.Fatal(err)
			}
			m := newMsg(tt.peers[0], Notification)
			m.Sealed = make([]byte, tt.size)
			if err := s.Enqueue(m); err != nil {
				t.Errorf("Enqueue after a message expired: %v", err)
			}
			checkInvariants(t, s)
		})
	}
}

func TestDeliveryStates(t *testing.T) {
	s := openTest(t, Config{})
	m := newMsg("hd-1", Request)
	if err := s.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("ü", 400) // 800 bytes
	next := time.Now().Add(time.Minute).Truncate(time.Second)
	if err := s.MarkAttempt(m.ID, errors.New(long), next); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkAttempt(m.ID, errors.New("dial hd-1: connection refused"), next); err != nil {
		t.Fatal(err)
	}
	o, err := s.Get(m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if o.State != Delivering || o.Attempts != 2 || o.LastError != "dial hd-1: connection refused" || !o.NextAttempt.Equal(next) || o.Sealed != nil {
		t.Errorf("after two attempts: %+v", o)
	}
	if err := s.MarkAttempt(m.ID, errors.New(long), next); err != nil {
		t.Fatal(err)
	}
	if o, _ = s.Get(m.ID); len(o.LastError) > maxErrorText || !utf8.ValidString(o.LastError) {
		t.Errorf("last error of %d bytes, valid UTF-8 %v", len(o.LastError), utf8.ValidString(o.LastError))
	}

	if err := s.MarkDelivered(m.ID, []byte("receipt-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkDelivered(m.ID, []byte("receipt-2")); err != nil {
		t.Errorf("MarkDelivered again: %v", err)
	}
	o, _ = s.Get(m.ID)
	if o.State != Delivered || string(o.Receipt) != "receipt-1" || o.Attempts != 3 {
		t.Errorf("delivered: %v, receipt %q, %d attempts", o.State, o.Receipt, o.Attempts)
	}
	for name, err := range map[string]error{
		"MarkAttempt": s.MarkAttempt(m.ID, errors.New("late"), time.Time{}),
		"MarkExpired": s.MarkExpired(m.ID),
		"MarkFailed":  s.MarkFailed(m.ID, errors.New("403")),
	} {
		if !errors.Is(err, ErrNotPending) {
			t.Errorf("%s on delivered: %v, want ErrNotPending", name, err)
		}
	}

	f := newMsg("hd-1", Notification)
	if err := s.Enqueue(f); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(f.ID, errors.New("403 not allowed")); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.Get(f.ID); o.State != Failed || o.LastError != "403 not allowed" {
		t.Errorf("failed: %v, %q", o.State, o.LastError)
	}
	if err := s.MarkDelivered(f.ID, []byte("r")); !errors.Is(err, ErrNotPending) {
		t.Errorf("MarkDelivered on failed: %v, want ErrNotPending", err)
	}

	unknown := NewID()
	for name, err := range map[string]error{
		"MarkAttempt":   s.MarkAttempt(unknown, nil, time.Time{}),
		"MarkDelivered": s.MarkDelivered(unknown, []byte("r")),
		"MarkExpired":   s.MarkExpired(unknown),
	} {
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("%s on unknown id: %v, want ErrNotFound", name, err)
		}
	}
	if _, err := s.Get(unknown); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown: %v", err)
	}
	if err := s.MarkDelivered(m.ID, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("MarkDelivered without receipt: %v", err)
	}
	checkInvariants(t, s)
}

func TestDue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{})
		ids := map[string][]ID{}
		for _, peer := range []string{"hd-1", "hd-2", "hd-3", "hd-1"} {
			m := newMsg(peer, Notification)
			if err := s.Enqueue(m); err != nil {
				t.Fatal(err)
			}
			ids[peer] = append(ids[peer], m.ID)
			time.Sleep(time.Second) // distinct acceptance times
		}
		due := func() ([]ID, time.Time) {
			t.Helper()
			d, next, err := s.Due(10)
			if err != nil {
				t.Fatal(err)
			}
			var got []ID
			for _, o := range d {
				got = append(got, o.ID)
			}
			return got, next
		}

		// Heads only, most overdue first.
		if got, next := due(); !slices.Equal(got, []ID{ids["hd-1"][0], ids["hd-2"][0], ids["hd-3"][0]}) || !next.IsZero() {
			t.Errorf("Due = %v, next %v", got, next)
		}

		// hd-1 fails and backs off; hd-2 backs off less.
		start := time.Now()
		s.MarkAttempt(ids["hd-1"][0], errors.New("refused"), start.Add(time.Minute))
		s.MarkAttempt(ids["hd-2"][0], errors.New("refused"), start.Add(10*time.Second))
		if got, next := due(); !slices.Equal(got, []ID{ids["hd-3"][0]}) || !next.Equal(start.Add(10*time.Second)) {
			t.Errorf("Due after backoff = %v, next %v", got, next)
		}
		time.Sleep(time.Minute)
		if got, _ := due(); !slices.Equal(got, []ID{ids["hd-3"][0], ids["hd-2"][0], ids["hd-1"][0]}) {
			t.Errorf("Due after a minute = %v", got)
		}

		// Delivering hd-1's head makes its second message the head, due
		// since it was accepted (after hd-3's).
		s.MarkDelivered(ids["hd-1"][0], []byte("r"))
		if got, _ := due(); !slices.Equal(got, []ID{ids["hd-3"][0], ids["hd-1"][1], ids["hd-2"][0]}) {
			t.Errorf("Due after delivery = %v", got)
		}
		if got, _, _ := s.Due(1); len(got) != 1 {
			t.Errorf("Due(1) returned %d", len(got))
		}
		peers, err := s.PendingPeers()
		if err != nil || !slices.Equal(peers, []string{"hd-1", "hd-2", "hd-3"}) {
			t.Errorf("PendingPeers = %v, %v", peers, err)
		}
		s.MarkExpired(ids["hd-3"][0])
		if peers, _ := s.PendingPeers(); !slices.Equal(peers, []string{"hd-1", "hd-2"}) {
			t.Errorf("PendingPeers after hd-3 expired = %v", peers)
		}
		checkInvariants(t, s)
	})
}

func TestFindRequest(t *testing.T) {
	s := openTest(t, Config{})
	req := newMsg("hd-1", Request)
	note := newMsg("hd-1", Notification)
	for _, m := range []Message{req, note} {
		if err := s.Enqueue(m); err != nil {
			t.Fatal(err)
		}
	}
	if o, err := s.FindRequest("hd-1", req.ID); err != nil || o.ID != req.ID {
		t.Errorf("FindRequest = %v, %v", o.ID, err)
	}
	s.MarkDelivered(req.ID, []byte("r"))
	if _, err := s.FindRequest("hd-1", req.ID); err != nil {
		t.Errorf("FindRequest after delivery: %v", err)
	}
	for _, tt := range []struct {
		peer string
		id   ID
	}{
		{"hd-2", req.ID},  // sent to someone else
		{"hd-1", note.ID}, // not a request
		{"hd-1", NewID()}, // never sent
	} {
		if _, err := s.FindRequest(tt.peer, tt.id); !errors.Is(err, ErrNotFound) {
			t.Errorf("FindRequest(%s, %s): %v, want ErrNotFound", tt.peer, tt.id, err)
		}
	}
}

func TestQueueLimits(t *testing.T) {
	s := openTest(t, Config{})
	for range 5 {
		if err := s.Enqueue(newMsg("hd-1", Notification)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct{ limit, want int }{{0, 0}, {-1, 0}, {3, 3}, {10, 5}} {
		if q, err := s.Queue("hd-1", tt.limit); err != nil || len(q) != tt.want {
			t.Errorf("Queue(%d) = %d messages, %v; want %d", tt.limit, len(q), err, tt.want)
		}
	}
	if q, err := s.Queue(strings.Repeat("x", 300), 10); err != nil || len(q) != 0 {
		t.Errorf("Queue(long name) = %d, %v", len(q), err)
	}
}
