package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Swept counts what one Sweep removed.
type Swept struct {
	Outbox     int // final outbox records removed
	Inbox      int // acknowledged inbox records reduced to a tombstone or removed
	Tombstones int // inbox dedup records removed
}

// Sweep removes what has outlived its time: final outbox records after
// Retention (and not before their deadline has passed by DedupMargin, so
// that FindRequest still finds a request a late response answers);
// acknowledged inbox records after Retention, keeping a tombstone (id,
// sender, deadline, envelope digest, receipt) until the deadline has
// passed by DedupMargin; and expired leases. It works in transactions of
// at most 1000 records each so that writers are not held up, and returns
// once nothing due is left. The store sweeps itself every
// Config.SweepInterval; Sweep is for callers that turned that off.
func (s *Store) Sweep() (Swept, error) {
	var total Swept
	for {
		var n Swept
		var more bool
		err := s.write(0, func(tx *bolt.Tx) (err error) {
			n, more, err = s.sweepTx(tx, time.Now())
			return err
		})
		if err != nil {
			return total, fmt.Errorf("sweep: %w", err)
		}
		total.Outbox += n.Outbox
		total.Inbox += n.Inbox
		total.Tombstones += n.Tombstones
		if !more {
			break
		}
	}
	s.pruneLeases(time.Now())
	return total, nil
}

func (s *Store) sweepLoop() {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			if _, err := s.Sweep(); err != nil && !errors.Is(err, ErrClosed) {
				s.log.Warn("sweep failed", "err", err)
			}
		}
	}
}

// duePurges returns up to chunk purge keys due at now, copied.
func duePurges(b *bolt.Bucket, now uint64, chunk int) ([][]byte, error) {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < chunk; k, _ = c.Next() {
		if len(k) <= 8 {
			return nil, fmt.Errorf("%w: purge key of %d bytes", ErrCorrupt, len(k))
		}
		if binary.BigEndian.Uint64(k) > now {
			break
		}
		keys = append(keys, clone(k))
	}
	return keys, nil
}

// sweepTx does one chunk of Sweep. Keys are collected before anything is
// deleted: a bbolt cursor must not move over a bucket being changed.
func (s *Store) sweepTx(tx *bolt.Tx, now time.Time) (n Swept, more bool, err error) {
	nowKey := tkey(now)

	out, err := duePurges(tx.Bucket(bOutPurge), nowKey, s.sweepChunk)
	if err != nil {
		return n, false, err
	}
	for _, k := range out {
		id := k[8:]
		if v := tx.Bucket(bOutState).Get(id); v != nil {
			st, err := decodeOutState(v)
			if err != nil {
				return n, false, err
			}
			if !st.state.Pending() { // a purge entry never removes a pending message
				if err := tx.Bucket(bOutMsg).Delete(id); err != nil {
					return n, false, err
				}
				if err := tx.Bucket(bOutState).Delete(id); err != nil {
					return n, false, err
				}
				n.Outbox++
			}
		}
		if err := tx.Bucket(bOutPurge).Delete(k); err != nil {
			return n, false, err
		}
	}

	in, err := duePurges(tx.Bucket(bInPurge), nowKey, s.sweepChunk)
	if err != nil {
		return n, false, err
	}
	for _, k := range in {
		key := k[8:]
		if err := tx.Bucket(bInPurge).Delete(k); err != nil {
			return n, false, err
		}
		st, ok, err := getInState(tx, key)
		if err != nil {
			return n, false, err
		}
		if !ok || st.flags&inAcked == 0 {
			continue // a purge entry never removes a pending message
		}
		if st.flags&inTombstone == 0 {
			if err := tx.Bucket(bInMsg).Delete(key); err != nil {
				return n, false, err
			}
			st.flags |= inTombstone
			st.answer = nil
			n.Inbox++
		}
		// The tombstone must outlive any retry: a sender retries until the
		// deadline, and Receive refuses anything later, so the deadline
		// plus a margin for our clock stepping back is enough.
		until := st.deadline.Add(s.cfg.DedupMargin)
		if until.After(now) {
			if err := tx.Bucket(bInState).Put(key, st.encode()); err != nil {
				return n, false, err
			}
			if err := tx.Bucket(bInPurge).Put(purgeKey(until, key), []byte{}); err != nil {
				return n, false, err
			}
			continue
		}
		if err := tx.Bucket(bInState).Delete(key); err != nil {
			return n, false, err
		}
		n.Tombstones++
	}
	if n == (Swept{}) && len(out) == 0 && len(in) == 0 {
		return n, false, noop
	}
	return n, len(out) == s.sweepChunk || len(in) == s.sweepChunk, nil
}
