package cluster

import (
	"slices"
	"time"
)

// limits bound what the table accepts for one relay, this one included.
type limits struct {
	maxNames     int // route names per relay
	maxNameBytes int // sum of the route name lengths per relay
}

const (
	// maxOutbox bounds own changes waiting to be gossiped. Past it the
	// oldest are dropped; the other relays see a gap and pull.
	maxOutbox = 4096
	// maxPendingDeltas bounds the out-of-order routes messages kept per
	// relay while waiting for the ones before them.
	maxPendingDeltas = 256
	// maxChanges bounds the changes in one routes message we build.
	maxChanges = 255
)

// origin is what this relay knows of another relay's routes: its complete
// list of held names at version of incarnation inc. Changes arrive in
// routes messages, which carry consecutive versions and can arrive in any
// order; those that do not connect to version wait in pending. If the gap
// does not close within a grace period, this relay pulls the complete list
// from the origin. inc 0 means nothing is known yet.
type origin struct {
	inc, version uint64
	names        map[string]struct{}
	nameBytes    int
	dir          uint64               // newest directory version the origin announced
	pending      map[uint64]routesMsg // by base; every base > version
	gapSince     time.Time            // zero if pending is empty
	joined       time.Time
	pulling      bool      // a pull is in flight
	nextPull     time.Time // no pull before this, after a failed one
}

// table is the cluster's view of which relay holds which route name. It
// does no I/O and takes no lock: Cluster guards it with its mutex.
//
// Versions make the view converge whatever the order of arrival: each
// relay counts its own changes (version) within an incarnation (inc, a
// start time in nanoseconds, so a restarted relay's counter restarting at
// zero is never mistaken for old news). A change is applied only once, in
// version order, so a late or replayed message can never bring back a
// route that a later version withdrew. A relay's version 0 is always the
// empty list.
type table struct {
	self string
	lim  limits

	inc, version uint64              // own incarnation and version
	own          map[string]struct{} // own held names
	ownBytes     int
	outbox       []change // own changes outboxBase+1..version, not yet gossiped
	outboxBase   uint64

	origins map[string]*origin  // other relays that are live members
	holders map[string][]string // route name → other relays holding it
}

func newTable(self string, inc uint64, lim limits) *table {
	return &table{
		self: self, lim: lim, inc: inc,
		own:     map[string]struct{}{},
		origins: map[string]*origin{},
		holders: map[string][]string{},
	}
}

// ownResult is what setOwn did.
type ownResult int

const (
	ownUnchanged ownResult = iota
	ownChanged
	ownOverLimit       // not recorded: the relay holds too many names
	ownChangedDropping // recorded, but the outbox overflowed and was cleared
)

// setOwn records whether this relay holds name.
func (t *table) setOwn(name string, held bool) ownResult {
	_, has := t.own[name]
	if has == held {
		return ownUnchanged
	}
	if held {
		if len(t.own) >= t.lim.maxNames || t.ownBytes+len(name) > t.lim.maxNameBytes {
			return ownOverLimit
		}
		t.own[name] = struct{}{}
		t.ownBytes += len(name)
	} else {
		delete(t.own, name)
		t.ownBytes -= len(name)
	}
	t.version++
	res := ownChanged
	if len(t.outbox) >= maxOutbox {
		// Drop the backlog; receivers see a gap and pull the whole list.
		t.outbox = nil
		t.outboxBase = t.version - 1
		res = ownChangedDropping
	}
	t.outbox = append(t.outbox, change{held: held, name: name})
	return res
}

// flush turns the outbox into routes messages of at most maxBytes each.
func (t *table) flush(maxBytes int) []routesMsg {
	if len(t.outbox) == 0 {
		return nil
	}
	var out []routesMsg
	hdr := routesHeader(t.self)
	cur := routesMsg{origin: t.self, inc: t.inc, base: t.outboxBase}
	size := hdr
	for _, c := range t.outbox {
		n := changeSize(c.name)
		if len(cur.changes) > 0 && (size+n > maxBytes || len(cur.changes) == maxChanges) {
			out = append(out, cur)
			cur = routesMsg{origin: t.self, inc: t.inc, base: cur.base + uint64(len(cur.changes))}
			size = hdr
		}
		cur.changes = append(cur.changes, c)
		size += n
	}
	out = append(out, cur)
	t.outbox = nil
	t.outboxBase = t.version
	return out
}

