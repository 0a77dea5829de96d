package store

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Errors callers branch on. Each is returned wrapped with what was being
// done; test with errors.Is.
var (
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("store: closed")
	// ErrLocked is returned by Open when another process holds the file.
	ErrLocked = errors.New("store: database file is locked by another process")
	// ErrStopped is returned by every write after a commit failed: the
	// store stops writing (fail-stop) because after a failed fsync the
	// kernel may already have dropped the dirty pages it could not write.
	// Reopen the store to continue from the last durable state.
	ErrStopped = errors.New("store: stopped writing after a failed commit")
	// ErrNotFound: no such message (never stored, or purged after Retention).
	ErrNotFound = errors.New("store: message not found")
	// ErrExists: an outbox message with this id is already stored.
	ErrExists = errors.New("store: message id already in outbox")
	// ErrConflict: the sender reused a message id for different content.
	ErrConflict = errors.New("store: message id reused with different content")
	// ErrQueueFull: an outbox bound (per recipient or in total) is reached.
	ErrQueueFull = errors.New("store: outbox full")
	// ErrInboxFull: an inbox bound (per sender or in total) is reached;
	// the peer server answers 429.
	ErrInboxFull = errors.New("store: inbox full")
	// ErrNotPending: the message has reached a state the call can't change
	// (for example MarkAttempt on a delivered message).
	ErrNotPending = errors.New("store: message no longer pending")
	// ErrExpired: the message's deadline has passed.
	ErrExpired = errors.New("store: message deadline has passed")
	// ErrInvalid: a message or argument breaks a rule of the format.
	ErrInvalid = errors.New("store: invalid message")
	// ErrTooLarge: an envelope, receipt or answer exceeds its bound.
	ErrTooLarge = errors.New("store: too large")
	// ErrCorrupt: a record in the file could not be decoded.
	ErrCorrupt = errors.New("store: corrupt record")
)

// Limits bounds what is pending in one direction (outbox or inbox): not
// yet delivered to the peer, or not yet acknowledged by local software.
// Delivered and acknowledged messages don't count.
type Limits struct {
	// PerPeer bounds pending messages per peer. If zero, 10 000.
	PerPeer int
	// PerPeerBytes bounds the sealed bytes pending per peer. If zero, 256 MiB.
	PerPeerBytes int64
	// Total bounds pending messages over all peers. If zero, 100 000.
	Total int
	// TotalBytes bounds the sealed bytes pending over all peers. If zero, 1 GiB.
	TotalBytes int64
}

func (l *Limits) fill() error {
	if l.PerPeer < 0 || l.PerPeerBytes < 0 || l.Total < 0 || l.TotalBytes < 0 {
		return errors.New("negative limit")
	}
	if l.PerPeer == 0 {
		l.PerPeer = 10_000
	}
	if l.PerPeerBytes == 0 {
		l.PerPeerBytes = 256 << 20
	}
	if l.Total == 0 {
		l.Total = 100_000
	}
	if l.TotalBytes == 0 {
		l.TotalBytes = 1 << 30
	}
	return nil
}

// Config configures a Store. The zero value of every field but Path is a
// usable default.
type Config struct {
	// Path is the bbolt file. Required. Created with mode 0600 if missing.
	Path string
	// LockTimeout bounds the wait for the file lock when another process
	// has the file open; Open then fails with ErrLocked. If zero, 1s.
	LockTimeout time.Duration
	// Outbox bounds the messages waiting for delivery to peers.
	Outbox Limits
	// Inbox bounds the received messages waiting for local software.
	Inbox Limits
	// MaxSealed bounds Message.Sealed in bytes. If zero, 8 MiB (the
	// envelope bound of the peer protocol).
	MaxSealed int
	// MaxHorizon bounds how far after now a message deadline may lie:
	// Enqueue refuses later deadlines (ErrInvalid), Receive those later
	// than MaxHorizon+DedupMargin (the sender's clock may run ahead). It
	// bounds how long a sender retries and so how long dedup records must
	// live. If zero, 30 days.
	MaxHorizon time.Duration
	// Retention is how long a delivered, expired or failed outbox message,
	// and an acknowledged inbox message, keeps its full record (state,
	// attempts, receipt, answer) before the sweep removes it. Sealed
	// payloads are dropped at once, not kept for Retention. If zero, 7 days.
	Retention time.Duration
	// DedupMargin is how long after its deadline an inbox message's dedup
	// tombstone is kept. Receive refuses messages past their deadline, so
	// the tombstone only has to outlive the deadline by the amount the
	// local clock may step back. If zero, 1h.
	DedupMargin time.Duration
	// SweepInterval is how often the store sweeps itself (see Sweep). If
	// zero, 10m; if negative, never (the caller calls Sweep).
	SweepInterval time.Duration
	// Logger receives the sweeper's failures. If nil, logs are discarded.
	Logger *slog.Logger
}

