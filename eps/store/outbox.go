package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Outgoing is an outbox message with its delivery state.
type Outgoing struct {
	Message // Sealed is set only by Next, Queue and Due, and only while pending

	// Seq is the message's place in its recipient's queue: numbers rise in
	// order of acceptance.
	Seq      uint64
	State    State
	Attempts int
	// LastError is the text of the last failed attempt (at most 512 bytes),
	// or why the message failed.
	LastError string
	// NextAttempt is when the next delivery attempt is due.
	NextAttempt time.Time
	// UpdatedAt is when the state last changed.
	UpdatedAt time.Time
	// Receipt is the recipient's signed receipt, once Delivered.
	Receipt []byte
}

// Enqueue stores m in the outbox for delivery to m.Peer. It returns once
// the message is on disk (fsync), so the local software may be given the
// id; a nil error means the message will be delivered or reported expired
// or failed. Messages to one recipient keep the order in which Enqueue
// accepted them. Enqueue fails at once with ErrQueueFull when a bound is
// reached, ErrExists if the id is taken, ErrExpired or ErrInvalid for a
// bad deadline. m.Sealed must not change until Enqueue returns.
//
// An error other than these (a failed commit: ErrStopped) leaves it
// unknown whether the message was stored, as with any database.
func (s *Store) Enqueue(m Message) error {
	if err := s.check(&m); err != nil {
		return fmt.Errorf("enqueue %s: %w", m.ID, err)
	}
	err := s.write(len(m.Sealed), func(tx *bolt.Tx) error {
		now := time.Now()
		p, t, err := s.enqueueCheck(tx, &m, now)
		if err != nil {
			return err
		}
		return s.enqueueApply(tx, m, p, t, now)
	})
	if err != nil {
		return fmt.Errorf("enqueue %s for %s: %w", m.ID, m.Peer, err)
	}
	return nil
}

// enqueueCheck reports whether m can be enqueued now, and returns the
// recipient's record and the totals to update. It writes nothing.
func (s *Store) enqueueCheck(tx *bolt.Tx, m *Message, now time.Time) (peerRec, totals, error) {
	if err := s.checkDeadline(now, m.Deadline, 0); err != nil {
		return peerRec{}, totals{}, reject(err)
	}
	if tx.Bucket(bOutState).Get(m.ID[:]) != nil {
		return peerRec{}, totals{}, reject(ErrExists)
	}
	p, err := getPeer(tx.Bucket(bOutPeers), m.Peer)
	if err != nil {
		return peerRec{}, totals{}, err
	}
	t, err := getTotals(tx, keyOutTotals)
	if err != nil {
		return peerRec{}, totals{}, err
	}
	n, l := int64(len(m.Sealed)), &s.cfg.Outbox
	switch {
	case p.count >= uint64(l.PerPeer):
		err = fmt.Errorf("%w: %d messages queued for %s (limit %d)", ErrQueueFull, p.count, m.Peer, l.PerPeer)
	case p.bytes+n > l.PerPeerBytes:
		err = fmt.Errorf("%w: %d bytes queued for %s (limit %d)", ErrQueueFull, p.bytes, m.Peer, l.PerPeerBytes)
	case t.count >= uint64(l.Total):
		err = fmt.Errorf("%w: %d messages queued (limit %d)", ErrQueueFull, t.count, l.Total)
	case t.bytes+n > l.TotalBytes:
		err = fmt.Errorf("%w: %d bytes queued (limit %d)", ErrQueueFull, t.bytes, l.TotalBytes)
	}
	if err != nil {
		return peerRec{}, totals{}, reject(err)
	}
	return p, t, nil
}

// enqueueApply writes m after enqueueCheck passed.
func (s *Store) enqueueApply(tx *bolt.Tx, m Message, p peerRec, t totals, now time.Time) error {
	if m.CreatedAt.IsZero() {
		m.CreatedAt = now
	}
	n := int64(len(m.Sealed))
	seq := p.nextSeq
	p.nextSeq++
	p.count++
	p.bytes += n
	t.count++
	t.bytes += n
	st := outState{state: Queued, seq: seq, nextAttempt: now, updatedAt: now, sealedLen: uint64(n), peer: m.Peer}
	if err := tx.Bucket(bOutMsg).Put(m.ID[:], encodeMessage(&m, true)); err != nil {
		return err
	}
	if err := tx.Bucket(bOutState).Put(m.ID[:], st.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bOutQueue).Put(queueKey(m.Peer, seq), m.ID[:]); err != nil {
		return err
	}
	if err := updateDue(tx, m.Peer, &p); err != nil {
		return err
	}
	if err := tx.Bucket(bOutPeers).Put([]byte(m.Peer), p.encode()); err != nil {
		return err
	}
	return putTotals(tx, keyOutTotals, t)
}

