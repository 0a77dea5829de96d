package sdk

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bucket names the Dedup keeps in its file. Software that keeps its own
// data in the same file (see Dedup.Update) must not use names starting
// with "kurier-sdk.".
var (
	bucketDone   = []byte("kurier-sdk.done")   // sender \x00 id → record
	bucketExpiry = []byte("kurier-sdk.expiry") // purge time (8 bytes) || sender \x00 id → nil
)

const (
	// dedupMargin is how long after a message's deadline its record is
	// kept. The endpoint server stops delivering at the deadline; the
	// margin covers clocks that step back.
	dedupMargin = time.Hour
	// lateAfter is how long after its deadline a message without a record
	// is no longer handled: less than dedupMargin, so that its record, if
	// it was handled, cannot have been swept in between.
	lateAfter = dedupMargin / 2
	// noDeadlineKeep is how long a record without a deadline is kept.
	noDeadlineKeep = 31 * 24 * time.Hour
	sweepEvery     = 10 * time.Minute
	sweepChunk     = 1000 // records purged per sweep transaction
)

// ErrDedupClosed is returned by a closed Dedup.
var ErrDedupClosed = errors.New("sdk: dedup closed")

// Dedup remembers which messages local software has handled, and with what
// answer, in its own bbolt file, so that a message the endpoint server
// delivers again is answered with the stored answer instead of being
// handled twice. Give it to a Mux (Mux.Dedup). See the package
// documentation, "Exactly once", for what it guarantees.
//
// Recording a message is one bbolt write transaction (an fsync). A Dedup
// is safe for concurrent use. One process at a time may open its file.
type Dedup struct {
	db *bolt.DB

	mu        sync.Mutex // guards lastSweep
	lastSweep time.Time
}

// OpenDedup opens or creates the dedup file at path (mode 0600) and purges
// records whose messages can no longer be delivered. It fails if another
// process has the file open for more than a second.
func OpenDedup(path string) (*Dedup, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("sdk: open dedup %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketDone, bucketExpiry} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sdk: open dedup %s: %w", path, err)
	}
	d := &Dedup{db: db}
	if _, err := d.Sweep(time.Now()); err != nil {
		db.Close()
		return nil, fmt.Errorf("sdk: open dedup %s: %w", path, err)
	}
	return d, nil
}

// Close closes the file. Handlers must have returned.
func (d *Dedup) Close() error { return d.db.Close() }

// DB returns the bbolt database, for reading software data kept in it with
// View. Write with Update.
func (d *Dedup) DB() *bolt.DB { return d.db }

// record is what the Dedup stores for a handled message.
type record struct {
	Kind      Kind      `json:"kind"`
	Deadline  time.Time `json:"deadline"`
	HandledAt time.Time `json:"handled_at"`
	// Answer is a request's answer, nil for other kinds.
	Answer *answer `json:"answer,omitempty"`
}

func doneKey(from string, id MessageID) []byte {
	k := make([]byte, 0, len(from)+1+len(id))
	k = append(k, from...)
	k = append(k, 0)
	return append(k, id[:]...)
}

func expiryKey(at time.Time, key []byte) []byte {
	k := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(key)), uint64(max(at.Unix(), 0)))
	return append(k, key...)
}

// Handled reports whether the message id from the sender was recorded as
// handled.
func (d *Dedup) Handled(from string, id MessageID) (bool, error) {
	_, ok, err := d.lookup(from, id)
	return ok, err
}

func (d *Dedup) lookup(from string, id MessageID) (rec record, ok bool, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		rec, ok, err = getRecord(tx, doneKey(from, id))
		return err
	})
	return rec, ok, closedErr(err)
}

// closedErr turns bbolt's error for a closed file into ErrDedupClosed.
func closedErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrDedupClosed, err)
	}
	return err
}

func getRecord(tx *bolt.Tx, key []byte) (record, bool, error) {
	v := tx.Bucket(bucketDone).Get(key)
	if v == nil {
		return record{}, false, nil
	}
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return record{}, false, fmt.Errorf("sdk: dedup record: %w", err)
	}
	return rec, true, nil
}

// putRecord stores the record of m in tx, with its purge time.
func putRecord(tx *bolt.Tx, m *Message, a *answer, now time.Time) error {
	rec := record{Kind: m.Kind, Deadline: m.Deadline, HandledAt: now.UTC()}
	if m.Kind == KindRequest {
		rec.Answer = a
	}
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	key := doneKey(m.From, m.ID)
	purge := m.Deadline.Add(dedupMargin)
	if m.Deadline.IsZero() {
		purge = now.Add(noDeadlineKeep)
	}
	if err := tx.Bucket(bucketDone).Put(key, v); err != nil {
		return err
	}
	return tx.Bucket(bucketExpiry).Put(expiryKey(purge, key), nil)
}

