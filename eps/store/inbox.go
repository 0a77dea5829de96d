package store

import (
	"crypto/sha256"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Incoming is an inbox message with its delivery state.
type Incoming struct {
	// Message is the message as received. Sealed is set only by Pending
	// and Claim. Once Tombstone is set, only ID, Peer and Deadline remain.
	Message

	// Seq numbers arrivals over all senders.
	Seq        uint64
	ReceivedAt time.Time
	// Receipt is what Receive returned to the sender, and returns again to
	// a duplicate.
	Receipt []byte
	// Acked is set once local software acknowledged the message.
	Acked   bool
	AckedAt time.Time
	// Answer is what Ack recorded; nil after AckAndEnqueue and once purged.
	Answer []byte
	// ResponseID is the outbox response AckAndEnqueue queued; zero if none.
	ResponseID ID
	// Tombstone is set once the record was purged after Retention: what is
	// left serves deduplication (and the receipt) until the deadline has
	// passed by DedupMargin.
	Tombstone bool
}

// Receive stores a message received from m.Peer (the verified TLS peer)
// and returns the receipt for the sender. It returns once the message is
// on disk (fsync); only then may the receipt be sent.
//
// A message is identified by (sender, id). If it is already stored, or
// still remembered by its tombstone, Receive returns the stored receipt
// with dup set and stores nothing; receiptFn is not called. Otherwise
// receiptFn makes the receipt, outside any transaction, since signing may
// be slow; the message and receipt are then stored in one transaction.
// When two identical deliveries race, both may call receiptFn, but the
// first to commit wins and the other returns the winner's receipt with dup
// set: the sender never holds two different receipts for one message.
//
// Errors: ErrInboxFull when a bound for this sender or in total is reached
// (answer 429), ErrExpired for a message past its deadline (it can no
// longer be deduplicated for sure, so it is refused), ErrConflict for a
// known id with a different envelope, ErrInvalid, ErrTooLarge, and
// receiptFn's error. m.Sealed must not change until Receive returns.
func (s *Store) Receive(m Message, receiptFn func() ([]byte, error)) (receipt []byte, dup bool, err error) {
	if err := s.check(&m); err != nil {
		return nil, false, fmt.Errorf("receive %s from %s: %w", m.ID, m.Peer, err)
	}
	digest := sha256.Sum256(m.Sealed)
	key := inKey(m.ID, m.Peer)

	// Look first, so that a duplicate, a full inbox or an expired message
	// costs no signature and no write.
	err = s.view(func(tx *bolt.Tx) error {
		receipt, dup = nil, false
		st, ok, err := getInState(tx, key)
		if err != nil || ok {
			if ok && st.digest != digest {
				return ErrConflict
			}
			receipt, dup = clone(st.receipt), ok
			return err
		}
		if err := s.checkDeadline(time.Now(), m.Deadline, s.cfg.DedupMargin); err != nil {
			return err
		}
		_, _, err = s.inboxRoom(tx, m.Peer, len(m.Sealed))
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("receive %s from %s: %w", m.ID, m.Peer, unwrapUnchanged(err))
	}
	if dup {
		return receipt, true, nil
	}

	made, err := receiptFn()
	if err != nil {
		return nil, false, fmt.Errorf("receive %s from %s: make receipt: %w", m.ID, m.Peer, err)
	}
	if len(made) == 0 || len(made) > maxReceipt {
		return nil, false, fmt.Errorf("receive %s from %s: %w: receipt of %d bytes (want 1 to %d)", m.ID, m.Peer, ErrTooLarge, len(made), maxReceipt)
	}

	err = s.write(len(m.Sealed), func(tx *bolt.Tx) error {
		receipt, dup = nil, false
		now := time.Now()
		st, ok, err := getInState(tx, key)
		if err != nil {
			return err
		}
		if ok { // a racing delivery committed first: its receipt stands
			if st.digest != digest {
				return reject(ErrConflict)
			}
			receipt, dup = clone(st.receipt), true
			return noop
		}
		if err := s.checkDeadline(now, m.Deadline, s.cfg.DedupMargin); err != nil {
			return reject(err)
		}
		p, t, err := s.inboxRoom(tx, m.Peer, len(m.Sealed))
		if err != nil {
			return err
		}
		n := int64(len(m.Sealed))
		seq := t.nextSeq
		t.nextSeq++
		t.count++
		t.bytes += n
		p.count++
		p.bytes += n
		st = inState{seq: seq, receivedAt: now, deadline: m.Deadline, sealedLen: uint64(n), digest: digest, receipt: made}
		if err := tx.Bucket(bInMsg).Put(key, encodeMessage(&m, true)); err != nil {
			return err
		}
		if err := tx.Bucket(bInState).Put(key, st.encode()); err != nil {
			return err
		}
		if err := tx.Bucket(bInPending).Put(seqKey(seq), key); err != nil {
			return err
		}
		if err := tx.Bucket(bInPeers).Put([]byte(m.Peer), p.encode()); err != nil {
			return err
		}
		if err := putTotals(tx, keyInTotals, t); err != nil {
			return err
		}
		receipt = made
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("receive %s from %s: %w", m.ID, m.Peer, err)
	}
	return receipt, dup, nil
}

// inboxRoom checks the inbox bounds for n more bytes from peer and returns
// the records to update. Its refusals are reject()ed.
func (s *Store) inboxRoom(tx *bolt.Tx, peer string, n int) (peerRec, totals, error) {
	p, err := getPeer(tx.Bucket(bInPeers), peer)
	if err != nil {
		return peerRec{}, totals{}, err
	}
	t, err := getTotals(tx, keyInTotals)
	if err != nil {
		return peerRec{}, totals{}, err
	}
	l := &s.cfg.Inbox
	switch {
	case p.count >= uint64(l.PerPeer):
		err = fmt.Errorf("%w: %d messages from %s waiting (limit %d)", ErrInboxFull, p.count, peer, l.PerPeer)
	case p.bytes+int64(n) > l.PerPeerBytes:
		err = fmt.Errorf("%w: %d bytes from %s waiting (limit %d)", ErrInboxFull, p.bytes, peer, l.PerPeerBytes)
	case t.count >= uint64(l.Total):
		err = fmt.Errorf("%w: %d messages waiting (limit %d)", ErrInboxFull, t.count, l.Total)
	case t.bytes+int64(n) > l.TotalBytes:
		err = fmt.Errorf("%w: %d bytes waiting (limit %d)", ErrInboxFull, t.bytes, l.TotalBytes)
	}
	if err != nil {
		return peerRec{}, totals{}, reject(err)
	}
	return p, t, nil
}

func getInState(tx *bolt.Tx, key []byte) (inState, bool, error) {
	v := tx.Bucket(bInState).Get(key)
	if v == nil {
		return inState{}, false, nil
	}
	st, err := decodeInState(v)
	if err != nil {
		return inState{}, false, err
	}
	return st, true, nil
}

func loadIncoming(tx *bolt.Tx, key []byte, withSealed bool) (Incoming, error) {
	st, ok, err := getInState(tx, key)
	if err != nil {
		return Incoming{}, err
	}
	if !ok {
		return Incoming{}, ErrNotFound
	}
	id, peer, err := splitInKey(key)
	if err != nil {
		return Incoming{}, err
	}
	in := Incoming{
		Message:    Message{ID: id, Peer: peer, Deadline: st.deadline},
		Seq:        st.seq,
		ReceivedAt: st.receivedAt,
		Receipt:    clone(st.receipt),
		Acked:      st.flags&inAcked != 0,
		AckedAt:    st.ackedAt,
		Answer:     clone(st.answer),
		ResponseID: st.responseID,
		Tombstone:  st.flags&inTombstone != 0,
	}
	if in.Tombstone {
		return in, nil
	}
	mv := tx.Bucket(bInMsg).Get(key)
	if mv == nil {
		return Incoming{}, fmt.Errorf("%w: inbox message %s from %s has a state but no record", ErrCorrupt, id, peer)
	}
	in.Message, err = decodeMessage(id, mv, withSealed && !in.Acked)
	return in, err
}

// Received returns an inbox message's state, without the envelope, or
// ErrNotFound. After Retention only a tombstone is left, and after the
// deadline has passed by DedupMargin nothing.
func (s *Store) Received(peer string, id ID) (Incoming, error) {
	var in Incoming
	err := s.view(func(tx *bolt.Tx) (err error) {
		in, err = loadIncoming(tx, inKey(id, peer), false)
		return err
	})
	if err != nil {
		return Incoming{}, fmt.Errorf("received %s from %s: %w", id, peer, err)
	}
	return in, nil
}

// Pending returns up to limit (at most 1000, and 32 MiB of envelopes)
// unacknowledged messages that are not leased, in arrival order, with
// their envelopes. It leases nothing; see Claim.
func (s *Store) Pending(limit int) ([]Incoming, error) {
	return s.available("pending", limit, time.Time{})
}

// Claim is Pending that also leases what it returns until until, so that
// a concurrent Claim doesn't return them too. A message not acknowledged
// by then is returned again. This is the long-poll: software that polls
// and crashes before its ack sees the message again after the lease.
// Leases live in memory: after a restart every unacknowledged message is
// available at once, which only repeats deliveries that the software
// deduplicates by message id anyway.
func (s *Store) Claim(limit int, until time.Time) ([]Incoming, error) {
	return s.available("claim", limit, until)
}

func (s *Store) available(op string, limit int, until time.Time) ([]Incoming, error) {
	limit = min(limit, maxPoll)
	now := time.Now()
	claim := !until.IsZero()
	var out []Incoming
	err := s.view(func(tx *bolt.Tx) error {
		size := 0
		c := tx.Bucket(bInPending).Cursor()
		for k, v := c.First(); k != nil && len(out) < limit && size < maxPollBytes; k, v = c.Next() {
			key := string(v)
			if claim {
				if !s.tryLease(key, now, until) {
					continue
				}
			} else if s.leased(key, now) {
				continue
			}
			in, err := loadIncoming(tx, v, true)
			if err != nil {
				if claim {
					s.dropLease(key)
				}
				return err
			}
			out = append(out, in)
			size += len(in.Sealed)
		}
		return nil
	})
	if err != nil {
		if claim {
			for _, in := range out {
				s.dropLease(string(inKey(in.ID, in.Peer)))
			}
		}
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	return out, nil
}

// Lease hides an unacknowledged message from Pending and Claim until
// until, or makes it available again at once if until is zero or past.
// ErrNotFound, or ErrNotPending once acknowledged.
func (s *Store) Lease(peer string, id ID, until time.Time) error {
	key := inKey(id, peer)
	err := s.view(func(tx *bolt.Tx) error {
		st, ok, err := getInState(tx, key)
		switch {
		case err != nil:
			return err
		case !ok:
			return ErrNotFound
		case st.flags&inAcked != 0:
			return ErrNotPending
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("lease %s from %s: %w", id, peer, err)
	}
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if until.After(time.Now()) {
		s.leases[string(key)] = until
	} else {
		delete(s.leases, string(key))
	}
	return nil
}

func (s *Store) tryLease(key string, now, until time.Time) bool {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	if u, ok := s.leases[key]; ok && u.After(now) {
		return false
	}
	s.leases[key] = until
	return true
}

func (s *Store) leased(key string, now time.Time) bool {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	u, ok := s.leases[key]
	return ok && u.After(now)
}

func (s *Store) dropLease(key string) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	delete(s.leases, key)
}

// ackedGrace is how long an acknowledged message stays leased in memory.
// A Claim whose read transaction began before the acknowledgement committed
// still sees the message as pending; the lease keeps it from handing the
// message out again. Read transactions last milliseconds.
const ackedGrace = time.Minute

// holdAcked replaces an acknowledged message's lease by one that outlives
// any read transaction that started before the acknowledgement.
func (s *Store) holdAcked(key string) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	s.leases[key] = time.Now().Add(ackedGrace)
}

// pruneLeases forgets expired leases, among them any left behind by a
// Claim that raced with an Ack.
func (s *Store) pruneLeases(now time.Time) {
	s.leaseMu.Lock()
	defer s.leaseMu.Unlock()
	for k, u := range s.leases {
		if !u.After(now) {
			delete(s.leases, k)
		}
	}
}

// Ack marks an inbox message as handled by local software and records its
// answer (at most 64 KiB). The envelope is dropped; the record stays for
// Retention, the dedup tombstone longer. Ack is idempotent: acknowledging
// again returns nil and keeps the first answer.
func (s *Store) Ack(peer string, id ID, answer []byte) error {
	if len(answer) > maxAnswer {
		return fmt.Errorf("ack %s from %s: %w: answer of %d bytes (limit %d)", id, peer, ErrTooLarge, len(answer), maxAnswer)
	}
	key := inKey(id, peer)
	err := s.write(0, func(tx *bolt.Tx) error {
		st, ok, err := getInState(tx, key)
		switch {
		case err != nil:
			return err
		case !ok:
			return reject(ErrNotFound)
		case st.flags&inAcked != 0:
			return noop
		}
		return s.ackApply(tx, key, st, answer, ID{}, time.Now())
	})
	if err != nil {
		return fmt.Errorf("ack %s from %s: %w", id, peer, err)
	}
	s.holdAcked(string(key))
	return nil
}

// AckAndEnqueue acknowledges the request (peer, id) and enqueues
// response, its answer to peer, in one transaction: after a crash either
// both happened or neither. response must be a Response to peer whose
// CorrelationID is id. Repeating it, with any response, after it succeeded
// returns nil and enqueues nothing: the first response stands (see
// Received for its id). Errors are those of Enqueue, plus ErrNotFound,
// ErrInvalid if the message is not a request, and ErrNotPending if it was
// acknowledged by Ack without a response.
func (s *Store) AckAndEnqueue(peer string, id ID, response Message) error {
	if err := s.check(&response); err != nil {
		return fmt.Errorf("ack %s from %s: response: %w", id, peer, err)
	}
	if response.Kind != Response || response.Peer != peer || response.CorrelationID != id {
		return fmt.Errorf("ack %s from %s: %w: response must be a response to %s answering %s", id, peer, ErrInvalid, peer, id)
	}
	key := inKey(id, peer)
	err := s.write(len(response.Sealed), func(tx *bolt.Tx) error {
		now := time.Now()
		st, ok, err := getInState(tx, key)
		switch {
		case err != nil:
			return err
		case !ok:
			return reject(ErrNotFound)
		case st.flags&inAcked != 0 && !st.responseID.IsZero():
			return noop
		case st.flags&inAcked != 0:
			return reject(fmt.Errorf("%w: acknowledged without a response", ErrNotPending))
		}
		mv := tx.Bucket(bInMsg).Get(key)
		if mv == nil {
			return fmt.Errorf("%w: inbox message %s from %s has a state but no record", ErrCorrupt, id, peer)
		}
		req, err := decodeMessage(id, mv, false)
		if err != nil {
			return err
		}
		if req.Kind != Request {
			return reject(fmt.Errorf("%w: a %v is not answered", ErrInvalid, req.Kind))
		}
		p, t, err := s.enqueueCheck(tx, &response, now)
		if err != nil {
			return err
		}
		if err := s.ackApply(tx, key, st, nil, response.ID, now); err != nil {
			return err
		}
		return s.enqueueApply(tx, response, p, t, now)
	})
	if err != nil {
		return fmt.Errorf("ack %s from %s with response %s: %w", id, peer, response.ID, err)
	}
	s.holdAcked(string(key))
	return nil
}

// ackApply marks a pending inbox message acknowledged: out of the pending
// index and the counters, envelope dropped, purge scheduled.
func (s *Store) ackApply(tx *bolt.Tx, key []byte, st inState, answer []byte, responseID ID, now time.Time) error {
	id, peer, err := splitInKey(key)
	if err != nil {
		return err
	}
	mv := tx.Bucket(bInMsg).Get(key)
	if mv == nil {
		return fmt.Errorf("%w: inbox message %s from %s has a state but no record", ErrCorrupt, id, peer)
	}
	m, err := decodeMessage(id, mv, false)
	if err != nil {
		return err
	}
	p, err := getPeer(tx.Bucket(bInPeers), peer)
	if err != nil {
		return err
	}
	t, err := getTotals(tx, keyInTotals)
	if err != nil {
		return err
	}
	n := int64(st.sealedLen)
	if p.count == 0 || t.count == 0 || p.bytes < n || t.bytes < n {
		return fmt.Errorf("%w: inbox counters below a pending message (peer %s)", ErrCorrupt, peer)
	}
	p.count--
	p.bytes -= n
	t.count--
	t.bytes -= n
	st.flags |= inAcked
	st.ackedAt = now
	st.answer = answer
	st.responseID = responseID
	if err := tx.Bucket(bInMsg).Put(key, encodeMessage(&m, false)); err != nil {
		return err
	}
	if err := tx.Bucket(bInState).Put(key, st.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bInPending).Delete(seqKey(st.seq)); err != nil {
		return err
	}
	if err := tx.Bucket(bInPeers).Put([]byte(peer), p.encode()); err != nil {
		return err
	}
	if err := putTotals(tx, keyInTotals, t); err != nil {
		return err
	}
	return tx.Bucket(bInPurge).Put(purgeKey(now.Add(s.cfg.Retention), key), []byte{})
}
