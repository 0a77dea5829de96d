package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/wire"
)

func TestNewChecksConfig(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	v := env.verifier(t, 1)
	for _, tt := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{SecretKey: newKey(t), Verifier: v}, "Config.Name"},
		{"bad name", Config{Name: "R1", SecretKey: newKey(t), Verifier: v}, "Config.Name"},
		{"no key", Config{Name: "r1", Verifier: v}, "SecretKey"},
		{"short key", Config{Name: "r1", SecretKey: make([]byte, 15), Verifier: v}, "SecretKey"},
		{"no verifier", Config{Name: "r1", SecretKey: newKey(t)}, "Verifier"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := New(tt.cfg)
			if err == nil {
				shutdown(t, c)
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: %v, want it to mention %s", err, tt.want)
			}
		})
	}
	t.Run("join before SetLocal", func(t *testing.T) {
		c, err := New(Config{Name: "r1", SecretKey: newKey(t), Verifier: v, BindAddr: "127.0.0.1"})
		if err != nil {
			t.Fatal(err)
		}
		defer shutdown(t, c)
		if err := c.Join(t.Context()); err == nil {
			t.Error("Join without SetLocal succeeded")
		}
	})
}

func TestBindPortZero(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	n := newNode(t, Config{Name: "r1", SecretKey: newKey(t), Verifier: env.verifier(t, 1)})
	host, port, ok := strings.Cut(n.Addr(), ":")
	if !ok || host != "127.0.0.1" || port == "0" || port == "" {
		t.Errorf("Addr() = %q, want 127.0.0.1 and the port the kernel chose", n.Addr())
	}
	if err := n.Join(t.Context()); err != nil { // no seeds: a new cluster
		t.Errorf("Join with no seeds: %v", err)
	}
}

func holders(n *testNode, name string) []string {
	h := n.Holders(name)
	slices.Sort(h)
	return h
}

func waitHolders(t *testing.T, name string, want []string, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, n.cfg.Name+" to see "+name+" held by "+strings.Join(want, ","), func() bool {
			return slices.Equal(holders(n, name), want)
		})
	}
}

func TestRoutes(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	c := startNode(t, "rc", key, env.verifier(t, 1), a)
	waitMembers(t, 3, a, b, c)
	if got, want := b.Members(), []string{"ra", "rb", "rc"}; !slices.Equal(got, want) {
		t.Errorf("Members() = %v, want %v", got, want)
	}

	const name = "hd-1." + testNet
	a.hold(name, true)
	waitHolders(t, name, []string{"ra"}, b, c)
	if got := a.Holders(name); len(got) != 0 {
		t.Errorf("a.Holders = %v; a relay does not list itself", got)
	}
	c.hold(name, true)
	waitHolders(t, name, []string{"ra", "rc"}, b)
	waitHolders(t, name, []string{"rc"}, a)

	a.hold(name, false)
	waitHolders(t, name, []string{"rc"}, b, a)
	c.hold(name, false)
	waitHolders(t, name, nil, a, b)
	c.hold(name, true)
	waitHolders(t, name, []string{"rc"}, a, b)

	// Many changes at once travel in batches and all arrive.
	var many []string
	for i := range 300 {
		many = append(many, "x"+strings.Repeat("y", i%40)+"-"+string(rune('a'+i%26))+"."+strconv.Itoa(i)+".hd-1."+testNet)
	}
	bulk := time.Now()
	for _, m := range many {
		a.hold(m, true)
	}
	for _, m := range many[:100] {
		a.hold(m, false)
	}
	waitFor(t, "b to see the 200 names a still holds", func() bool {
		for i, m := range many {
			if got := b.Holders(m); (i >= 100) != slices.Equal(got, []string{"ra"}) {
				return false
			}
		}
		return true
	})
	t.Logf("400 changes in a burst converged in %v", time.Since(bulk))
	if got := b.count("relay_cluster_remote_routes"); got != 201 {
		t.Errorf("relay_cluster_remote_routes = %v, want 201", got)
	}

	// A late joiner gets everything from the push/pull of its join: it knows
	// the routes as soon as Join returns, without waiting for gossip.
	d := startNode(t, "rd", key, env.verifier(t, 1), b)
	if got := holders(d, name); !slices.Equal(got, []string{"rc"}) {
		t.Errorf("late joiner: Holders(%s) = %v, want [rc]", name, got)
	}
	if got := d.Holders(many[250]); !slices.Equal(got, []string{"ra"}) {
		t.Errorf("late joiner: Holders(%s) = %v, want [ra]", many[250], got)
	}
	waitMembers(t, 4, a, b, c, d)

	// A relay that leaves takes its routes with it.
	shutdown(t, a.Cluster)
	waitMembers(t, 3, b, c, d)
	for _, n := range []*testNode{b, c, d} {
		waitFor(t, n.cfg.Name+" to drop a's routes", func() bool { return len(n.Holders(many[250])) == 0 })
		want := []string{"rc"}
		if n == c {
			want = nil
		}
		if got := holders(n, name); !slices.Equal(got, want) {
			t.Errorf("%s: Holders(%s) = %v after a left, want %v", n.cfg.Name, name, got, want)
		}
	}
	if got := b.count("relay_cluster_remote_routes"); got != 1 {
		t.Errorf("relay_cluster_remote_routes = %v after a left, want 1", got)
	}
}