// updateDue points the recipient's out.due entry at its current queue
// head, after the queue or the head's NextAttempt changed. It updates p;
// the caller stores it.
func updateDue(tx *bolt.Tx, peer string, p *peerRec) error {
	due := tx.Bucket(bOutDue)
	if p.hasDue {
		if err := due.Delete(dueKey(p.dueAt, peer)); err != nil {
			return err
		}
		p.hasDue, p.dueAt = false, time.Time{}
	}
	prefix := peerPrefix(peer)
	k, v := tx.Bucket(bOutQueue).Cursor().Seek(prefix)
	if k == nil || !bytes.HasPrefix(k, prefix) {
		return nil // queue empty
	}
	if len(v) != len(ID{}) {
		return fmt.Errorf("%w: queue entry for %s", ErrCorrupt, peer)
	}
	st, err := getOutState(tx, ID(v))
	if err != nil {
		return err
	}
	p.hasDue, p.dueAt = true, st.nextAttempt
	return due.Put(dueKey(st.nextAttempt, peer), v)
}

func getOutState(tx *bolt.Tx, id ID) (outState, error) {
	v := tx.Bucket(bOutState).Get(id[:])
	if v == nil {
		return outState{}, ErrNotFound
	}
	st, err := decodeOutState(v)
	if err != nil {
		return outState{}, fmt.Errorf("message %s: %w", id, err)
	}
	return st, nil
}

func loadOutgoing(tx *bolt.Tx, id ID, withSealed bool) (Outgoing, error) {
	st, err := getOutState(tx, id)
	if err != nil {
		return Outgoing{}, err
	}
	mv := tx.Bucket(bOutMsg).Get(id[:])
	if mv == nil {
		return Outgoing{}, fmt.Errorf("%w: message %s has a state but no record", ErrCorrupt, id)
	}
	m, err := decodeMessage(id, mv, withSealed && st.state.Pending())
	if err != nil {
		return Outgoing{}, err
	}
	return Outgoing{
		Message:     m,
		Seq:         st.seq,
		State:       st.state,
		Attempts:    int(st.attempts),
		LastError:   st.lastError,
		NextAttempt: st.nextAttempt,
		UpdatedAt:   st.updatedAt,
		Receipt:     clone(st.receipt),
	}, nil
}

// Get returns an outbox message's state, without the envelope. It returns
// ErrNotFound for an unknown id or one purged after Retention.
func (s *Store) Get(id ID) (Outgoing, error) {
	var o Outgoing
	err := s.view(func(tx *bolt.Tx) (err error) {
		o, err = loadOutgoing(tx, id, false)
		return err
	})
	if err != nil {
		return Outgoing{}, fmt.Errorf("get %s: %w", id, err)
	}
	return o, nil
}

// FindRequest returns the request id that this endpoint sent to peer,
// without the envelope. It is how the peer server checks that a response
// answers a request we sent to that same peer; anything else is
// ErrNotFound. Requests are found in every state until purged.
func (s *Store) FindRequest(peer string, id ID) (Outgoing, error) {
	var o Outgoing
	err := s.view(func(tx *bolt.Tx) (err error) {
		o, err = loadOutgoing(tx, id, false)
		if err == nil && (o.Peer != peer || o.Kind != Request) {
			err = ErrNotFound
		}
		return err
	})
	if err != nil {
		return Outgoing{}, fmt.Errorf("find request %s to %s: %w", id, peer, err)
	}
	return o, nil
}

// Next returns the oldest pending message for peer, with its envelope;
// ok is false if peer has none. Delivery is head-of-line: deliver this
// one (or mark it expired or failed) before the rest.
func (s *Store) Next(peer string) (o Outgoing, ok bool, err error) {
	q, err := s.Queue(peer, 1)
	if err != nil || len(q) == 0 {
		return Outgoing{}, false, err
	}
	return q[0], true, nil
}