// ownRecord returns this relay's complete list.
func (t *table) ownRecord(dir uint64) record {
	names := make([]string, 0, len(t.own))
	for n := range t.own {
		names = append(names, n)
	}
	slices.Sort(names)
	return record{origin: t.self, inc: t.inc, version: t.version, dir: dir, names: names}
}

// records returns what this relay knows, its own list first, in at most
// maxBytes of encoding. Relays that do not fit are left out: the receiver
// learns them from the relays themselves.
func (t *table) records(dir uint64, maxBytes int) []record {
	own := t.ownRecord(dir)
	out := []record{own}
	size := 2 + 4 + recordSize(own)
	for name, o := range t.origins {
		if o.inc == 0 {
			continue
		}
		r := record{origin: name, inc: o.inc, version: o.version, dir: o.dir, names: make([]string, 0, len(o.names))}
		for n := range o.names {
			r.names = append(r.names, n)
		}
		if n := recordSize(r); size+n <= maxBytes {
			out = append(out, r)
			size += n
		}
	}
	return out
}

// addOrigin starts tracking a relay that joined.
func (t *table) addOrigin(name string, now time.Time) {
	if name == t.self {
		return
	}
	if _, ok := t.origins[name]; !ok {
		t.origins[name] = &origin{names: map[string]struct{}{}, joined: now}
	}
}

// dropOrigin forgets a relay that left or failed, with all it held.
func (t *table) dropOrigin(name string) {
	o, ok := t.origins[name]
	if !ok {
		return
	}
	for n := range o.names {
		t.removeHolder(n, name)
	}
	delete(t.origins, name)
}

// reset starts a new incarnation of o: a restarted relay holds nothing
// until it says so.
func (t *table) reset(name string, o *origin, inc uint64) {
	for n := range o.names {
		t.removeHolder(n, name)
	}
	clear(o.names)
	o.inc, o.version, o.nameBytes, o.dir = inc, 0, 0, 0
	o.pending = nil
	o.gapSince = time.Time{}
}

// outcome is what applying a remote message did.
type outcome struct {
	fresh     bool   // it told us something new: pass it on
	overLimit int    // names refused because the origin holds too many
	drop      string // why the message was dropped, if it was
}

// lookup returns the origin state for a remote message about name at
// incarnation inc, resetting it for a newer incarnation. It returns nil if
// the message is to be ignored; drop says why if that is worth counting.
func (t *table) lookup(name string, inc uint64) (o *origin, drop string) {
	if name == t.self {
		return nil, "" // our own news, come back
	}
	o, ok := t.origins[name]
	if !ok {
		return nil, "unknown_origin"
	}
	switch {
	case inc < o.inc:
		return nil, "" // an earlier life of that relay
	case inc > o.inc:
		t.reset(name, o, inc)
	}
	return o, ""
}

// applyDelta applies a routes message.
func (t *table) applyDelta(m routesMsg, now time.Time) outcome {
	o, drop := t.lookup(m.origin, m.inc)
	if o == nil {
		return outcome{drop: drop}
	}
	end := m.base + uint64(len(m.changes))
	if end <= o.version {
		return outcome{} // applied already
	}
	if m.base > o.version {
		if _, ok := o.pending[m.base]; ok {
			return outcome{}
		}
		if len(o.pending) >= maxPendingDeltas {
			return outcome{drop: "queue_full"}
		}
		if o.pending == nil {
			o.pending = map[uint64]routesMsg{}
		}
		o.pending[m.base] = m
		if o.gapSince.IsZero() {
			o.gapSince = now
		}
		return outcome{fresh: true}
	}
	over := t.applyChanges(m.origin, o, m)
	over += t.drainPending(m.origin, o, now)
	return outcome{fresh: true, overLimit: over}
}

// applyChanges applies the changes of m past o.version; m.base must not be
// past it.
func (t *table) applyChanges(name string, o *origin, m routesMsg) (overLimit int) {
	for i, c := range m.changes {
		if m.base+uint64(i)+1 <= o.version {
			continue
		}
		if !t.set(name, o, c.name, c.held) {
			overLimit++
		}
	}
	o.version = m.base + uint64(len(m.changes))
	return overLimit
}

