package relay

import (
	"time"

	"github.com/kurier-net/kurier/relay/wire"
)

// forwarded is an announcement another relay forwarded here, delivered to
// the control session of route. Its client waits at the relay named from.
type forwarded struct {
	from  string
	token wire.Token
	route *route
	until time.Time // when from has stopped waiting for the dial-back
}

// forwardLog remembers the announcements delivered for other relays while
// their clients may still wait, oldest first, in a ring of fixed size. All
// entries live equally long (PairTimeout), so the oldest expires first.
// When the ring is full of unexpired entries, the oldest is forgotten: if
// the member then withdraws that route, its client waits out PairTimeout,
// as it did before relays passed withdrawals on. Removed entries leave
// holes that prune and compact reclaim. It is guarded by Server.mu.
type forwardLog struct {
	ring    []*forwarded // nil: a slot whose entry was removed
	head, n int          // the entries are ring[head], ..., ring[head+n-1] (mod len)
	holes   int          // nil slots among them
}

func newForwardLog(size int) *forwardLog {
	return &forwardLog{ring: make([]*forwarded, max(size, 1))}
}

// add appends f, forgetting expired entries first. It reports whether it
// forgot an entry that had not expired to make room.
func (l *forwardLog) add(f *forwarded, now time.Time) (forgot bool) {
	l.prune(now)
	if l.n == len(l.ring) && l.holes > 0 {
		l.compact(now)
	}
	if l.n == len(l.ring) {
		forgot = true
		l.pop()
	}
	l.ring[(l.head+l.n)%len(l.ring)] = f
	l.n++
	return forgot
}

// prune forgets the oldest entries while they are expired or removed. As
// all entries live equally long, that is every expired one.
func (l *forwardLog) prune(now time.Time) {
	for l.n > 0 {
		if f := l.ring[l.head]; f != nil && now.Before(f.until) {
			return
		}
		l.pop()
	}
}

// compact moves the unexpired entries together, in order, so that the
// slots of removed and expired ones are free again. It runs only when the
// ring is full and has holes, so a full ring of live entries costs O(1)
// per add.
func (l *forwardLog) compact(now time.Time) {
	w := 0
	for i := range l.n {
		if f := l.ring[(l.head+i)%len(l.ring)]; f != nil && now.Before(f.until) {
			l.ring[(l.head+w)%len(l.ring)] = f // w <= i: nothing unread is overwritten
			w++
		}
	}
	for i := w; i < l.n; i++ {
		l.ring[(l.head+i)%len(l.ring)] = nil
	}
	l.n, l.holes = w, 0
}

func (l *forwardLog) pop() {
	if l.ring[l.head] == nil {
		l.holes--
	}
	l.ring[l.head] = nil
	l.head = (l.head + 1) % len(l.ring)
	l.n--
}

// remove forgets f if it is still there.
func (l *forwardLog) remove(f *forwarded) {
	for i := range l.n {
		if j := (l.head + i) % len(l.ring); l.ring[j] == f {
			l.ring[j] = nil
			l.holes++
			return
		}
	}
}

// takeRoute removes and returns the entries for r that have not expired.
func (l *forwardLog) takeRoute(r *route, now time.Time) []*forwarded {
	var out []*forwarded
	for i := range l.n { // bounded by MaxPending, like failPending
		j := (l.head + i) % len(l.ring)
		if f := l.ring[j]; f != nil && f.route == r {
			l.ring[j] = nil
			l.holes++
			if now.Before(f.until) {
				out = append(out, f)
			}
		}
	}
	return out
}

// refuseForwarded tells the relays that forwarded announcements for r,
// whose clients still wait, that the member withdrew r: its proxy ignores
// those announcements. r.withdrawn must already be set.
func (s *Server) refuseForwarded(r *route) {
	if s.forwarded == nil {
		return
	}
	s.mu.Lock()
	taken := s.forwarded.takeRoute(r, time.Now())
	s.mu.Unlock()
	if len(taken) == 0 {
		return
	}
	byRelay := map[string][]wire.Token{}
	for _, f := range taken {
		byRelay[f.from] = append(byRelay[f.from], f.token)
	}
	for from, tokens := range byRelay {
		s.cfg.Cluster.Refuse(from, tokens)
	}
}

// Refused ends the pending pairings of tokens, which this relay forwarded
// to another relay: that relay reports that the member withdrew the route
// before its proxy dialled back. Their clients are refused at once and
// counted as pair_refused. Tokens that match no pending pairing (paired,
// expired or never issued) are ignored. The cluster calls it; it does not
// block.
func (s *Server) Refused(tokens []wire.Token) {
	for _, tok := range tokens {
		if p := s.takePending(tok); p != nil {
			p.paired <- nil // buffered; the only value: the entry was taken here
		}
	}
}
