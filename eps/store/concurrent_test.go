package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrent runs every kind of operation at once: enqueuers,
// delivery workers, duplicate deliveries into the inbox, and pollers that
// acknowledge, some with a response. At the end everything is delivered
// and acknowledged exactly once.
func TestConcurrent(t *testing.T) {
	s := openTest(t, Config{})
	const (
		enqueuers = 6
		perEnq    = 40
		senders   = 4
		perSender = 40
	)
	var wg sync.WaitGroup
	var acked, answered atomic.Int64
	var deliveredIDs sync.Map // MarkDelivered is idempotent: racing workers both see nil
	var delivered atomic.Int64
	stop := make(chan struct{})
	done := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}

	for e := range enqueuers {
		wg.Go(func() {
			for i := range perEnq {
				if err := s.Enqueue(newMsg(fmt.Sprintf("hd-%d", (e+i)%3), Notification)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	for range 3 { // delivery workers racing over the same heads
		wg.Go(func() {
			for !done() {
				due, _, err := s.Due(10)
				if err != nil {
					t.Error(err)
					return
				}
				for _, o := range due {
					if err := s.MarkDelivered(o.ID, []byte("receipt")); err != nil {
						t.Error(err)
						return
					}
					if _, again := deliveredIDs.LoadOrStore(o.ID, true); !again {
						delivered.Add(1)
					}
				}
			}
		})
	}
	for snd := range senders {
		msgs := make([]Message, perSender)
		for i := range msgs {
			msgs[i] = newMsg(fmt.Sprintf("vendor-%d", snd), Request)
		}
		for range 2 { // every message is delivered twice, concurrently
			wg.Go(func() {
				for _, m := range msgs {
					if _, _, err := s.Receive(m, receipt("r")); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
	}
	for range 2 {
		wg.Go(func() {
			for !done() {
				in, err := s.Claim(5, time.Now().Add(time.Minute))
				if err != nil {
					t.Error(err)
					return
				}
				for _, m := range in {
					if m.Seq%2 == 0 {
						resp := newMsg(m.Peer, Response)
						resp.CorrelationID = m.ID
						err = s.AckAndEnqueue(m.Peer, m.ID, resp)
						answered.Add(1)
					} else {
						err = s.Ack(m.Peer, m.ID, nil)
					}
					if err != nil {
						t.Error(err)
						return
					}
					acked.Add(1)
				}
			}
		})
	}

	deadline := time.Now().Add(time.Minute)
	for acked.Load() < senders*perSender || delivered.Load() < enqueuers*perEnq+answered.Load() {
		if time.Now().After(deadline) || t.Failed() {
			close(stop)
			wg.Wait()
			t.Fatalf("after a minute: %d of %d acked, %d of %d delivered", acked.Load(), senders*perSender, delivered.Load(), enqueuers*perEnq+answered.Load())
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, not synchronizing
	}
	close(stop)
	wg.Wait()
	if st, err := s.Stats(); err != nil || st != (Stats{}) {
		t.Errorf("Stats at the end = %+v, %v; want nothing pending", st, err)
	}
	checkInvariants(t, s)
}