// TestCrashedRelay checks that a relay that vanishes without leaving is
// found out by memberlist's failure detection and its routes dropped.
func TestCrashedRelay(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	c := startNode(t, "rc", key, env.verifier(t, 1), a)
	waitMembers(t, 3, a, b, c)
	const name = "hd-1." + testNet
	a.hold(name, true)
	waitHolders(t, name, []string{"ra"}, b, c)

	start := time.Now()
	if err := a.shutdown(t.Context(), false); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, name, nil, b, c)
	t.Logf("a crashed relay's routes were dropped after %v", time.Since(start))
	waitMembers(t, 2, b, c)
}

func TestForward(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	c := startNode(t, "rc", key, env.verifier(t, 1), a)
	waitMembers(t, 3, a, b, c)

	const name = "hd-1." + testNet
	a.hold(name, true)
	waitHolders(t, name, []string{"ra"}, b)

	in := wire.Incoming{Token: wire.NewToken(), Name: name, PairAddr: "127.0.0.1:4433"}
	if err := b.Forward(t.Context(), in); err != nil {
		t.Fatalf("Forward: %v", err)
	}
	if got := a.local.deliveries(); len(got) != 1 || got[0] != in {
		t.Errorf("a delivered %+v, want exactly %+v", got, in)
	}
	if got := b.count("relay_cluster_forwards_total", "result", "ok"); got != 1 {
		t.Errorf("forwards{ok} = %v, want 1", got)
	}

	t.Run("no holder", func(t *testing.T) {
		err := b.Forward(t.Context(), wire.Incoming{Token: wire.NewToken(), Name: "nobody." + testNet})
		if !errors.Is(err, relay.ErrNoRoute) {
			t.Errorf("Forward = %v, want ErrNoRoute", err)
		}
	})
	t.Run("holder refuses", func(t *testing.T) {
		// a still announces the name, but its relay no longer has it.
		a.local.mu.Lock()
		a.local.held[name] = false
		a.local.mu.Unlock()
		err := b.Forward(t.Context(), in)
		if !errors.Is(err, relay.ErrNoRoute) {
			t.Errorf("Forward = %v, want ErrNoRoute", err)
		}
		a.hold(name, true)
	})
	t.Run("holder fails", func(t *testing.T) {
		a.local.setErr(errBoom)
		defer a.local.setErr(nil)
		err := b.Forward(t.Context(), in)
		if !errors.Is(err, ErrDeliver) {
			t.Errorf("Forward = %v, want ErrDeliver", err)
		}
	})
	t.Run("next holder", func(t *testing.T) {
		a.local.setErr(errBoom)
		defer a.local.setErr(nil)
		c.hold(name, true)
		waitHolders(t, name, []string{"ra", "rc"}, b)
		for i := range 8 {
			if err := b.Forward(t.Context(), in); err != nil {
				t.Fatalf("Forward %d: %v", i, err)
			}
		}
		if got := len(c.local.deliveries()); got != 8 {
			t.Errorf("c delivered %d, want 8", got)
		}
	})
	t.Run("expired context", func(t *testing.T) {
		// The caller's context bounds everything.
		ctx, cancel := context.WithTimeout(t.Context(), time.Nanosecond)
		defer cancel()
		<-ctx.Done()
		if err := b.Forward(ctx, in); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Forward with an expired context = %v, want DeadlineExceeded", err)
		}
	})
}

