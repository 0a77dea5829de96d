package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// openTest opens a store in a fresh directory, closed when the test ends.
// The background sweep is off unless cfg asks for it.
func openTest(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "eps.db")
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = -1
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newMsg returns a valid message of kind to peer, due in an hour.
func newMsg(peer string, kind Kind) Message {
	m := Message{
		ID:       NewID(),
		Kind:     kind,
		Peer:     peer,
		Service:  "contacts",
		Deadline: time.Now().Add(time.Hour),
	}
	m.Sealed = []byte("sealed:" + m.ID.String())
	if kind == Response {
		m.CorrelationID = NewID()
	}
	return m
}

// receipt returns a receiptFn that makes a distinct receipt on each call.
func receipt(label string) func() ([]byte, error) {
	n := 0
	return func() ([]byte, error) {
		n++
		return fmt.Appendf(nil, "receipt:%s:%d", label, n), nil
	}
}

// checkInvariants verifies bbolt's own consistency and every invariant
// the package documentation lists. It reports each violation.
func checkInvariants(t testing.TB, s *Store) {
	t.Helper()
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		for _, err := range invariantErrors(tx) {
			t.Errorf("invariant: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

type counter struct {
	count uint64
	bytes int64
}

func invariantErrors(tx *bolt.Tx) (errs []error) {
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	// Outbox.
	outPurge := map[string]bool{}
	tx.Bucket(bOutPurge).ForEach(func(k, _ []byte) error {
		outPurge[string(k[8:])] = true
		return nil
	})
	peers := map[string]counter{}
	heads := map[string]struct {
		seq uint64
		id  ID
		at  time.Time
	}{}
	var total counter
	tx.Bucket(bOutState).ForEach(func(k, v []byte) error {
		id := ID(k)
		st, err := decodeOutState(v)
		if err != nil {
			fail("out.state %s: %v", id, err)
			return nil
		}
		mv := tx.Bucket(bOutMsg).Get(k)
		if mv == nil {
			fail("out.state %s without out.msg", id)
			return nil
		}
		m, err := decodeMessage(id, mv, true)
		if err != nil {
			fail("out.msg %s: %v", id, err)
			return nil
		}
		if m.Peer != st.peer {
			fail("out %s: peer %q in msg, %q in state", id, m.Peer, st.peer)
		}
		if st.state.Pending() {
			if got := tx.Bucket(bOutQueue).Get(queueKey(st.peer, st.seq)); !bytes.Equal(got, k) {
				fail("out %s pending but queue entry (%s,%d) is %x", id, st.peer, st.seq, got)
			}
			if uint64(len(m.Sealed)) != st.sealedLen {
				fail("out %s: sealed %d bytes, state says %d", id, len(m.Sealed), st.sealedLen)
			}
			c := peers[st.peer]
			c.count++
			c.bytes += int64(st.sealedLen)
			peers[st.peer] = c
			total.count++
			total.bytes += int64(st.sealedLen)
			if h, ok := heads[st.peer]; !ok || st.seq < h.seq {
				heads[st.peer] = struct {
					seq uint64
					id  ID
					at  time.Time
				}{st.seq, id, st.nextAttempt}
			}
		} else {
			if len(m.Sealed) != 0 {
				fail("out %s is %v but keeps its envelope", id, st.state)
			}
			if !outPurge[string(k)] {
				fail("out %s is %v with no purge entry", id, st.state)
			}
		}
		if m.Kind == Response {
			if iv := tx.Bucket(bInState).Get(inKey(m.CorrelationID, m.Peer)); iv != nil {
				in, err := decodeInState(iv)
				if err == nil && (in.flags&inAcked == 0 || in.responseID != id) {
					fail("outbox response %s: its request %s from %s is not acknowledged with it (acked=%v, response %s)",
						id, m.CorrelationID, m.Peer, in.flags&inAcked != 0, in.responseID)
				}
			}
		}
		return nil
	})
	tx.Bucket(bOutMsg).ForEach(func(k, _ []byte) error {
		if tx.Bucket(bOutState).Get(k) == nil {
			fail("out.msg %x without out.state", k)
		}
		return nil
	})
	tx.Bucket(bOutQueue).ForEach(func(k, v []byte) error {
		sv := tx.Bucket(bOutState).Get(v)
		if sv == nil {
			fail("out.queue %x names missing %x", k, v)
			return nil
		}
		st, _ := decodeOutState(sv)
		if !st.state.Pending() || !bytes.Equal(queueKey(st.peer, st.seq), k) {
			fail("out.queue %x names %x in state %v at (%s,%d)", k, v, st.state, st.peer, st.seq)
		}
		return nil
	})
	tx.Bucket(bOutPeers).ForEach(func(k, v []byte) error {
		p, err := decodePeer(v, string(k))
		if err != nil {
			fail("out.peers %s: %v", k, err)
			return nil
		}
		if c := peers[string(k)]; c.count != p.count || c.bytes != p.bytes {
			fail("out.peers %s: counters %d/%d, queue holds %d/%d", k, p.count, p.bytes, c.count, c.bytes)
		}
		h, ok := heads[string(k)]
		if ok != p.hasDue || ok && tkey(h.at) != tkey(p.dueAt) {
			fail("out.peers %s: due %v at %v, head due %v at %v", k, p.hasDue, p.dueAt, ok, h.at)
		}
		if ok && p.nextSeq <= h.seq {
			fail("out.peers %s: next seq %d not above head %d", k, p.nextSeq, h.seq)
		}
		delete(peers, string(k))
		return nil
	})
	for p, c := range peers {
		fail("out: %d pending for %s but no out.peers record", c.count, p)
	}
	dues := 0
	tx.Bucket(bOutDue).ForEach(func(k, v []byte) error {
		dues++
		peer := string(k[9:])
		h, ok := heads[peer]
		if !ok || binary.BigEndian.Uint64(k) != tkey(h.at) || ID(v) != h.id {
			fail("out.due %x for %s: head is %v %s at %v", k, peer, ok, h.id, h.at)
		}
		return nil
	})
	if dues != len(heads) {
		fail("out.due has %d entries for %d recipients with pending messages", dues, len(heads))
	}
	if ot, err := getTotals(tx, keyOutTotals); err != nil || ot.count != total.count || ot.bytes != total.bytes {
		fail("out.totals %d/%d (%v), pending %d/%d", ot.count, ot.bytes, err, total.count, total.bytes)
	}

	// Inbox.
	inPurge := map[string]bool{}
	tx.Bucket(bInPurge).ForEach(func(k, _ []byte) error {
		inPurge[string(k[8:])] = true
		return nil
	})
	peers = map[string]counter{}
	total = counter{}
	it, err := getTotals(tx, keyInTotals)
	if err != nil {
		fail("in.totals: %v", err)
	}
	tx.Bucket(bInState).ForEach(func(k, v []byte) error {
		id, peer, err := splitInKey(k)
		if err != nil {
			fail("in.state %x: %v", k, err)
			return nil
		}
		st, err := decodeInState(v)
		if err != nil {
			fail("in.state %s/%s: %v", peer, id, err)
			return nil
		}
		if st.seq >= it.nextSeq {
			fail("in %s/%s: seq %d not below next %d", peer, id, st.seq, it.nextSeq)
		}
		mv := tx.Bucket(bInMsg).Get(k)
		tomb := st.flags&inTombstone != 0
		acked := st.flags&inAcked != 0
		switch {
		case tomb && mv != nil:
			fail("in %s/%s is a tombstone but keeps its record", peer, id)
		case !tomb && mv == nil:
			fail("in %s/%s has no record", peer, id)
		case tomb && !acked:
			fail("in %s/%s is an unacknowledged tombstone", peer, id)
		}
		if acked != (tx.Bucket(bInPending).Get(seqKey(st.seq)) == nil) {
			fail("in %s/%s: acked=%v but pending entry present=%v", peer, id, acked, !acked)
		}
		if acked && !inPurge[string(k)] {
			fail("in %s/%s acknowledged with no purge entry", peer, id)
		}
		if mv != nil {
			m, err := decodeMessage(id, mv, true)
			if err != nil {
				fail("in.msg %s/%s: %v", peer, id, err)
			} else if acked == (len(m.Sealed) != 0) || !acked && uint64(len(m.Sealed)) != st.sealedLen {
				fail("in %s/%s: acked=%v with %d sealed bytes (state says %d)", peer, id, acked, len(m.Sealed), st.sealedLen)
			}
		}
		if !acked {
			c := peers[peer]
			c.count++
			c.bytes += int64(st.sealedLen)
			peers[peer] = c
			total.count++
			total.bytes += int64(st.sealedLen)
		}
		if !st.responseID.IsZero() {
			ov := tx.Bucket(bOutMsg).Get(st.responseID[:])
			if ov == nil {
				fail("in %s/%s acknowledged with response %s, which the outbox lacks", peer, id, st.responseID)
			} else if m, err := decodeMessage(st.responseID, ov, false); err != nil || m.Kind != Response || m.Peer != peer || m.CorrelationID != id {
				fail("in %s/%s: response %s is %v to %s for %s (%v)", peer, id, st.responseID, m.Kind, m.Peer, m.CorrelationID, err)
			}
		}
		return nil
	})
	tx.Bucket(bInMsg).ForEach(func(k, _ []byte) error {
		if tx.Bucket(bInState).Get(k) == nil {
			fail("in.msg %x without in.state", k)
		}
		return nil
	})
	seen := map[string]bool{}
	tx.Bucket(bInPending).ForEach(func(k, v []byte) error {
		if seen[string(v)] {
			fail("in.pending lists %x twice", v)
		}
		seen[string(v)] = true
		sv := tx.Bucket(bInState).Get(v)
		if sv == nil {
			fail("in.pending %x names missing %x", k, v)
			return nil
		}
		st, _ := decodeInState(sv)
		if st.flags&inAcked != 0 || !bytes.Equal(seqKey(st.seq), k) {
			fail("in.pending %x names %x (acked=%v, seq %d)", k, v, st.flags&inAcked != 0, st.seq)
		}
		return nil
	})
	tx.Bucket(bInPeers).ForEach(func(k, v []byte) error {
		p, err := decodePeer(v, string(k))
		if c := peers[string(k)]; err != nil || c.count != p.count || c.bytes != p.bytes {
			fail("in.peers %s: counters %d/%d (%v), pending %d/%d", k, p.count, p.bytes, err, c.count, c.bytes)
		}
		delete(peers, string(k))
		return nil
	})
	for p, c := range peers {
		fail("in: %d pending from %s but no in.peers record", c.count, p)
	}
	if it.count != total.count || it.bytes != total.bytes {
		fail("in.totals %d/%d, pending %d/%d", it.count, it.bytes, total.count, total.bytes)
	}
	return errs
}