// drainPending applies the pending messages that now connect and drops
// those that are covered.
func (t *table) drainPending(name string, o *origin, now time.Time) (overLimit int) {
	for progress := true; progress && len(o.pending) > 0; {
		progress = false
		for base, m := range o.pending {
			switch {
			case base+uint64(len(m.changes)) <= o.version:
				delete(o.pending, base)
			case base <= o.version:
				overLimit += t.applyChanges(name, o, m)
				delete(o.pending, base)
				progress = true
			}
		}
	}
	if len(o.pending) == 0 {
		o.gapSince = time.Time{}
	} else {
		o.gapSince = now // still a gap: give it the grace period again
	}
	return overLimit
}

// set records whether origin o (named name) holds route. It returns false
// if o already holds as many names as it may.
func (t *table) set(name string, o *origin, route string, held bool) bool {
	_, has := o.names[route]
	switch {
	case has == held:
	case held:
		if len(o.names) >= t.lim.maxNames || o.nameBytes+len(route) > t.lim.maxNameBytes {
			return false
		}
		o.names[route] = struct{}{}
		o.nameBytes += len(route)
		t.holders[route] = append(t.holders[route], name)
	default:
		delete(o.names, route)
		o.nameBytes -= len(route)
		t.removeHolder(route, name)
	}
	return true
}

func (t *table) removeHolder(route, origin string) {
	hs := t.holders[route]
	if i := slices.Index(hs, origin); i >= 0 {
		hs = slices.Delete(hs, i, i+1)
	}
	if len(hs) == 0 {
		delete(t.holders, route)
	} else {
		t.holders[route] = hs
	}
}

// applyRecord applies a complete list, from push/pull or a pull reply. It
// replaces what is known if it is newer.
func (t *table) applyRecord(r record, now time.Time) outcome {
	o, drop := t.lookup(r.origin, r.inc)
	if o == nil {
		return outcome{drop: drop}
	}
	var res outcome
	if r.dir > o.dir {
		o.dir = r.dir
		res.fresh = true
	}
	if r.version <= o.version {
		return res
	}
	want := make(map[string]struct{}, len(r.names))
	for _, n := range r.names {
		want[n] = struct{}{}
	}
	for n := range o.names {
		if _, ok := want[n]; !ok {
			t.set(r.origin, o, n, false)
		}
	}
	for n := range want {
		if !t.set(r.origin, o, n, true) {
			res.overLimit++
		}
	}
	o.version = r.version
	res.overLimit += t.drainPending(r.origin, o, now)
	res.fresh = true
	return res
}

// applyDir applies a dir message. It reports whether it was news.
func (t *table) applyDir(m dirMsg) outcome {
	o, drop := t.lookup(m.origin, m.inc)
	if o == nil {
		return outcome{drop: drop}
	}
	if m.version <= o.dir {
		return outcome{}
	}
	o.dir = m.version
	return outcome{fresh: true}
}

// holdersOf returns the other relays that hold route.
func (t *table) holdersOf(route string) []string {
	return slices.Clone(t.holders[route])
}

// pullsDue marks and returns the relays whose complete list to pull now:
// those we heard nothing from within grace of their joining, and those
// whose gap did not close within grace.
func (t *table) pullsDue(now time.Time, grace time.Duration) []string {
	var due []string
	for name, o := range t.origins {
		if o.pulling || now.Before(o.nextPull) {
			continue
		}
		silent := o.inc == 0 && now.Sub(o.joined) >= grace
		gap := !o.gapSince.IsZero() && now.Sub(o.gapSince) >= grace
		if silent || gap {
			o.pulling = true
			due = append(due, name)
		}
	}
	return due
}

// pullDone ends a pull; after a failure the next waits for retry.
func (t *table) pullDone(name string, ok bool, now time.Time, retry time.Duration) {
	o, found := t.origins[name]
	if !found {
		return
	}
	o.pulling = false
	if !ok {
		o.nextPull = now.Add(retry)
	}
}

// newestDir returns the relays that announced a directory newer than have,
// the newest first.
func (t *table) newerDirs(have uint64) []dirSource {
	var out []dirSource
	for name, o := range t.origins {
		if o.dir > have {
			out = append(out, dirSource{name, o.dir})
		}
	}
	slices.SortFunc(out, func(a, b dirSource) int {
		switch {
		case a.version > b.version:
			return -1
		case a.version < b.version:
			return 1
		}
		return 0
	})
	return out
}

type dirSource struct {
	origin  string
	version uint64
}
