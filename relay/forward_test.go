package relay

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/relay/wire"
)

func TestForwardLog(t *testing.T) {
	now := time.Now()
	r1, r2 := &route{name: "a"}, &route{name: "b"}
	entry := func(r *route, ttl time.Duration) *forwarded {
		return &forwarded{from: "r9", token: wire.NewToken(), route: r, until: now.Add(ttl)}
	}
	l := newForwardLog(3)
	e1, e2, e3 := entry(r1, time.Second), entry(r2, time.Minute), entry(r1, time.Minute)
	for _, e := range []*forwarded{e1, e2, e3} {
		if l.add(e, now) {
			t.Fatal("add forgot an entry below the limit")
		}
	}
	// Full: the oldest is forgotten for the newest, and that is reported.
	e4 := entry(r1, time.Minute)
	if !l.add(e4, now) {
		t.Error("add to a full log did not report the forgotten entry")
	}
	if got := l.takeRoute(r1, now); !slices.Equal(got, []*forwarded{e3, e4}) {
		t.Errorf("takeRoute(r1) = %v, want e3, e4 (e1 forgotten)", got)
	}
	if got := l.takeRoute(r1, now); len(got) != 0 {
		t.Errorf("second takeRoute(r1) = %v, want none", got)
	}
	// Slots freed by takeRoute are reused without forgetting e2.
	e5, e6 := entry(r2, time.Second), entry(r2, time.Minute)
	if l.add(e5, now) || l.add(e6, now) {
		t.Error("add forgot an entry while removed slots were free")
	}
	l.remove(e6)
	// Expired entries are not returned, and prune drops them.
	if got := l.takeRoute(r2, now.Add(2*time.Second)); !slices.Equal(got, []*forwarded{e2}) {
		t.Errorf("takeRoute(r2) 2s on = %v, want e2 only", got)
	}
	l.prune(now.Add(2 * time.Second))
	if l.n != 0 {
		t.Errorf("after prune %d entries remain, want 0", l.n)
	}
}

// TestForwardLogModel checks the ring against a plain slice under random
// operations: same entries in the same order, and an entry is forgotten
// only when the limit of unexpired ones is reached. As in the relay, every
// entry lives equally long.
func TestForwardLogModel(t *testing.T) {
	const size = 5
	rng := rand.New(rand.NewPCG(1, 2))
	routes := []*route{{name: "a"}, {name: "b"}, {name: "c"}}
	base := time.Now()
	now := base
	l := newForwardLog(size)
	var model []*forwarded // unexpired entries, oldest first
	expire := func() {
		model = slices.DeleteFunc(model, func(f *forwarded) bool { return !now.Before(f.until) })
	}
	for i := range 20000 {
		switch op := rng.IntN(10); {
		case op < 6:
			f := &forwarded{route: routes[rng.IntN(len(routes))], until: now.Add(12 * time.Millisecond)}
			expire()
			wantForgot := len(model) == size
			if wantForgot {
				model = model[1:]
			}
			if got := l.add(f, now); got != wantForgot {
				t.Fatalf("op %d: add forgot = %v, want %v", i, got, wantForgot)
			}
			model = append(model, f)
		case op < 7 && len(model) > 0:
			f := model[rng.IntN(len(model))]
			l.remove(f)
			model = slices.DeleteFunc(model, func(g *forwarded) bool { return g == f })
		case op < 8:
			r := routes[rng.IntN(len(routes))]
			expire()
			var want []*forwarded
			model = slices.DeleteFunc(model, func(f *forwarded) bool {
				if f.route == r {
					want = append(want, f)
					return true
				}
				return false
			})
			if got := l.takeRoute(r, now); !slices.Equal(got, want) {
				t.Fatalf("op %d: takeRoute = %v, want %v", i, got, want)
			}
		case op < 9:
			l.prune(now)
		default:
			now = now.Add(time.Millisecond)
		}
		holes := 0
		for j := range l.n {
			if l.ring[(l.head+j)%size] == nil {
				holes++
			}
		}
		if l.n > size || holes != l.holes {
			t.Fatalf("op %d: %d entries, %d holes (counted %d) in a ring of %d", i, l.n, holes, l.holes, size)
		}
	}
}

// fakeCluster records the refusals a relay sends; it holds no routes.
type fakeCluster struct {
	mu      sync.Mutex // guards refused
	refused map[string][]wire.Token
}

func (c *fakeCluster) Announce(string, bool) {}

func (c *fakeCluster) Forward(context.Context, wire.Incoming) error { return ErrNoRoute }

func (c *fakeCluster) Refuse(to string, tokens []wire.Token) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused[to] = append(c.refused[to], tokens...)
}

func (c *fakeCluster) refusals(to string) []wire.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.refused[to])
}

// TestWithdrawRefusesForwarded: an announcement another relay forwarded
// here is delivered to the member; when the member withdraws the route
// before dialling back, the relay tells the forwarding relay through the
// cluster. An announcement for a withdrawn route is not delivered.
func TestWithdrawRefusesForwarded(t *testing.T) {
	n := newTestNetwork(t)
	fc := &fakeCluster{refused: map[string][]wire.Token{}}
	r := startRelay(t, n, func(c *Config) { c.Cluster = fc; c.PairTimeout = time.Minute })
	m, err := dialMember(t, n, r, n.office, false, "") // takes no connection
	if err != nil {
		t.Fatal(err)
	}
	name := "k7x2mq.hd-1." + testNet
	m.mustRegister(name, 600, false)
	in := wire.Incoming{Token: wire.NewToken(), Name: name, PairAddr: "127.0.0.1:1"}
	if err := r.srv.Deliver("r2", in); err != nil {
		t.Fatalf("Deliver = %v", err)
	}
	select {
	case got := <-m.incoming:
		if got != in {
			t.Fatalf("member got %+v, want %+v", got, in)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Incoming for the forwarded client")
	}
	res, err := m.request(func(id uint32) wire.Frame { return wire.Withdraw{ReqID: id, Name: name} })
	if err != nil || res.Code != wire.CodeOK {
		t.Fatalf("withdraw: %+v, %v", res, err)
	}
	if got := fc.refusals("r2"); !slices.Equal(got, []wire.Token{in.Token}) {
		t.Errorf("refused to r2: %v, want the forwarded token", got)
	}
	if err := r.srv.Deliver("r2", wire.Incoming{Token: wire.NewToken(), Name: name}); !errors.Is(err, ErrNoRoute) {
		t.Errorf("Deliver after the withdraw = %v, want ErrNoRoute", err)
	}
}