const (
	maxPeer      = 63       // pki.ValidName: one DNS label
	maxService   = 64       // pki.ValidServiceName
	maxReceipt   = 64 << 10 // bytes; a receipt is JSON with one DER certificate
	maxAnswer    = 64 << 10 // bytes; the software's answer recorded by Ack
	maxErrorText = 512      // bytes of a recorded delivery error
	maxPoll      = 1000     // messages per Pending/Claim/Queue/Due call
	maxPollBytes = 32 << 20 // sealed bytes per Pending/Claim/Queue/Due call
	maxBatch     = 256      // operations per group commit
	maxBatchSize = 64 << 20 // sealed bytes per group commit
	formatV1     = 1        // on-disk format version, meta "version"
	openTimeout  = time.Second
)

// Store is the endpoint server's durable state: the outbox and the inbox
// in one bbolt file. A file is open in one Store at a time (a second Open,
// in any process, fails with ErrLocked); all methods are safe for
// concurrent use. Writes are group-committed: concurrent writers share one
// transaction and one fsync, and every write method returns only after
// its transaction is on disk.
type Store struct {
	cfg Config // immutable after Open
	db  *bolt.DB
	log *slog.Logger

	writes chan *writeReq // to the committer; unbuffered
	quit   chan struct{}  // closed by Close
	done   sync.WaitGroup // committer and sweeper

	closeOnce sync.Once
	closed    atomic.Bool
	stopped   atomic.Pointer[error] // the commit error that stopped writes

	mode       commitMode // how writes commit; only benchmarks change it
	sweepChunk int        // purge entries per sweep transaction; tests lower it

	leaseMu sync.Mutex           // guards leases
	leases  map[string]time.Time // inbox key → leased until; in memory only
}

// Open opens or creates the store file. It fails with ErrLocked if another
// process has it open for longer than cfg.LockTimeout. The caller must
// Close the store.
func Open(cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: Config.Path is required")
	}
	if err := cfg.Outbox.fill(); err != nil {
		return nil, fmt.Errorf("store: Config.Outbox: %w", err)
	}
	if err := cfg.Inbox.fill(); err != nil {
		return nil, fmt.Errorf("store: Config.Inbox: %w", err)
	}
	if cfg.LockTimeout < 0 || cfg.MaxSealed < 0 || cfg.MaxHorizon < 0 || cfg.Retention < 0 || cfg.DedupMargin < 0 {
		return nil, errors.New("store: Config durations and sizes must not be negative")
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = openTimeout
	}
	if cfg.MaxSealed == 0 {
		cfg.MaxSealed = 8 << 20
	}
	if cfg.MaxHorizon == 0 {
		cfg.MaxHorizon = 30 * 24 * time.Hour
	}
	if cfg.Retention == 0 {
		cfg.Retention = 7 * 24 * time.Hour
	}
	if cfg.DedupMargin == 0 {
		cfg.DedupMargin = time.Hour
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = 10 * time.Minute
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	db, err := bolt.Open(cfg.Path, 0o600, &bolt.Options{
		Timeout: cfg.LockTimeout,
		// The hashmap freelist stays fast when a long-lived file is
		// fragmented by many small deletes, which is this workload.
		FreelistType: bolt.FreelistMapType,
	})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("open %s: %w (waited %v)", cfg.Path, ErrLocked, cfg.LockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	if err := db.Update(initBuckets); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", cfg.Path, err)
	}
	s := &Store{
		cfg:    cfg,
		db:     db,
		log:    log.With("component", "store"),
		writes: make(chan *writeReq),
		quit:   make(chan struct{}),
		leases: make(map[string]time.Time),

		sweepChunk: 1000,
	}
	s.done.Go(s.commitLoop)
	if cfg.SweepInterval > 0 {
		s.done.Go(s.sweepLoop)
	}
	return s, nil
}

// Close stops the sweeper, lets writes already handed to the committer
// finish, and closes the file. Later calls fail with ErrClosed. Close is
// idempotent and safe to call concurrently with other methods.
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.quit)
		s.done.Wait()
		err = s.db.Close()
	})
	return err
}

func initBuckets(tx *bolt.Tx) error {
	for _, name := range allBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	meta := tx.Bucket(bMeta)
	v := meta.Get(keyVersion)
	switch {
	case v == nil:
		return meta.Put(keyVersion, []byte{formatV1})
	case len(v) != 1 || v[0] != formatV1:
		return fmt.Errorf("%w: file format version %x, this program reads %d", ErrCorrupt, v, formatV1)
	}
	return nil
}

// view runs a read-only transaction.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// commitMode selects how writes reach the disk. Production always uses
// groupCommit; the other two exist so the benchmarks can compare.
type commitMode uint8

const (
	groupCommit commitMode = iota // our committer: one tx + fsync per batch
	soloUpdate                    // db.Update per write: one fsync each
	boltBatch                     // db.Batch: bbolt's timer-based coalescing
)

// A writeReq is one write operation handed to the committer.
type writeReq struct {
	fn   func(*bolt.Tx) error
	size int        // sealed bytes it writes, to bound a batch
	done chan error // buffered; receives exactly one result
}