// Queue returns up to limit (at most 1000) pending messages for peer in
// order of acceptance, with their envelopes, stopping early after 32 MiB of
// envelopes. A worker that keeps several deliveries in flight takes its
// window from here.
func (s *Store) Queue(peer string, limit int) ([]Outgoing, error) {
	limit = min(limit, maxPoll)
	var out []Outgoing
	err := s.view(func(tx *bolt.Tx) error {
		out = out[:0]
		size := 0
		prefix := peerPrefix(peer)
		c := tx.Bucket(bOutQueue).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit && size < maxPollBytes; k, v = c.Next() {
			if len(v) != len(ID{}) {
				return fmt.Errorf("%w: queue entry for %s", ErrCorrupt, peer)
			}
			o, err := loadOutgoing(tx, ID(v), true)
			if err != nil {
				return err
			}
			out = append(out, o)
			size += len(o.Sealed)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("queue for %s: %w", peer, err)
	}
	return out, nil
}

// Due returns the recipients' queue heads whose NextAttempt has come, the
// most overdue first, up to limit (at most 1000, and 32 MiB of
// envelopes). next is the NextAttempt of the earliest head not returned,
// zero if there is none: a scheduler sleeps until then or until Enqueue.
func (s *Store) Due(limit int) (due []Outgoing, next time.Time, err error) {
	limit = min(limit, maxPoll)
	now := tkey(time.Now())
	err = s.view(func(tx *bolt.Tx) error {
		due, next = due[:0], time.Time{}
		size := 0
		c := tx.Bucket(bOutDue).Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if len(k) < 8 || len(v) != len(ID{}) {
				return fmt.Errorf("%w: due entry", ErrCorrupt)
			}
			if at := binary.BigEndian.Uint64(k); at > now || len(due) >= limit || size >= maxPollBytes {
				next = keyTime(at)
				return nil
			}
			o, err := loadOutgoing(tx, ID(v), true)
			if err != nil {
				return err
			}
			due = append(due, o)
			size += len(o.Sealed)
		}
		return nil
	})
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("due messages: %w", err)
	}
	return due, next, nil
}

