package store

import (
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Buckets. The layout is described in the package documentation (doc.go).
var (
	bMeta        = []byte("meta")
	bOutMsg      = []byte("out.msg")
	bOutState    = []byte("out.state")
	bOutQueue    = []byte("out.queue")
	bOutDue      = []byte("out.due")
	bOutPeers    = []byte("out.peers")
	bOutPurge    = []byte("out.purge")
	bInMsg       = []byte("in.msg")
	bInState     = []byte("in.state")
	bInPending   = []byte("in.pending")
	bInPeers     = []byte("in.peers")
	bInPurge     = []byte("in.purge")
	bLinks       = []byte("links")
	allBuckets   = [][]byte{bMeta, bOutMsg, bOutState, bOutQueue, bOutDue, bOutPeers, bOutPurge, bInMsg, bInState, bInPending, bInPeers, bInPurge, bLinks}
	keyVersion   = []byte("version")
	keyOutTotals = []byte("out.totals")
	keyInTotals  = []byte("in.totals")
)

// Keys. Integers are big-endian so that keys sort by them; a peer name is
// prefixed with its length so that one peer's keys form a contiguous range
// that no other name can extend.

// peerPrefix is len(peer) || peer.
func peerPrefix(peer string) []byte {
	return append([]byte{byte(len(peer))}, peer...)
}

// queueKey is len(peer) || peer || seq: a recipient's queue in order of
// acceptance.
func queueKey(peer string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(peerPrefix(peer), seq)
}

// dueKey is nextAttempt || len(peer) || peer.
func dueKey(t time.Time, peer string) []byte {
	return append(binary.BigEndian.AppendUint64(nil, tkey(t)), peerPrefix(peer)...)
}

// purgeKey is time || record key.
func purgeKey(t time.Time, key []byte) []byte {
	return append(binary.BigEndian.AppendUint64(nil, tkey(t)), key...)
}

// inKey is id || peer: the inbox is keyed by sender and id, and ids lead
// so that the key has no separator.
func inKey(id ID, peer string) []byte {
	return append(id[:], peer...)
}

func splitInKey(k []byte) (ID, string, error) {
	if len(k) <= len(ID{}) {
		return ID{}, "", fmt.Errorf("%w: inbox key of %d bytes", ErrCorrupt, len(k))
	}
	return ID(k[:16]), string(k[16:]), nil
}

// keyTime inverts tkey.
func keyTime(n uint64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(n)).UTC()
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// tkey maps a time to an index key: Unix nanoseconds, 0 for the zero time
// and anything before 1970.
func tkey(t time.Time) uint64 {
	if t.IsZero() || t.Before(time.Unix(0, 0)) {
		return 0
	}
	return uint64(t.UnixNano())
}

// Values start with the format version byte and continue with fields in a
// fixed order: integers as varints, strings and byte slices as uvarint
// length || bytes, times as varint Unix nanoseconds (0 = zero time), ids as
// 16 raw bytes.

type encoder struct{ b []byte }

func newEncoder(size int) *encoder {
	e := &encoder{b: make([]byte, 0, size+64)}
	e.b = append(e.b, formatV1)
	return e
}

func (e *encoder) byte(v byte)      { e.b = append(e.b, v) }
func (e *encoder) uvarint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) id(v ID)          { e.b = append(e.b, v[:]...) }
func (e *encoder) bytes(v []byte) {
	e.uvarint(uint64(len(v)))
	e.b = append(e.b, v...)
}
func (e *encoder) string(v string) {
	e.uvarint(uint64(len(v)))
	e.b = append(e.b, v...)
}
func (e *encoder) time(t time.Time) {
	if t.IsZero() {
		e.b = binary.AppendVarint(e.b, 0)
		return
	}
	e.b = binary.AppendVarint(e.b, t.UnixNano())
}