// TestRefuse: a relay tells the relay that forwarded announcements which of
// them will not be answered; the tokens reach that relay's Refused, in
// messages of at most maxRefused tokens.
func TestRefuse(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	waitMembers(t, 2, a, b)

	want := make([]wire.Token, maxRefused+3) // two messages
	for i := range want {
		want[i] = wire.NewToken()
	}
	a.Refuse("rb", want)
	waitFor(t, "rb to receive the refusals", func() bool { return len(b.local.refusals()) == len(want) })
	// Each message is its own stream, so the two may arrive in either order.
	byBytes := func(x, y wire.Token) int { return bytes.Compare(x[:], y[:]) }
	got := b.local.refusals()
	slices.SortFunc(got, byBytes)
	slices.SortFunc(want, byBytes)
	if !slices.Equal(got, want) {
		t.Errorf("rb received %d tokens, not the ones sent", len(got))
	}
	if got := a.local.refusals(); len(got) != 0 {
		t.Errorf("ra received %d refusals, want none", len(got))
	}

	a.Refuse("rz", want[:1])
	if got := a.count("relay_cluster_messages_dropped_total", "reason", "unknown_peer"); got != 1 {
		t.Errorf("dropped{unknown_peer} = %v after a refusal to no member, want 1", got)
	}
}

func dirVersion(n *testNode) uint64 {
	if s := n.v.Current(); s != nil {
		return s.Dir.Version
	}
	return 0
}

func TestDirectory(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 3)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	c := startNode(t, "rc", key, env.verifier(t, 0), a) // no directory yet
	waitMembers(t, 3, a, b, c)
	waitFor(t, "c to fetch version 1", func() bool { return dirVersion(c) == 1 })

	start := time.Now()
	if _, err := a.v.Update(env.dirs[1]); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{b, c} {
		waitFor(t, n.cfg.Name+" to reach version 2", func() bool { return dirVersion(n) == 2 })
	}
	t.Logf("version 2 reached every relay in %v", time.Since(start))

	// mallory holds the cluster key and announces a version 3 whose bytes
	// do not verify. Nobody takes it.
	forged := append([]byte(nil), env.dirs[2]...)
	forged[len(forged)-3] ^= 1 // in the signed body
	m := startMallory(t, key, forged, a)
	waitMembers(t, 4, a, b, c)
	m.announceDir(t, 3)
	for _, n := range []*testNode{a, b, c} {
		waitFor(t, n.cfg.Name+" to refuse mallory's directory", func() bool {
			return n.count("relay_cluster_directory_fetches_total", "result", "rejected") >= 1
		})
		if got := dirVersion(n); got != 2 {
			t.Errorf("%s holds version %d, want 2", n.cfg.Name, got)
		}
	}

	// The real version 3, published to one relay, still gets through.
	if _, err := b.v.Update(env.dirs[2]); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*testNode{a, c} {
		waitFor(t, n.cfg.Name+" to reach version 3", func() bool { return dirVersion(n) == 3 })
	}
	if got := a.count("relay_cluster_directory_fetches_total", "result", "rejected"); got > 2 {
		t.Errorf("a refused mallory's directory %v times; it should back off", got)
	}
}

// mallory is a raw memberlist node with the cluster key that speaks the
// cluster protocol by hand.
type mallory struct {
	ml    *memberlist.Memberlist
	serve []byte // the "directory" it hands out
	dir   uint64
}

func startMallory(t *testing.T, key, serve []byte, join *testNode) *mallory {
	t.Helper()
	m := &mallory{serve: serve}
	mc := memberlist.DefaultLANConfig()
	mc.Name = "mallory"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.SecretKey = key
	mc.Label = "kurier-gossip/1/" + testNet
	mc.DelegateProtocolMin, mc.DelegateProtocolMax, mc.DelegateProtocolVersion = protoVersion, protoVersion, protoVersion
	mc.Delegate = (*malloryDelegate)(m)
	mc.Logger = newMLLogger(t, "mallory")
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	m.ml = ml
	t.Cleanup(func() {
		ml.Leave(time.Second)
		ml.Shutdown()
	})
	if _, err := ml.Join([]string{join.Addr()}); err != nil {
		t.Fatal(err)
	}
	return m
}

// announceDir gossips a dir message to every member directly.
func (m *mallory) announceDir(t *testing.T, v uint64) {
	t.Helper()
	m.dir = v
	b, err := encode(dirMsg{origin: "mallory", inc: 1, version: v})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range m.ml.Members() {
		if n.Name != "mallory" {
			m.ml.SendReliable(n, b)
		}
	}
}

