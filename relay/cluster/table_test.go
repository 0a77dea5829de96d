package cluster

import (
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

var testLimits = limits{maxNames: 100, maxNameBytes: 4096}

// pair is a relay ("ro") and another ("rr") that tracks it.
func pair() (o, r *table) {
	o = newTable("ro", 1000, testLimits)
	r = newTable("rr", 2000, testLimits)
	r.addOrigin("ro", time.Now())
	return o, r
}

// names returns what r knows ro holds.
func names(r *table) []string {
	var out []string
	for n, hs := range r.holders {
		if slices.Contains(hs, "ro") {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

func flushOne(t *testing.T, o *table) routesMsg {
	t.Helper()
	ms := o.flush(maxDelta)
	if len(ms) != 1 {
		t.Fatalf("flush made %d messages, want 1", len(ms))
	}
	return ms[0]
}

func TestTableStaleDeltasNeverResurrect(t *testing.T) {
	o, r := pair()
	now := time.Now()
	o.setOwn("a.kurier.test", true)
	m1 := flushOne(t, o) // v1: a held
	rec1 := o.ownRecord(0)
	o.setOwn("a.kurier.test", false)
	m2 := flushOne(t, o) // v2: a withdrawn

	// Out of order: the withdrawal waits for the change before it.
	if out := r.applyDelta(m2, now); !out.fresh {
		t.Errorf("m2 not taken as news")
	}
	if r.origins["ro"].gapSince.IsZero() {
		t.Error("no gap recorded")
	}
	r.applyDelta(m1, now)
	if got := names(r); len(got) != 0 {
		t.Fatalf("after m1, m2: names = %v, want none", got)
	}
	if !r.origins["ro"].gapSince.IsZero() {
		t.Error("gap not closed")
	}
	// Replays of the older news change nothing.
	for _, out := range []outcome{r.applyDelta(m1, now), r.applyRecord(rec1, now), r.applyDelta(m2, now)} {
		if out.fresh {
			t.Error("a replay was taken as news")
		}
	}
	if got := names(r); len(got) != 0 {
		t.Errorf("after replays: names = %v, want none", got)
	}
}

func TestTableIncarnations(t *testing.T) {
	o, r := pair()
	now := time.Now()
	o.setOwn("a.kurier.test", true)
	r.applyDelta(flushOne(t, o), now)
	if got := names(r); !slices.Equal(got, []string{"a.kurier.test"}) {
		t.Fatalf("names = %v", got)
	}
	// ro restarts: its new life starts empty and counts from zero again.
	o2 := newTable("ro", 1001, testLimits)
	o2.setOwn("b.kurier.test", true)
	r.applyDelta(flushOne(t, o2), now)
	if got := names(r); !slices.Equal(got, []string{"b.kurier.test"}) {
		t.Fatalf("after restart: names = %v, want only b", got)
	}
	// News from the earlier life is ignored.
	o.setOwn("c.kurier.test", true)
	if out := r.applyDelta(flushOne(t, o), now); out.fresh {
		t.Error("news from an earlier incarnation taken")
	}
	if out := r.applyRecord(o.ownRecord(9), now); out.fresh {
		t.Error("a record from an earlier incarnation taken")
	}
	if got := names(r); !slices.Equal(got, []string{"b.kurier.test"}) {
		t.Errorf("names = %v, want only b", got)
	}
}

func TestTableRecordReplacesAndDrains(t *testing.T) {
	o, r := pair()
	now := time.Now()
	for _, n := range []string{"a", "b", "c"} {
		o.setOwn(n+".kurier.test", true)
	}
	lost := flushOne(t, o) // never arrives
	_ = lost
	o.setOwn("a.kurier.test", false)
	rec := o.ownRecord(7) // v4
	o.setOwn("d.kurier.test", true)
	later := flushOne(t, o) // v4 (a withdrawn), v5 (d held)
	r.applyDelta(later, now)
	if got := names(r); len(got) != 0 {
		t.Fatalf("a message past a gap was applied: %v", got)
	}
	if due := r.pullsDue(now.Add(pullGrace), pullGrace); !slices.Equal(due, []string{"ro"}) {
		t.Fatalf("pullsDue = %v, want [ro]", due)
	}
	r.applyRecord(rec, now)
	r.pullDone("ro", true, now, pullRetry)
	if got, want := names(r), []string{"b.kurier.test", "c.kurier.test", "d.kurier.test"}; !slices.Equal(got, want) {
		t.Errorf("names = %v, want %v", got, want)
	}
	if o := r.origins["ro"]; o.version != 5 || o.dir != 7 || len(o.pending) != 0 || !o.gapSince.IsZero() {
		t.Errorf("origin = version %d dir %d pending %d gap %v", o.version, o.dir, len(o.pending), o.gapSince)
	}
}

func TestTableSilentOriginIsPulled(t *testing.T) {
	_, r := pair()
	now := time.Now()
	if due := r.pullsDue(now, pullGrace); len(due) != 0 {
		t.Errorf("pulled before the grace period: %v", due)
	}
	due := r.pullsDue(now.Add(pullGrace), pullGrace)
	if !slices.Equal(due, []string{"ro"}) {
		t.Fatalf("pullsDue = %v, want [ro]", due)
	}
	if due := r.pullsDue(now.Add(2*pullGrace), pullGrace); len(due) != 0 {
		t.Errorf("a second pull while one is in flight: %v", due)
	}
	r.pullDone("ro", false, now.Add(2*pullGrace), pullRetry)
	if due := r.pullsDue(now.Add(2*pullGrace), pullGrace); len(due) != 0 {
		t.Errorf("a pull right after a failed one: %v", due)
	}
	if due := r.pullsDue(now.Add(2*pullGrace+pullRetry), pullGrace); len(due) != 1 {
		t.Errorf("no retry after pullRetry")
	}
}

func TestTableLimits(t *testing.T) {
	lim := limits{maxNames: 3, maxNameBytes: 1000}
	o := newTable("ro", 1, lim)
	r := newTable("rr", 1, limits{maxNames: 2, maxNameBytes: 1000})
	r.addOrigin("ro", time.Now())
	for i := range 4 {
		res := o.setOwn("n"+strconv.Itoa(i)+".kurier.test", true)
		if want := i < 3; (res == ownChanged) != want {
			t.Errorf("setOwn #%d = %v", i, res)
		}
	}
	out := r.applyDelta(flushOne(t, o), time.Now())
	if out.overLimit != 1 || len(names(r)) != 2 {
		t.Errorf("overLimit = %d, names = %v; want 1 refused, 2 kept", out.overLimit, names(r))
	}
	// Unknown relays are not tracked at all.
	x := newTable("rx", 1, lim)
	x.setOwn("x.kurier.test", true)
	if out := r.applyDelta(flushOne(t, x), time.Now()); out.drop != "unknown_origin" {
		t.Errorf("delta from an unknown relay: %+v", out)
	}
}

func TestTableOutboxOverflow(t *testing.T) {
	o := newTable("ro", 1, limits{maxNames: 2 * maxOutbox, maxNameBytes: 1 << 20})
	var last ownResult
	for i := range maxOutbox + 1 {
		last = o.setOwn("n"+strconv.Itoa(i)+".kurier.test", true)
	}
	if last != ownChangedDropping {
		t.Errorf("setOwn past the outbox = %v, want ownChangedDropping", last)
	}
	ms := o.flush(maxDelta)
	if len(ms) != 1 || ms[0].base != maxOutbox || len(ms[0].changes) != 1 {
		t.Errorf("flush after overflow: %d messages, first at base %d", len(ms), ms[0].base)
	}
}

func TestFlushBounds(t *testing.T) {
	o := newTable("ro", 1, testLimits)
	for i := range 60 {
		o.setOwn(strconv.Itoa(i)+"-abcdefghijklmnopqrstuvwxyz.hd-1.kurier.test", true)
	}
	ms := o.flush(maxDelta)
	next := uint64(0)
	for _, m := range ms {
		b, err := encode(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > maxDelta {
			t.Errorf("routes message of %d bytes, want <= %d", len(b), maxDelta)
		}
		if m.base != next {
			t.Errorf("message at base %d, want %d", m.base, next)
		}
		next = m.base + uint64(len(m.changes))
	}
	if next != 60 {
		t.Errorf("messages cover versions up to %d, want 60", next)
	}
}

// checkInvariants checks that the holders index is exactly the union of
// what every origin holds, and that the limits hold.
func checkInvariants(t *testing.T, r *table) {
	t.Helper()
	want := map[string][]string{}
	for name, o := range r.origins {
		bytes := 0
		for n := range o.names {
			want[n] = append(want[n], name)
			bytes += len(n)
		}
		if bytes != o.nameBytes || len(o.names) > r.lim.maxNames || bytes > r.lim.maxNameBytes {
			t.Fatalf("origin %s: %d names, %d bytes (counted %d)", name, len(o.names), bytes, o.nameBytes)
		}
		if len(o.pending) > maxPendingDeltas {
			t.Fatalf("origin %s: %d pending", name, len(o.pending))
		}
	}
	if len(want) != len(r.holders) {
		t.Fatalf("holders has %d names, origins %d", len(r.holders), len(want))
	}
	for n, hs := range r.holders {
		a, b := slices.Sorted(slices.Values(hs)), slices.Sorted(slices.Values(want[n]))
		if !slices.Equal(a, b) {
			t.Fatalf("holders[%s] = %v, want %v", n, a, b)
		}
	}
}

// FuzzConverge drives one relay's route changes through gossip that loses,
// repeats and reorders messages, and checks that the receiver's view is at
// every moment exactly the sender's list at some version (so nothing
// withdrawn ever comes back), and that it ends equal to the sender's list.
func FuzzConverge(f *testing.F) {
	f.Add(uint64(1), []byte{0x01, 0x81, 0x02, 0x01, 0x82, 0x03})
	f.Add(uint64(7), []byte("the quick brown fox jumps over the lazy dog"))
	f.Fuzz(func(t *testing.T, seed uint64, ops []byte) {
		rng := rand.New(rand.NewPCG(seed, seed>>7))
		o, r := pair()
		now := time.Now()
		history := []map[string]struct{}{{}} // history[v] is o's list at version v
		var msgs []routesMsg
		for i, op := range ops {
			name := "n" + strconv.Itoa(int(op&0x0f)) + ".kurier.test"
			if o.setOwn(name, op&0x80 != 0) != ownUnchanged {
				history = append(history, maps.Clone(o.own))
			}
			if i%3 == 2 || i == len(ops)-1 {
				msgs = append(msgs, o.flush(60+rng.IntN(200))...)
			}
		}
		var deliveries []routesMsg
		for _, m := range msgs {
			for range rng.IntN(3) { // lost, once or twice
				deliveries = append(deliveries, m)
			}
		}
		rng.Shuffle(len(deliveries), func(i, j int) { deliveries[i], deliveries[j] = deliveries[j], deliveries[i] })
		check := func() {
			t.Helper()
			checkInvariants(t, r)
			v := r.origins["ro"].version
			if v >= uint64(len(history)) {
				t.Fatalf("receiver at version %d, sender only at %d", v, len(history)-1)
			}
			want := slices.Sorted(maps.Keys(history[v]))
			if got := names(r); !slices.Equal(got, want) {
				t.Fatalf("at version %d the receiver has %v, want %v", v, got, want)
			}
		}
		for i, m := range deliveries {
			r.applyDelta(m, now)
			check()
			if i%7 == 6 && rng.IntN(2) == 0 {
				// A push/pull with a third relay that knows an older
				// complete list.
				v := rng.IntN(len(history))
				old := record{origin: "ro", inc: 1000, version: uint64(v), names: slices.Sorted(maps.Keys(history[v]))}
				r.applyRecord(old, now)
				check()
			}
		}
		r.applyRecord(o.ownRecord(0), now) // the pull after the gaps
		check()
		if got, want := names(r), slices.Sorted(maps.Keys(o.own)); !slices.Equal(got, want) {
			t.Fatalf("final: receiver has %v, sender %v", got, want)
		}
	})
}
