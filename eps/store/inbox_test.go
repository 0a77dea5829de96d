package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

// noReceipt is a receiptFn for deliveries that must be recognised as
// duplicates before any receipt is made.
func noReceipt(t *testing.T) func() ([]byte, error) {
	return func() ([]byte, error) {
		t.Error("receiptFn called for a duplicate")
		return nil, errors.New("unexpected receipt")
	}
}

func TestReceiveDedup(t *testing.T) {
	s := openTest(t, Config{})
	m := newMsg("vendor-a", Request)
	r1, dup, err := s.Receive(m, receipt("first"))
	if err != nil || dup || string(r1) != "receipt:first:1" {
		t.Fatalf("Receive = %q, %v, %v", r1, dup, err)
	}
	txid := lastTx(s)
	r2, dup, err := s.Receive(m, noReceipt(t))
	if err != nil || !dup || string(r2) != string(r1) {
		t.Errorf("Receive again = %q, %v, %v; want %q, true", r2, dup, err, r1)
	}
	if err := s.Ack(m.Peer, NewID(), nil); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
	if got := lastTx(s); got != txid {
		t.Errorf("a duplicate and a refused ack committed %d transactions, want none", got-txid)
	}

	// The same id from another sender is another message.
	other := m
	other.Peer = "vendor-b"
	if _, dup, err := s.Receive(other, receipt("b")); err != nil || dup {
		t.Errorf("same id from another sender: dup %v, %v", dup, err)
	}

	// The same id with another envelope is refused, not deduplicated.
	forged := m
	forged.Sealed = []byte("something else")
	if _, _, err := s.Receive(forged, noReceipt(t)); !errors.Is(err, ErrConflict) {
		t.Errorf("reused id: %v, want ErrConflict", err)
	}

	in, err := s.Received("vendor-a", m.ID)
	if err != nil || in.Acked || string(in.Receipt) != string(r1) || in.Service != m.Service || in.Sealed != nil || in.ReceivedAt.IsZero() {
		t.Errorf("Received = %+v, %v", in, err)
	}
	if _, err := s.Received("vendor-c", m.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Received from unknown sender: %v", err)
	}
	if st, _ := s.Stats(); st.InboxMessages != 2 {
		t.Errorf("%d inbox messages, want 2", st.InboxMessages)
	}
	checkInvariants(t, s)
}

