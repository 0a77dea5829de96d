package store

import (
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	bolt "go.etcd.io/bbolt"
)

func sweep(t *testing.T, s *Store) Swept {
	t.Helper()
	n, err := s.Sweep()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestRetentionOutbox(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{Retention: time.Hour, DedupMargin: time.Hour})
		long := newMsg("hd-1", Request)
		long.Deadline = time.Now().Add(5 * time.Hour)
		short := newMsg("hd-1", Request)
		pending := newMsg("hd-2", Request)
		for _, m := range []Message{long, short, pending} {
			if err := s.Enqueue(m); err != nil {
				t.Fatal(err)
			}
		}
		s.MarkDelivered(long.ID, []byte("r"))
		s.MarkExpired(short.ID)

		time.Sleep(time.Hour)
		if n := sweep(t, s); n != (Swept{Outbox: 0}) {
			// short's deadline (1h) has not passed by the margin yet.
			t.Errorf("sweep after 1h = %+v", n)
		}
		time.Sleep(time.Hour)
		if n := sweep(t, s); n != (Swept{Outbox: 1}) {
			t.Errorf("sweep after 2h = %+v, want short's record", n)
		}
		if _, err := s.Get(short.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get after purge: %v", err)
		}
		// A response to long may still come until its deadline (5h) plus
		// the margin, whatever the retention.
		time.Sleep(3 * time.Hour)
		if _, err := s.FindRequest("hd-1", long.ID); err != nil {
			t.Errorf("FindRequest before deadline+margin: %v", err)
		}
		time.Sleep(time.Hour)
		if n := sweep(t, s); n != (Swept{Outbox: 1}) {
			t.Errorf("sweep after 6h = %+v, want long's record", n)
		}
		// Pending messages are never swept, whatever their deadline: the
		// delivery worker expires them.
		if o, err := s.Get(pending.ID); err != nil || o.State != Queued {
			t.Errorf("pending message after the sweep: %v, %v", o.State, err)
		}
		checkInvariants(t, s)
	})
}

// TestTombstones follows an inbox message through its record's life: full
// record, tombstone, gone, and shows that a retry is never stored twice.
func TestTombstones(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{Retention: time.Hour, DedupMargin: 30 * time.Minute})
		m := newMsg("vendor-a", Request)
		m.Deadline = time.Now().Add(5 * time.Hour)
		r, _, err := s.Receive(m, receipt("r"))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Ack("vendor-a", m.ID, []byte("answer")); err != nil {
			t.Fatal(err)
		}

		time.Sleep(time.Hour)
		if n := sweep(t, s); n != (Swept{Inbox: 1}) {
			t.Errorf("sweep after retention = %+v", n)
		}
		in, err := s.Received("vendor-a", m.ID)
		if err != nil || !in.Tombstone || !in.Acked || in.Answer != nil || in.Service != "" || string(in.Receipt) != string(r) || !in.Deadline.Equal(m.Deadline) {
			t.Errorf("Received after retention = %+v, %v", in, err)
		}
		// A late retry (the sender never got our receipt) is a duplicate
		// and gets the same receipt.
		if got, dup, err := s.Receive(m, noReceipt(t)); err != nil || !dup || string(got) != string(r) {
			t.Errorf("retry after retention = %q, %v, %v", got, dup, err)
		}
		if err := s.Ack("vendor-a", m.ID, nil); err != nil {
			t.Errorf("Ack on a tombstone: %v", err)
		}
		if _, err := s.Pending(10); err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, s)

		time.Sleep(4 * time.Hour) // deadline passed, margin not yet
		if n := sweep(t, s); n != (Swept{}) {
			t.Errorf("sweep inside the margin = %+v", n)
		}
		if _, dup, err := s.Receive(m, noReceipt(t)); err != nil || !dup {
			t.Errorf("retry after the deadline, inside the margin: %v, %v", dup, err)
		}
		time.Sleep(30 * time.Minute)
		if n := sweep(t, s); n != (Swept{Tombstones: 1}) {
			t.Errorf("sweep after deadline+margin = %+v", n)
		}
		if _, err := s.Received("vendor-a", m.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("Received after the tombstone went: %v", err)
		}
		// Too late for a retry to be stored again: it is past its deadline.
		if _, _, err := s.Receive(m, noReceipt(t)); !errors.Is(err, ErrExpired) {
			t.Errorf("retry after the tombstone went: %v, want ErrExpired", err)
		}
		checkInvariants(t, s)
	})
}

// TestRetentionOutlivesDeadline: when Retention ends after the deadline
// plus margin, the record goes in one step, with no tombstone phase.
func TestRetentionOutlivesDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{Retention: 24 * time.Hour})
		m := newMsg("vendor-a", Notification) // deadline in 1h
		if _, _, err := s.Receive(m, receipt("r")); err != nil {
			t.Fatal(err)
		}
		s.Ack("vendor-a", m.ID, nil)
		time.Sleep(23 * time.Hour)
		if n := sweep(t, s); n != (Swept{}) {
			t.Errorf("sweep before retention = %+v", n)
		}
		time.Sleep(time.Hour)
		if n := sweep(t, s); n != (Swept{Inbox: 1, Tombstones: 1}) {
			t.Errorf("sweep after retention = %+v", n)
		}
		checkInvariants(t, s)
	})
}

// TestSweepChunks: a backlog larger than one sweep transaction is swept
// in several, all in one call.
func TestSweepChunks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{Retention: time.Hour})
		s.sweepChunk = 50
		const n = 2*50 + 10
		receiveAcked(t, s, n)
		if _, _, err := s.Receive(newMsg("vendor-b", Notification), receipt("r")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Hour)
		if got := sweep(t, s); got != (Swept{Inbox: n}) {
			t.Errorf("Sweep = %+v, want %d trimmed", got, n)
		}
		time.Sleep(3 * time.Hour)
		if got := sweep(t, s); got != (Swept{Tombstones: n}) {
			t.Errorf("Sweep = %+v, want %d tombstones removed", got, n)
		}
		if got := sweep(t, s); got != (Swept{}) {
			t.Errorf("Sweep with nothing due = %+v", got)
		}
		if n := keys(s, bInState); n != 1 { // the pending one
			t.Errorf("%d inbox records left, want 1", n)
		}
		checkInvariants(t, s)
	})
}

// TestBackgroundSweep: the store sweeps itself every SweepInterval.
func TestBackgroundSweep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openTest(t, Config{Retention: time.Hour, SweepInterval: 10 * time.Minute})
		receiveAcked(t, s, 10)
		time.Sleep(4*time.Hour + 10*time.Minute) // deadline (3h) + margin (1h) + a tick
		synctest.Wait()
		if n := keys(s, bInState); n != 0 {
			t.Errorf("%d inbox records after the background sweeps, want 0", n)
		}
		checkInvariants(t, s)
	})
}

// receiveAcked receives and acknowledges n messages due in 3h, from 8
// goroutines so that they share commits.
func receiveAcked(t *testing.T, s *Store, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				m := newMsg("vendor-a", Notification)
				m.Deadline = time.Now().Add(3 * time.Hour)
				if _, _, err := s.Receive(m, receipt("r")); err != nil {
					t.Error(err)
					return
				}
				if err := s.Ack(m.Peer, m.ID, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// keys counts the keys in bucket b.
func keys(s *Store, b []byte) int {
	n := 0
	s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(b).Stats().KeyN
		return nil
	})
	return n
}