// unchanged marks the result of an operation that wrote nothing: a failed
// precondition (err set) or a repeat with nothing left to do (err nil).
// The committer then carries on with the rest of the batch in the same
// transaction instead of rolling back, so a full queue under load doesn't
// cost the other writers their batch; and a batch in which nothing was
// written is rolled back instead of committed, which saves the fsync for
// duplicate deliveries and refusals. Operations must check everything that
// can fail before their first Put.
type unchanged struct{ err error }

func (u unchanged) Error() string {
	if u.err == nil {
		return "store: nothing to write"
	}
	return u.err.Error()
}

func (u unchanged) Unwrap() error { return u.err }

// reject returns err as the result of an operation that wrote nothing.
func reject(err error) error { return unchanged{err} }

// noop is the result of an operation that succeeded without writing.
var noop error = unchanged{}

// unwrapUnchanged returns the operation's own result.
func unwrapUnchanged(err error) error {
	if u, ok := errors.AsType[unchanged](err); ok {
		return u.err
	}
	return err
}

// write runs fn in a write transaction and returns once the transaction is
// durable, or fn's error. fn may run more than once (when another
// operation in its batch fails and the batch is retried), so it must set
// every result it reports on each run.
func (s *Store) write(size int, fn func(*bolt.Tx) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if p := s.stopped.Load(); p != nil {
		return fmt.Errorf("%w: %w", ErrStopped, *p)
	}
	var err error
	switch s.mode {
	case soloUpdate:
		err = s.db.Update(fn)
	case boltBatch:
		err = s.db.Batch(fn)
	default:
		r := &writeReq{fn: fn, size: size, done: make(chan error, 1)}
		select {
		case s.writes <- r:
			err = <-r.done // the committer answers everything it took
		case <-s.quit:
			return ErrClosed
		}
	}
	err = unwrapUnchanged(err)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// commitLoop is the group committer: it takes one waiting write, then
// every other write already waiting (up to maxBatch), and commits them in
// one transaction with one fsync. While a commit is on disk new writers
// queue up, so the batch size follows the load with no added delay: a lone
// writer pays one fsync, n concurrent writers share one.
func (s *Store) commitLoop() {
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-s.writes:
			batch = append(batch[:0], r)
		case <-s.quit:
			return
		}
		size := batch[0].size
	more:
		for len(batch) < maxBatch && size < maxBatchSize {
			select {
			case r := <-s.writes:
				batch = append(batch, r)
				size += r.size
			default:
				break more
			}
		}
		s.commit(batch)
		clear(batch) // drop references to finished requests
	}
}

// commit runs batch in one transaction and answers every request. An
// operation that fails after writing rolls the transaction back; it gets
// its error and the others run again in a fresh transaction.
func (s *Store) commit(batch []*writeReq) {
	results := make([]error, len(batch))
	for len(batch) > 0 {
		if p := s.stopped.Load(); p != nil {
			for _, r := range batch {
				r.done <- fmt.Errorf("%w: %w", ErrStopped, *p)
			}
			return
		}
		tx, err := s.db.Begin(true)
		if err != nil {
			for _, r := range batch {
				r.done <- fmt.Errorf("store: begin transaction: %w", err)
			}
			return
		}
		failed, wrote := -1, false
		for i, r := range batch {
			results[i] = safeCall(r.fn, tx)
			if _, ok := errors.AsType[unchanged](results[i]); ok {
				continue
			}
			if results[i] != nil {
				failed = i
				break
			}
			wrote = true
		}
		if failed >= 0 {
			tx.Rollback()
			batch[failed].done <- results[failed]
			batch = append(batch[:failed], batch[failed+1:]...)
			results = results[:len(batch)]
			continue
		}
		if !wrote {
			tx.Rollback() // nothing to make durable: spare the fsync
		} else if err := tx.Commit(); err != nil {
			s.stopped.CompareAndSwap(nil, &err)
			for _, r := range batch {
				r.done <- fmt.Errorf("%w: %w", ErrStopped, err)
			}
			return
		}
		for i, r := range batch {
			r.done <- results[i]
		}
		return
	}
}

// safeCall runs fn, turning a panic into an error so that one broken
// operation can't take the committer, and every other writer, down.
func safeCall(fn func(*bolt.Tx) error, tx *bolt.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("store: operation panicked: %v", p)
		}
	}()
	return fn(tx)
}

// Stats counts what is pending in each direction.
type Stats struct {
	OutboxMessages int   `json:"outbox_messages"` // accepted, not yet delivered, expired or failed
	OutboxBytes    int64 `json:"outbox_bytes"`    // their sealed bytes
	InboxMessages  int   `json:"inbox_messages"`  // received, not yet acknowledged by local software
	InboxBytes     int64 `json:"inbox_bytes"`     // their sealed bytes
}

// Stats reports the pending counts. It is cheap: the counts are kept with
// every write.
func (s *Store) Stats() (Stats, error) {
	var st Stats
	err := s.view(func(tx *bolt.Tx) error {
		o, err := getTotals(tx, keyOutTotals)
		if err != nil {
			return err
		}
		i, err := getTotals(tx, keyInTotals)
		if err != nil {
			return err
		}
		st = Stats{int(o.count), o.bytes, int(i.count), i.bytes}
		return nil
	})
	return st, err
}