// TestReceiveRace delivers one message many times at once: it is stored
// once, and every delivery gets the same receipt.
func TestReceiveRace(t *testing.T) {
	s := openTest(t, Config{})
	for round := range 20 {
		m := newMsg("vendor-a", Notification)
		var calls atomic.Int32
		receipts := make([][]byte, 16)
		dups := make([]bool, len(receipts))
		var wg sync.WaitGroup
		for i := range receipts {
			wg.Go(func() {
				var err error
				receipts[i], dups[i], err = s.Receive(m, func() ([]byte, error) {
					return fmt.Appendf(nil, "receipt-%d", calls.Add(1)), nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if n := len(slices.DeleteFunc(slices.Clone(dups), func(d bool) bool { return d })); n != 1 {
			t.Errorf("round %d: %d deliveries stored it, want 1", round, n)
		}
		for i, r := range receipts {
			if string(r) != string(receipts[0]) {
				t.Errorf("round %d: delivery %d got receipt %q, delivery 0 %q", round, i, r, receipts[0])
			}
		}
	}
	if st, _ := s.Stats(); st.InboxMessages != 20 {
		t.Errorf("%d inbox messages, want 20", st.InboxMessages)
	}
	checkInvariants(t, s)
}

func TestReceiveBounds(t *testing.T) {
	s := openTest(t, Config{Inbox: Limits{PerPeer: 2, Total: 3}})
	var stored []Message
	for i, peer := range []string{"vendor-a", "vendor-a", "vendor-b"} {
		m := newMsg(peer, Notification)
		if _, _, err := s.Receive(m, receipt(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, m)
	}
	for _, peer := range []string{"vendor-a", "vendor-c"} { // per sender, in total
		if _, _, err := s.Receive(newMsg(peer, Notification), noReceipt(t)); !errors.Is(err, ErrInboxFull) {
			t.Errorf("Receive from %s when full: %v, want ErrInboxFull", peer, err)
		}
	}
	// A duplicate is still answered when full: it needs no room.
	if _, dup, err := s.Receive(stored[0], noReceipt(t)); err != nil || !dup {
		t.Errorf("duplicate when full: %v, %v", dup, err)
	}
	if err := s.Ack("vendor-a", stored[0].ID, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Receive(newMsg("vendor-a", Notification), receipt("x")); err != nil {
		t.Errorf("Receive after an ack made room: %v", err)
	}
	checkInvariants(t, s)
}

func TestReceiveRefused(t *testing.T) {
	s := openTest(t, Config{MaxHorizon: time.Hour})
	for _, tt := range []struct {
		name      string
		edit      func(*Message)
		receiptFn func() ([]byte, error)
		wantErr   error
	}{
		{"past deadline", func(m *Message) { m.Deadline = time.Now().Add(-time.Second) }, noReceipt(t), ErrExpired},
		{"deadline too far", func(m *Message) { m.Deadline = time.Now().Add(2*time.Hour + time.Minute) }, noReceipt(t), ErrInvalid},
		{"bad sender", func(m *Message) { m.Peer = "" }, noReceipt(t), ErrInvalid},
		{"receipt too large", func(*Message) {}, func() ([]byte, error) { return make([]byte, maxReceipt+1), nil }, ErrTooLarge},
		{"receipt failed", func(*Message) {}, func() ([]byte, error) { return nil, errExample }, errExample},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMsg("vendor-a", Notification)
			tt.edit(&m)
			if _, _, err := s.Receive(m, tt.receiptFn); !errors.Is(err, tt.wantErr) {
				t.Errorf("Receive: %v, want %v", err, tt.wantErr)
			}
		})
	}
	if st, _ := s.Stats(); st.InboxMessages != 0 {
		t.Errorf("%d stored, want 0", st.InboxMessages)
	}
	// A sender whose clock runs ahead may exceed the horizon by the margin.
	m := newMsg("vendor-a", Notification)
	m.Deadline = time.Now().Add(time.Hour + 30*time.Minute)
	if _, _, err := s.Receive(m, receipt("r")); err != nil {
		t.Errorf("Receive with the deadline inside horizon+margin: %v", err)
	}
}

var errExample = errors.New("signing key unavailable")

func TestPendingAndAck(t *testing.T) {
	s := openTest(t, Config{})
	var want []Message
	for i := range 6 {
		m := newMsg([]string{"vendor-a", "vendor-b"}[i%2], Notification)
		if _, _, err := s.Receive(m, receipt("r")); err != nil {
			t.Fatal(err)
		}
		want = append(want, m)
	}
	ids := func(in []Incoming) (got []ID) {
		for _, m := range in {
			got = append(got, m.ID)
		}
		return got
	}
	msgIDs := func(ms ...Message) (got []ID) {
		for _, m := range ms {
			got = append(got, m.ID)
		}
		return got
	}
	p, err := s.Pending(10)
	if err != nil || !slices.Equal(ids(p), msgIDs(want...)) {
		t.Fatalf("Pending = %v, %v; want arrival order %v", ids(p), err, msgIDs(want...))
	}
	for i, in := range p {
		if string(in.Sealed) != string(want[i].Sealed) || in.Peer != want[i].Peer || in.Seq != uint64(i) {
			t.Errorf("Pending[%d] = %+v", i, in)
		}
	}
	if err := s.Ack(want[2].Peer, want[2].ID, []byte(`{"ok":true}`)); err != nil {
		t.Fatal(err)
	}
	if err := s.Ack(want[2].Peer, want[2].ID, []byte(`{"second":true}`)); err != nil {
		t.Errorf("Ack again: %v", err)
	}
	if p, _ := s.Pending(10); !slices.Equal(ids(p), msgIDs(want[0], want[1], want[3], want[4], want[5])) {
		t.Errorf("Pending after ack = %v", ids(p))
	}
	if p, _ := s.Pending(2); len(p) != 2 {
		t.Errorf("Pending(2) = %d messages", len(p))
	}
	in, err := s.Received(want[2].Peer, want[2].ID)
	if err != nil || !in.Acked || in.AckedAt.IsZero() || string(in.Answer) != `{"ok":true}` || in.Sealed != nil {
		t.Errorf("Received after ack = %+v, %v", in, err)
	}
	if err := s.Ack("vendor-a", NewID(), nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ack unknown: %v", err)
	}
	if err := s.Ack("vendor-a", want[0].ID, make([]byte, maxAnswer+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Ack with a huge answer: %v", err)
	}
	// Ack takes the sender too: the id alone is not the sender's.
	if err := s.Ack("vendor-b", want[0].ID, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Ack with the wrong sender: %v", err)
	}
	checkInvariants(t, s)
}

func TestLease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{})
		var ms []Message
		for range 5 {
			m := newMsg("vendor-a", Notification)
			if _, _, err := s.Receive(m, receipt("r")); err != nil {
				t.Fatal(err)
			}
			ms = append(ms, m)
		}
		got := func(in []Incoming, err error) []ID {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			var ids []ID
			for _, m := range in {
				ids = append(ids, m.ID)
			}
			return ids
		}
		want := func(ms ...Message) []ID {
			var ids []ID
			for _, m := range ms {
				ids = append(ids, m.ID)
			}
			return ids
		}

		// Two pollers share the messages; neither sees the other's.
		a := got(s.Claim(2, time.Now().Add(30*time.Second)))
		b := got(s.Claim(10, time.Now().Add(time.Minute)))
		if !slices.Equal(a, want(ms[0], ms[1])) || !slices.Equal(b, want(ms[2], ms[3], ms[4])) {
			t.Errorf("Claim = %v and %v", a, b)
		}
		if p := got(s.Pending(10)); len(p) != 0 {
			t.Errorf("Pending while all leased = %v", p)
		}

		// Poller a acks one message and dies; the other comes back when
		// its lease ends.
		if err := s.Ack("vendor-a", ms[0].ID, nil); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Second)
		if p := got(s.Pending(10)); !slices.Equal(p, want(ms[1])) {
			t.Errorf("Pending after the first lease = %v, want %v", p, want(ms[1]))
		}
		time.Sleep(30 * time.Second)
		if p := got(s.Claim(10, time.Now().Add(time.Second))); !slices.Equal(p, want(ms[1], ms[2], ms[3], ms[4])) {
			t.Errorf("Claim after all leases = %v", p)
		}

		// Lease extends, a zero lease releases.
		if err := s.Lease("vendor-a", ms[1].ID, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := s.Lease("vendor-a", ms[2].ID, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if p := got(s.Pending(10)); !slices.Equal(p, want(ms[2])) {
			t.Errorf("Pending after Lease = %v, want %v", p, want(ms[2]))
		}
		if err := s.Lease("vendor-a", ms[0].ID, time.Now().Add(time.Hour)); !errors.Is(err, ErrNotPending) {
			t.Errorf("Lease on acked: %v", err)
		}
		if err := s.Lease("vendor-a", NewID(), time.Now().Add(time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lease on unknown: %v", err)
		}

		// Expired leases are forgotten by the sweep.
		time.Sleep(2 * time.Hour)
		if _, err := s.Sweep(); err != nil {
			t.Fatal(err)
		}
		s.leaseMu.Lock()
		n := len(s.leases)
		s.leaseMu.Unlock()
		if n != 0 {
			t.Errorf("%d leases left after they all expired", n)
		}
	})
}

func TestAckAndEnqueue(t *testing.T) {
	s := openTest(t, Config{})
	req := newMsg("vendor-a", Request)
	if _, _, err := s.Receive(req, receipt("r")); err != nil {
		t.Fatal(err)
	}
	answer := func() Message {
		m := newMsg("vendor-a", Response)
		m.CorrelationID = req.ID
		return m
	}
	resp := answer()
	if err := s.AckAndEnqueue("vendor-a", req.ID, resp); err != nil {
		t.Fatal(err)
	}
	in, err := s.Received("vendor-a", req.ID)
	if err != nil || !in.Acked || in.ResponseID != resp.ID {
		t.Errorf("request after AckAndEnqueue = %+v, %v", in, err)
	}
	o, err := s.Get(resp.ID)
	if err != nil || o.State != Queued || o.CorrelationID != req.ID || o.Peer != "vendor-a" {
		t.Errorf("response in outbox = %+v, %v", o, err)
	}

	// Software that crashed before seeing the result acks again, and the
	// EPS makes a new response: the first one stands, no second is sent.
	if err := s.AckAndEnqueue("vendor-a", req.ID, answer()); err != nil {
		t.Errorf("AckAndEnqueue again: %v", err)
	}
	if err := s.Ack("vendor-a", req.ID, nil); err != nil {
		t.Errorf("Ack after AckAndEnqueue: %v", err)
	}
	if st, _ := s.Stats(); st.OutboxMessages != 1 {
		t.Errorf("%d outbox messages, want 1", st.OutboxMessages)
	}

	note := newMsg("vendor-a", Notification)
	acked := newMsg("vendor-a", Request)
	for _, m := range []Message{note, acked} {
		if _, _, err := s.Receive(m, receipt("r")); err != nil {
			t.Fatal(err)
		}
	}
	s.Ack("vendor-a", acked.ID, nil)
	for _, tt := range []struct {
		name    string
		peer    string
		id      ID
		edit    func(*Message)
		wantErr error
	}{
		{"not a response", "vendor-a", req.ID, func(m *Message) { m.Kind, m.CorrelationID = Notification, ID{} }, ErrInvalid},
		{"wrong recipient", "vendor-a", req.ID, func(m *Message) { m.Peer = "vendor-b" }, ErrInvalid},
		{"wrong correlation", "vendor-a", req.ID, func(m *Message) { m.CorrelationID = NewID() }, ErrInvalid},
		{"answers a notification", "vendor-a", note.ID, nil, ErrInvalid},
		{"acked without response", "vendor-a", acked.ID, nil, ErrNotPending},
		{"unknown", "vendor-a", NewID(), nil, ErrNotFound},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := answer()
			m.CorrelationID = tt.id
			if tt.edit != nil {
				tt.edit(&m)
			}
			if err := s.AckAndEnqueue(tt.peer, tt.id, m); !errors.Is(err, tt.wantErr) {
				t.Errorf("AckAndEnqueue: %v, want %v", err, tt.wantErr)
			}
		})
	}
	checkInvariants(t, s)
}

// TestAckAndEnqueueFull: when the response can't be queued, the request
// stays unacknowledged.
func TestAckAndEnqueueFull(t *testing.T) {
	s := openTest(t, Config{Outbox: Limits{PerPeer: 1}})
	if err := s.Enqueue(newMsg("vendor-a", Notification)); err != nil {
		t.Fatal(err)
	}
	req := newMsg("vendor-a", Request)
	if _, _, err := s.Receive(req, receipt("r")); err != nil {
		t.Fatal(err)
	}
	resp := newMsg("vendor-a", Response)
	resp.CorrelationID = req.ID
	if err := s.AckAndEnqueue("vendor-a", req.ID, resp); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("AckAndEnqueue with a full outbox: %v, want ErrQueueFull", err)
	}
	if in, _ := s.Received("vendor-a", req.ID); in.Acked {
		t.Error("request acknowledged although its response was refused")
	}
	if p, _ := s.Pending(10); len(p) != 1 {
		t.Errorf("%d pending, want the request", len(p))
	}
	checkInvariants(t, s)
}

// lastTx returns the id of the last committed transaction.
func lastTx(s *Store) int {
	var id int
	s.db.View(func(tx *bolt.Tx) error {
		id = tx.ID()
		return nil
	})
	return id
}

// TestClaimAfterAckStaleSnapshot: a Claim whose snapshot predates an Ack
// must not hand the acknowledged message out again.
func TestClaimAfterAckStaleSnapshot(t *testing.T) {
	s := openTest(t, Config{})
	m := newMsg("vendor-1", Notification)
	if _, _, err := s.Receive(m, receipt("r")); err != nil {
		t.Fatal(err)
	}
	in, err := s.Claim(1, time.Now().Add(time.Minute))
	if err != nil || len(in) != 1 {
		t.Fatalf("Claim = %v, %v", in, err)
	}
	// Simulate the race: the Claim below reads a snapshot in which the
	// message is still pending, after the Ack committed and released the
	// lease. The held lease must still refuse it.
	if err := s.Ack(m.Peer, m.ID, nil); err != nil {
		t.Fatal(err)
	}
	key := string(inKey(m.ID, m.Peer))
	if s.tryLease(key, time.Now(), time.Now().Add(time.Minute)) {
		t.Error("an acknowledged message could be leased again")
	}
}
