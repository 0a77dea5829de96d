package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The write benchmarks compare three ways to commit, at 1, 16 and 64
// concurrent writers, with 1 KiB envelopes:
//
//	group   our committer (production): every write waiting when a commit
//	        starts shares it, with no added delay
//	update  db.Update per write: one commit, two fdatasyncs, each
//	        (bbolt writes the pages, syncs, writes the meta page, syncs)
//	batch   bbolt's db.Batch: coalesces writers that arrive within
//	        MaxBatchDelay (10ms) of the first
//
// Run: go test -run '^$' -bench . -benchtime 2s ./eps/store/
// Results are in msgs/s; every write is durable before it returns.

var modes = []struct {
	name string
	mode commitMode
}{{"group", groupCommit}, {"update", soloUpdate}, {"batch", boltBatch}}

// unbounded lifts the limits so that a benchmark never fills a queue.
var unbounded = Limits{PerPeer: 1 << 30, PerPeerBytes: 1 << 50, Total: 1 << 30, TotalBytes: 1 << 50}

// parallel calls op b.N times from writers goroutines, and reports
// messages per second and per commit.
func parallel(b *testing.B, s *Store, writers int, op func(i int) error) {
	tx0 := lastTx(s)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for range writers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := op(i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	if commits := lastTx(s) - tx0; commits > 0 {
		b.ReportMetric(float64(b.N)/float64(commits), "msgs/commit")
	}
}

func benchMessages(n int, peer string, kind Kind, size int) []Message {
	sealed := make([]byte, size)
	ms := make([]Message, n)
	deadline := time.Now().Add(24 * time.Hour)
	for i := range ms {
		ms[i] = Message{ID: NewID(), Kind: kind, Peer: fmt.Sprintf("%s-%d", peer, i%8), Service: "contacts", Deadline: deadline, Sealed: sealed}
	}
	return ms
}

func BenchmarkEnqueue(b *testing.B) {
	for _, m := range modes {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", m.name, writers), func(b *testing.B) {
				s := openTest(b, Config{Outbox: unbounded})
				s.mode = m.mode
				msgs := benchMessages(b.N, "hd", Notification, 1<<10)
				parallel(b, s, writers, func(i int) error { return s.Enqueue(msgs[i]) })
			})
		}
	}
}

func BenchmarkReceive(b *testing.B) {
	receipt := func() ([]byte, error) { return make([]byte, 1<<10), nil }
	for _, m := range modes {
		for _, writers := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("%s/writers=%d", m.name, writers), func(b *testing.B) {
				s := openTest(b, Config{Inbox: unbounded})
				s.mode = m.mode
				msgs := benchMessages(b.N, "vendor", Notification, 1<<10)
				parallel(b, s, writers, func(i int) error {
					_, _, err := s.Receive(msgs[i], receipt)
					return err
				})
			})
		}
	}
}

// BenchmarkReceiveDuplicate: a retried delivery costs a read, no commit.
func BenchmarkReceiveDuplicate(b *testing.B) {
	s := openTest(b, Config{})
	m := benchMessages(1, "vendor", Notification, 1<<10)[0]
	if _, _, err := s.Receive(m, func() ([]byte, error) { return []byte("r"), nil }); err != nil {
		b.Fatal(err)
	}
	parallel(b, s, 16, func(int) error {
		_, _, err := s.Receive(m, nil)
		return err
	})
}

// BenchmarkRoundTrip is the whole life of a message on both sides:
// Enqueue and MarkDelivered at the sender, Receive and Ack at the receiver.
func BenchmarkRoundTrip(b *testing.B) {
	for _, writers := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s := openTest(b, Config{Outbox: unbounded, Inbox: unbounded})
			msgs := benchMessages(b.N, "peer", Notification, 1<<10)
			receipt := []byte("receipt")
			parallel(b, s, writers, func(i int) error {
				m := msgs[i]
				if err := s.Enqueue(m); err != nil {
					return err
				}
				if _, _, err := s.Receive(m, func() ([]byte, error) { return receipt, nil }); err != nil {
					return err
				}
				if err := s.MarkDelivered(m.ID, receipt); err != nil {
					return err
				}
				return s.Ack(m.Peer, m.ID, nil)
			})
		})
	}
}