// PendingPeers returns the recipients with pending messages, in name order.
func (s *Store) PendingPeers() ([]string, error) {
	var peers []string
	err := s.view(func(tx *bolt.Tx) error {
		peers = peers[:0]
		return tx.Bucket(bOutPeers).ForEach(func(k, v []byte) error {
			p, err := decodePeer(v, string(k))
			if err != nil {
				return err
			}
			if p.count > 0 {
				peers = append(peers, string(k))
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pending peers: %w", err)
	}
	return peers, nil
}

// MarkAttempt records a failed delivery attempt of a pending message: the
// attempt count rises, attemptErr's text (cut to 512 bytes) is kept, and
// the message is due again at next (now if zero). ErrNotPending if the
// message is final.
func (s *Store) MarkAttempt(id ID, attemptErr error, next time.Time) error {
	var text string
	if attemptErr != nil {
		text = truncateText(attemptErr.Error(), maxErrorText)
	}
	err := s.write(0, func(tx *bolt.Tx) error {
		now := time.Now()
		st, err := pendingOutState(tx, id)
		if err != nil {
			return err
		}
		st.state = Delivering
		st.attempts++
		st.lastError = text
		st.nextAttempt = next
		if next.IsZero() {
			st.nextAttempt = now
		}
		st.updatedAt = now
		if err := tx.Bucket(bOutState).Put(id[:], st.encode()); err != nil {
			return err
		}
		p, err := getPeer(tx.Bucket(bOutPeers), st.peer)
		if err != nil {
			return err
		}
		if err := updateDue(tx, st.peer, &p); err != nil {
			return err
		}
		return tx.Bucket(bOutPeers).Put([]byte(st.peer), p.encode())
	})
	if err != nil {
		return fmt.Errorf("mark attempt %s: %w", id, err)
	}
	return nil
}

// pendingOutState returns a pending message's state, or a reject()ed
// ErrNotFound or ErrNotPending.
func pendingOutState(tx *bolt.Tx, id ID) (outState, error) {
	st, err := getOutState(tx, id)
	if errors.Is(err, ErrNotFound) {
		return outState{}, reject(err)
	}
	if err != nil {
		return outState{}, err
	}
	if !st.state.Pending() {
		return outState{}, reject(fmt.Errorf("%w: %v", ErrNotPending, st.state))
	}
	return st, nil
}

// MarkDelivered records the recipient's receipt and makes the message
// Delivered. The envelope is dropped; the record stays for Retention. It
// is idempotent: marking a delivered message again keeps the first
// receipt and returns nil. A message already Expired or Failed stays so
// (ErrNotPending): a worker must not give up on a message while an
// attempt is in flight.
func (s *Store) MarkDelivered(id ID, receipt []byte) error {
	if len(receipt) == 0 || len(receipt) > maxReceipt {
		return fmt.Errorf("mark delivered %s: %w: receipt of %d bytes (want 1 to %d)", id, ErrTooLarge, len(receipt), maxReceipt)
	}
	return s.finish("mark delivered", id, Delivered, receipt, "")
}

// MarkExpired makes a pending message Expired: its deadline passed before
// delivery. Idempotent like MarkDelivered.
func (s *Store) MarkExpired(id ID) error {
	return s.finish("mark expired", id, Expired, nil, "")
}

// MarkFailed makes a pending message Failed, keeping reason's text: the
// recipient refused it in a way no retry will change (403, 409, 413,
// 400). Idempotent like MarkDelivered.
func (s *Store) MarkFailed(id ID, reason error) error {
	var text string
	if reason != nil {
		text = truncateText(reason.Error(), maxErrorText)
	}
	return s.finish("mark failed", id, Failed, nil, text)
}

func (s *Store) finish(op string, id ID, final State, receipt []byte, text string) error {
	err := s.write(0, func(tx *bolt.Tx) error {
		now := time.Now()
		st, err := getOutState(tx, id)
		switch {
		case errors.Is(err, ErrNotFound):
			return reject(err)
		case err != nil:
			return err
		case st.state == final:
			return noop // again: the first outcome stands
		case !st.state.Pending():
			return reject(fmt.Errorf("%w: %v", ErrNotPending, st.state))
		}
		return s.finishApply(tx, id, st, final, receipt, text, now)
	})
	if err != nil {
		return fmt.Errorf("%s %s: %w", op, id, err)
	}
	return nil
}

// finishApply moves a pending message to a final state: out of its queue
// and the counters, envelope dropped, purge scheduled.
func (s *Store) finishApply(tx *bolt.Tx, id ID, st outState, final State, receipt []byte, text string, now time.Time) error {
	mv := tx.Bucket(bOutMsg).Get(id[:])
	if mv == nil {
		return fmt.Errorf("%w: message %s has a state but no record", ErrCorrupt, id)
	}
	m, err := decodeMessage(id, mv, false)
	if err != nil {
		return err
	}
	p, err := getPeer(tx.Bucket(bOutPeers), st.peer)
	if err != nil {
		return err
	}
	t, err := getTotals(tx, keyOutTotals)
	if err != nil {
		return err
	}
	n := int64(st.sealedLen)
	if p.count == 0 || t.count == 0 || p.bytes < n || t.bytes < n {
		return fmt.Errorf("%w: outbox counters below a pending message (peer %s)", ErrCorrupt, st.peer)
	}
	p.count--
	p.bytes -= n
	t.count--
	t.bytes -= n
	st.state = final
	st.receipt = receipt
	if text != "" {
		st.lastError = text
	}
	st.updatedAt = now
	if err := tx.Bucket(bOutMsg).Put(id[:], encodeMessage(&m, false)); err != nil {
		return err
	}
	if err := tx.Bucket(bOutState).Put(id[:], st.encode()); err != nil {
		return err
	}
	if err := tx.Bucket(bOutQueue).Delete(queueKey(st.peer, st.seq)); err != nil {
		return err
	}
	if err := updateDue(tx, st.peer, &p); err != nil {
		return err
	}
	if err := tx.Bucket(bOutPeers).Put([]byte(st.peer), p.encode()); err != nil {
		return err
	}
	if err := putTotals(tx, keyOutTotals, t); err != nil {
		return err
	}
	// Keep the record for Retention, and at least until a response to it
	// can no longer arrive (FindRequest).
	purgeAt := later(now.Add(s.cfg.Retention), m.Deadline.Add(s.cfg.DedupMargin))
	return tx.Bucket(bOutPurge).Put(purgeKey(purgeAt, id[:]), []byte{})
}