// decoder reads what encoder wrote. It never panics on bad input: the
// first error sticks and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func newDecoder(b []byte, what string) *decoder {
	d := &decoder{b: b}
	if len(b) == 0 || b[0] != formatV1 {
		d.err = fmt.Errorf("%w: %s: unknown format", ErrCorrupt, what)
		return d
	}
	d.b = b[1:]
	return d
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) id() ID {
	var v ID
	if d.err != nil || len(d.b) < len(v) {
		d.fail()
		return v
	}
	copy(v[:], d.b)
	d.b = d.b[len(v):]
	return v
}

// view returns the next length-prefixed field without copying: the slice
// points into the bbolt page and is valid only inside the transaction.
func (d *decoder) view() []byte {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// bytes returns a copy of the next length-prefixed field; nil if empty.
func (d *decoder) bytes() []byte {
	v := d.view()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (d *decoder) string() string { return string(d.view()) }

func (d *decoder) time() time.Time {
	n := d.varint()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Message record (out.msg, in.msg): kind, flags, correlation id, peer,
// service, deadline, created, sealed. Sealed is last and empty once the
// message no longer needs it (delivered, acknowledged): the payload is
// dropped as early as possible, which keeps the file small and holds
// health data no longer than needed.

const flagSync = 1

func encodeMessage(m *Message, withSealed bool) []byte {
	n := 0
	if withSealed {
		n = len(m.Sealed)
	}
	e := newEncoder(n + len(m.Peer) + len(m.Service))
	e.byte(byte(m.Kind))
	var flags byte
	if m.Sync {
		flags |= flagSync
	}
	e.byte(flags)
	e.id(m.CorrelationID)
	e.string(m.Peer)
	e.string(m.Service)
	e.time(m.Deadline)
	e.time(m.CreatedAt)
	if withSealed {
		e.bytes(m.Sealed)
	} else {
		e.bytes(nil)
	}
	return e.b
}

// decodeMessage decodes a message record; Sealed is copied only if
// withSealed.
func decodeMessage(id ID, v []byte, withSealed bool) (Message, error) {
	d := newDecoder(v, "message")
	m := Message{ID: id}
	m.Kind = Kind(d.byte())
	m.Sync = d.byte()&flagSync != 0
	m.CorrelationID = d.id()
	m.Peer = d.string()
	m.Service = d.string()
	m.Deadline = d.time()
	m.CreatedAt = d.time()
	if withSealed {
		m.Sealed = d.bytes()
	} else {
		d.view()
	}
	if d.err != nil {
		return Message{}, fmt.Errorf("message %s: %w", id, d.err)
	}
	return m, nil
}

// outState is the mutable part of an outbox message (out.state/<id>).
type outState struct {
	state       State
	seq         uint64
	attempts    uint64
	nextAttempt time.Time
	updatedAt   time.Time
	sealedLen   uint64
	peer        string
	lastError   string
	receipt     []byte // a view into the page after decoding; copy to keep
}

func (s *outState) encode() []byte {
	e := newEncoder(len(s.receipt) + len(s.lastError) + len(s.peer))
	e.byte(byte(s.state))
	e.uvarint(s.seq)
	e.uvarint(s.attempts)
	e.time(s.nextAttempt)
	e.time(s.updatedAt)
	e.uvarint(s.sealedLen)
	e.string(s.peer)
	e.string(s.lastError)
	e.bytes(s.receipt)
	return e.b
}

func decodeOutState(v []byte) (outState, error) {
	d := newDecoder(v, "outbox state")
	var s outState
	s.state = State(d.byte())
	s.seq = d.uvarint()
	s.attempts = d.uvarint()
	s.nextAttempt = d.time()
	s.updatedAt = d.time()
	s.sealedLen = d.uvarint()
	s.peer = d.string()
	s.lastError = d.string()
	s.receipt = d.view()
	if d.err == nil && (s.state < Queued || s.state > Failed) {
		d.err = fmt.Errorf("%w: outbox state %d", ErrCorrupt, s.state)
	}
	return s, d.err
}

// inState is the dedup record and delivery state of an inbox message
// (in.state/<id><peer>). It outlives the message record as the tombstone.
type inState struct {
	flags      byte // inAcked, inTombstone
	seq        uint64
	receivedAt time.Time
	ackedAt    time.Time
	deadline   time.Time
	sealedLen  uint64
	digest     [32]byte // SHA-256 of the sealed envelope
	responseID ID
	receipt    []byte // views into the page after decoding
	answer     []byte
}

const (
	inAcked     = 1 << 0 // local software acknowledged it
	inTombstone = 1 << 1 // message record and answer purged; dedup only
)

func (s *inState) encode() []byte {
	e := newEncoder(len(s.receipt) + len(s.answer))
	e.byte(s.flags)
	e.uvarint(s.seq)
	e.time(s.receivedAt)
	e.time(s.ackedAt)
	e.time(s.deadline)
	e.uvarint(s.sealedLen)
	e.b = append(e.b, s.digest[:]...)
	e.id(s.responseID)
	e.bytes(s.receipt)
	e.bytes(s.answer)
	return e.b
}

func decodeInState(v []byte) (inState, error) {
	d := newDecoder(v, "inbox state")
	var s inState
	s.flags = d.byte()
	s.seq = d.uvarint()
	s.receivedAt = d.time()
	s.ackedAt = d.time()
	s.deadline = d.time()
	s.sealedLen = d.uvarint()
	if d.err == nil && len(d.b) >= 32 {
		copy(s.digest[:], d.b)
		d.b = d.b[32:]
	} else {
		d.fail()
	}
	s.responseID = d.id()
	s.receipt = d.view()
	s.answer = d.view()
	return s, d.err
}

// peerRec is a recipient's queue head and counters (out.peers/<peer>), or
// a sender's counters (in.peers/<peer>, where only count and bytes are
// used).
type peerRec struct {
	nextSeq uint64
	count   uint64
	bytes   int64
	hasDue  bool      // outbox: an out.due entry exists for the head
	dueAt   time.Time // outbox: its time
}

func (p *peerRec) encode() []byte {
	e := newEncoder(0)
	e.uvarint(p.nextSeq)
	e.uvarint(p.count)
	e.uvarint(uint64(p.bytes))
	var due byte
	if p.hasDue {
		due = 1
	}
	e.byte(due)
	e.time(p.dueAt)
	return e.b
}

func getPeer(b *bolt.Bucket, peer string) (peerRec, error) {
	v := b.Get([]byte(peer))
	if v == nil {
		return peerRec{}, nil
	}
	return decodePeer(v, peer)
}

func decodePeer(v []byte, peer string) (peerRec, error) {
	d := newDecoder(v, "peer "+peer)
	var p peerRec
	p.nextSeq = d.uvarint()
	p.count = d.uvarint()
	p.bytes = int64(d.uvarint())
	p.hasDue = d.byte() == 1
	p.dueAt = d.time()
	return p, d.err
}

// totals are the pending counters of one direction (meta/out.totals,
// meta/in.totals). nextSeq numbers inbox arrivals.
type totals struct {
	count   uint64
	bytes   int64
	nextSeq uint64
}

func (t *totals) encode() []byte {
	e := newEncoder(0)
	e.uvarint(t.count)
	e.uvarint(uint64(t.bytes))
	e.uvarint(t.nextSeq)
	return e.b
}

func getTotals(tx *bolt.Tx, key []byte) (totals, error) {
	v := tx.Bucket(bMeta).Get(key)
	if v == nil {
		return totals{}, nil
	}
	d := newDecoder(v, string(key))
	var t totals
	t.count = d.uvarint()
	t.bytes = int64(d.uvarint())
	t.nextSeq = d.uvarint()
	return t, d.err
}

func putTotals(tx *bolt.Tx, key []byte, t totals) error {
	return tx.Bucket(bMeta).Put(key, t.encode())
}
