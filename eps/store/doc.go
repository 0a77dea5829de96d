// Package store is the endpoint server's durable state: the outbox of
// messages accepted from local software for delivery to other members, and
// the inbox of messages received from them for local software, in one
// bbolt file.
//
// # Guarantees
//
// Every method that changes state returns only after its transaction is
// on disk (fsync). An Enqueue or Receive that returned nil survives a crash
// of the process or the machine; an AckAndEnqueue happened entirely or not
// at all. Writes are group-committed: concurrent writers share one
// transaction and one fsync, with no added delay for a lone writer (see
// the benchmarks in bench_test.go). If a commit fails, the store stops
// writing (ErrStopped) rather than carry on over pages the kernel may have
// dropped; reopening continues from the last durable state.
//
// Only one process may open the file: a second Open waits
// Config.LockTimeout for the lock and fails with ErrLocked.
//
// Everything is bounded: pending messages per peer and in total, by count
// and by bytes (Limits); envelope, receipt, answer and error text sizes;
// how far ahead a deadline may lie (Config.MaxHorizon); how many results a
// call returns; and how long records are kept (Config.Retention,
// Config.DedupMargin).
//
// # Outbox
//
// Enqueue assigns each message the next sequence number of its recipient;
// a recipient's pending messages are delivered head-of-line in that order.
// Next and Queue return a recipient's head or first few; Due returns the
// heads of all recipients whose NextAttempt has come. A delivery worker
// then calls MarkDelivered with the receipt, MarkAttempt with the error
// and the next time to try, MarkFailed on a final refusal, or MarkExpired
// once the deadline passed. States: queued → delivering → delivered,
// expired or failed.
//
// # Inbox
//
// Receive deduplicates by (sender, id): a repeated delivery gets the
// stored receipt back and stores nothing. Local software takes messages
// with Claim (leased, for long-poll) or Pending, and acknowledges them with
// Ack, or, for a request whose answer goes back to the sender, with
// AckAndEnqueue, which acknowledges and enqueues the response in one
// transaction.
//
// # Retention and tombstones
//
// A sealed envelope is dropped as soon as it is no longer needed: when the
// outbox message is final, when the inbox message is acknowledged. The
// rest of the record (state, attempts, receipt, answer) is kept for
// Config.Retention, then swept.
//
// The outbox keeps no tombstone: it deduplicates nothing, and a final
// record is kept until its deadline has passed by DedupMargin even when
// Retention is shorter, so that FindRequest recognises a late response.
// After the sweep, Get returns ErrNotFound.
//
// The inbox keeps a tombstone: after Retention the message record goes, but
// the dedup record (id, sender, deadline, envelope digest, receipt) stays
// until the deadline has passed by DedupMargin. That is enough: a sender
// retries only until the deadline, and Receive refuses a message past its
// deadline (ErrExpired), on the same clock the sweep uses; the margin
// covers that clock stepping back. So a retry that arrives after its
// record was purged is either refused or still finds its tombstone, and is
// never stored twice. Tombstones cost about 100 bytes plus the receipt
// each, for (deadline − arrival + DedupMargin) each.
//
// # On-disk layout
//
// One bbolt file, mode 0600. Integers in keys are big-endian uint64 so
// keys sort by them; times in keys are Unix nanoseconds. A peer name in a
// key is prefixed by its length byte (peerPrefix), so one peer's keys form
// a range no other name extends. Values start with a format version byte
// (1) followed by fields in fixed order: uvarints, varint Unix-nanosecond
// times (0 = none), 16-byte ids, and uvarint-length-prefixed strings and
// bytes (records.go).
//
//	bucket      key                              value
//	meta        "version"                        0x01 (file format)
//	meta        "out.totals", "in.totals"        pending count, bytes; next inbox arrival seq
//	out.msg     id                               kind, sync, correlation id, peer, service, deadline, created, sealed (empty once final)
//	out.state   id                               state, seq, attempts, next attempt, updated, sealed length, peer, last error, receipt
//	out.queue   len|peer|seq                     id: pending messages per recipient in order of acceptance
//	out.due     nextAttempt|len|peer             id of the recipient's queue head: one entry per recipient with pending messages
//	out.peers   peer                             next seq, pending count and bytes, time of its out.due entry
//	out.purge   time|id                          empty: final record to remove at time
//	in.msg      id|peer                          as out.msg; sealed empty once acknowledged; deleted after Retention
//	in.state    id|peer                          flags (acked, tombstone), arrival seq, received, acked, deadline, sealed length, SHA-256 of sealed, response id, receipt, answer
//	in.pending  seq                              id|peer: unacknowledged messages in arrival order
//	in.peers    peer                             pending count and bytes from that sender
//	in.purge    time|id|peer                     empty: trim to tombstone, or remove tombstone, at time
//
// Inbox keys lead with the fixed-length id, so id|peer needs no separator.
// Invariants, checked after every crash by the tests: the counters in meta
// and *.peers equal what out.queue and in.pending hold; every out.queue
// entry is a pending out.state and every pending out.state has one; each
// recipient's out.due entry names its queue head; every in.pending entry is
// an unacknowledged in.state and vice versa; an acknowledged in.state with
// a response id has that response in the outbox, and every outbox response
// has its request acknowledged with its id.
//
// Leases (Claim, Lease) are kept in memory only; see Claim.
package store