type malloryDelegate mallory

func (d *malloryDelegate) NodeMeta(int) []byte { return nil }
func (d *malloryDelegate) NotifyMsg(b []byte) {
	msg, err := decode(b, limits{maxNames: 10, maxNameBytes: 1000})
	if err != nil {
		return
	}
	if f, ok := msg.(fetchDirMsg); ok {
		for _, n := range d.ml.Members() {
			if n.Name == f.from {
				r, _ := encode(replyMsg{id: f.id, from: "mallory", code: codeOK, body: d.serve})
				go d.ml.SendReliable(n, r)
			}
		}
	}
}
func (d *malloryDelegate) GetBroadcasts(int, int) [][]byte { return nil }
func (d *malloryDelegate) LocalState(bool) []byte          { return nil }
func (d *malloryDelegate) MergeRemoteState([]byte, bool)   {}

func TestWrongKey(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	tap := newLogTap(testLogger(t).Handler())
	a := newNode(t, Config{Name: "ra", SecretKey: key, Verifier: env.verifier(t, 1), Logger: slog.New(tap)})
	if err := a.Join(t.Context()); err != nil {
		t.Fatal(err)
	}
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	waitMembers(t, 2, a, b)

	// A node with another key cannot join.
	x := newNode(t, Config{Name: "rx", SecretKey: newKey(t), Verifier: env.verifier(t, 1)}, a)
	if err := x.Join(t.Context()); err == nil {
		t.Error("a node with the wrong key joined")
	}
	if got := a.Members(); !slices.Equal(got, []string{"ra", "rb"}) {
		t.Errorf("a.Members() = %v after the wrong-key join, want [ra rb]", got)
	}

	// Nor can it inject a route in b's name, by packet or by stream.
	const evil = "evil." + testNet
	b.mu.RLock()
	forged := routesMsg{origin: "rb", inc: b.tab.inc, base: b.tab.version, changes: []change{{held: true, name: evil}}}
	b.mu.RUnlock()
	msg, err := encode(forged)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawNode(t, "rx2", newKey(t))
	to := memberlist.Address{Addr: a.Addr(), Name: "ra"}
	if err := raw.SendToAddress(to, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to refuse the packet", func() bool { return tap.count("Decrypt packet failed") >= 1 })
	if err := raw.SendReliable(&memberlist.Node{Name: "ra", Addr: a.ml.Load().LocalNode().Addr, Port: a.ml.Load().LocalNode().Port}, msg); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to refuse the stream", func() bool { return tap.count("failed to receive") >= 1 })
	if got := a.Holders(evil); len(got) != 0 {
		t.Errorf("a.Holders(%s) = %v after injection with the wrong key", evil, got)
	}

	// The same packet with the right key is taken: the key is what kept it
	// out.
	good := rawNode(t, "ry", key)
	if err := good.SendToAddress(to, msg); err != nil {
		t.Fatal(err)
	}
	waitHolders(t, evil, []string{"rb"}, a)
}

// newMLLogger returns a logger for a raw memberlist node that goes quiet
// at cleanup: memberlist's timers log after its Shutdown.
func newMLLogger(t *testing.T, name string) *log.Logger {
	g := &gate{}
	t.Cleanup(g.close)
	return log.New(logWriter{log: testLogger(t).With("node", name), gate: g}, "", 0)
}

// rawNode is a bare memberlist node that joins nobody.
func rawNode(t *testing.T, name string, key []byte) *memberlist.Memberlist {
	t.Helper()
	mc := memberlist.DefaultLANConfig()
	mc.Name = name
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.SecretKey = key
	mc.Label = "kurier-gossip/1/" + testNet
	mc.Logger = newMLLogger(t, name)
	ml, err := memberlist.Create(mc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	return ml
}

func TestKeyRedacts(t *testing.T) {
	cfg := Config{Name: "ra", SecretKey: Key("0123456789abcdef")}
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprint(cfg.SecretKey)} {
		if strings.Contains(s, "0123456789abcdef") || strings.Contains(s, "48 49 50") || strings.Contains(s, "0x30") {
			t.Errorf("printed config shows the key: %s", s)
		}
	}
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("config", "key", cfg.SecretKey)
	if strings.Contains(b.String(), "0123") {
		t.Errorf("logged key: %s", b.String())
	}
}