// late reports whether m is too far past its deadline to be handled with
// a Dedup.
func late(m *Message, now time.Time) bool {
	return !m.Deadline.IsZero() && now.After(m.Deadline.Add(lateAfter))
}

// record stores that m was handled with answer a, in its own transaction.
func (d *Dedup) record(m *Message, a *answer) error {
	err := d.db.Update(func(tx *bolt.Tx) error { return putRecord(tx, m, a, time.Now()) })
	if err != nil {
		return closedErr(err)
	}
	d.maybeSweep()
	return nil
}

// Sweep removes the records of messages whose deadline passed more than
// an hour before now: the endpoint server no longer delivers them. It
// returns how many it removed. OpenDedup sweeps, and so does recording
// every ten minutes; long-running software need not call it.
func (d *Dedup) Sweep(now time.Time) (int, error) {
	total := 0
	limit := binary.BigEndian.AppendUint64(nil, uint64(max(now.Unix(), 0)))
	for {
		n := 0
		err := d.db.Update(func(tx *bolt.Tx) error {
			n = 0
			done, exp := tx.Bucket(bucketDone), tx.Bucket(bucketExpiry)
			c := exp.Cursor()
			for k, _ := c.First(); k != nil && n < sweepChunk; k, _ = c.First() {
				if len(k) > 8 {
					if bytes.Compare(k[:8], limit) > 0 {
						break
					}
					if err := done.Delete(k[8:]); err != nil {
						return err
					}
				} // else not a key of ours: drop it
				if err := c.Delete(); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("sdk: sweep dedup: %w", err)
		}
		total += n
		if n < sweepChunk {
			break
		}
	}
	d.mu.Lock()
	d.lastSweep = now
	d.mu.Unlock()
	return total, nil
}

func (d *Dedup) maybeSweep() {
	d.mu.Lock()
	due := time.Since(d.lastSweep) > sweepEvery
	if due {
		d.lastSweep = time.Now() // one sweeper at a time
	}
	d.mu.Unlock()
	if due {
		d.Sweep(time.Now()) // best effort: the next one retries
	}
}

// handling is the Mux's state for one message being handled with a
// Dedup; Update finds it in the handler's context.
type handling struct {
	d *Dedup
	m *Message

	mu        sync.Mutex // guards the fields below
	committed bool
	answer    *answer // what Update recorded
}

type handlingKey struct{}

// Update runs fn in a read-write transaction of the Dedup's file and
// commits its writes. Called from a handler of a Mux that uses this Dedup,
// with the context the handler was given, it also records in the same
// transaction that the message is handled, with fn's result as the answer:
// the software's writes and the dedup record commit together or not at
// all. A crash before the commit leaves no trace and the message is
// handled again when it comes back; after the commit it is answered from
// the record. So the handler's effects kept in this file happen exactly
// once.
//
// Call Update at most once per message, as the handler's last step, and
// return what it returns: from then on the message counts as handled with
// that result, whatever the handler returns afterwards. If fn returns an
// error, nothing is written or recorded and Update returns the error.
// fn must not block: bbolt runs one write transaction at a time.
//
// Outside a handler, Update is a plain transaction that returns fn's
// result.
func (d *Dedup) Update(ctx context.Context, fn func(tx *bolt.Tx) (any, error)) (any, error) {
	h, _ := ctx.Value(handlingKey{}).(*handling)
	if h == nil || h.d != d {
		var res any
		err := d.db.Update(func(tx *bolt.Tx) error {
			var err error
			res, err = fn(tx)
			return err
		})
		return res, closedErr(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.committed {
		return nil, fmt.Errorf("sdk: Dedup.Update called twice while handling message %s from %s", h.m.ID, h.m.From)
	}
	var res any
	var a *answer
	err := d.db.Update(func(tx *bolt.Tx) error {
		var err error
		if res, err = fn(tx); err != nil {
			return err
		}
		if h.m.Kind == KindRequest {
			if a, err = resultAnswer(res); err != nil {
				return err
			}
		}
		return putRecord(tx, h.m, a, time.Now())
	})
	if err != nil {
		return nil, closedErr(err)
	}
	h.committed, h.answer = true, a
	d.maybeSweep()
	return res, nil
}

// recorded returns whether Update recorded the message, and its answer.
func (h *handling) recorded() (bool, *answer) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.committed, h.answer
}
