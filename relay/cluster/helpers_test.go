package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/wire"
)

const testNet = "kurier.test"

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	return k
}

// fakeLocal is a relay's route table for cluster tests.
type fakeLocal struct {
	mu        sync.Mutex // guards the fields below
	held      map[string]bool
	err       error // returned by Deliver for held names, if set
	delivered []wire.Incoming
	refused   []wire.Token
}

func newFakeLocal() *fakeLocal { return &fakeLocal{held: map[string]bool{}} }

func (l *fakeLocal) Deliver(from string, in wire.Incoming) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.held[in.Name] {
		return relay.ErrNoRoute
	}
	if l.err != nil {
		return l.err
	}
	l.delivered = append(l.delivered, in)
	return nil
}

func (l *fakeLocal) Refused(tokens []wire.Token) {
	l.mu.Lock()
	l.refused = append(l.refused, tokens...)
	l.mu.Unlock()
}

func (l *fakeLocal) refusals() []wire.Token {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.refused)
}

func (l *fakeLocal) Holds(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[name]
}

func (l *fakeLocal) setErr(err error) {
	l.mu.Lock()
	l.err = err
	l.mu.Unlock()
}

func (l *fakeLocal) deliveries() []wire.Incoming {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.delivered)
}

// testNode is a cluster node with a fake relay behind it.
type testNode struct {
	*Cluster
	local *fakeLocal
	reg   *prometheus.Registry
	v     *pki.Verifier
}

// hold makes the node's relay hold (or drop) name and announces it.
func (n *testNode) hold(name string, held bool) {
	n.local.mu.Lock()
	n.local.held[name] = held
	n.local.mu.Unlock()
	n.Announce(name, held)
}

func (n *testNode) count(name string, labels ...string) float64 {
	return gather(n.reg, name, labels...)
}

// testEnv is a CA and the signed directory versions tests hand out.
type testEnv struct {
	ca   *pkitest.CA
	dirs [][]byte // dirs[i] is version i+1
}

func newTestEnv(t testing.TB, versions int) *testEnv {
	t.Helper()
	e := &testEnv{ca: pkitest.NewCA(t, testNet, time.Now())}
	office := e.ca.Issue(t, pki.RoleHealthOffice, "hd-1")
	for range versions {
		e.dirs = append(e.dirs, e.ca.Sign(t, e.ca.Directory(pkitest.Member(office, "Gesundheitsamt 1"))))
	}
	return e
}

// verifier returns a verifier holding directory version v (none if 0).
func (e *testEnv) verifier(t testing.TB, v int) *pki.Verifier {
	t.Helper()
	ver := e.ca.Verifier(t, nil)
	if v > 0 {
		if _, err := ver.Update(e.dirs[v-1]); err != nil {
			t.Fatal(err)
		}
	}
	return ver
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startNode starts a node on 127.0.0.1 port 0 that joins the given nodes.
// It is shut down at cleanup.
func startNode(t testing.TB, name string, key []byte, v *pki.Verifier, join ...*testNode) *testNode {
	t.Helper()
	n := newNode(t, Config{Name: name, SecretKey: key, Verifier: v}, join...)
	if err := n.Join(t.Context()); err != nil {
		t.Fatalf("%s: Join: %v", name, err)
	}
	return n
}

func newNode(t testing.TB, cfg Config, join ...*testNode) *testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg.BindAddr = "127.0.0.1"
	cfg.Registerer = reg
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t).With("node", cfg.Name)
	}
	for _, j := range join {
		cfg.Join = append(cfg.Join, j.Addr())
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{Cluster: c, local: newFakeLocal(), reg: reg, v: cfg.Verifier}
	c.SetLocal(n.local)
	t.Cleanup(func() { shutdown(t, n.Cluster) })
	return n
}

func shutdown(t testing.TB, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Shutdown(ctx); err != nil {
		t.Errorf("%s: Shutdown: %v", c.cfg.Name, err)
	}
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitMembers(t testing.TB, want int, nodes ...*testNode) {
	t.Helper()
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s to see %d members", n.cfg.Name, want), func() bool { return len(n.Members()) == want })
	}
}

func gather(reg *prometheus.Registry, name string, labels ...string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		panic(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			match := true
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.Label {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				match = match && found
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			case m.Histogram != nil:
				sum += float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return sum
}

// checkGoroutines fails the test if the goroutine count does not return to
// base within a few seconds. Register it first, so it runs after every
// other cleanup.
func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				s := string(buf)
				if len(s) > 12000 {
					s = s[:12000] + "\n…"
				}
				t.Errorf("goroutines: %d, want <= %d\n%s", n, base, strings.TrimSpace(s))
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// logTap is a slog handler that reports records whose message or attributes
// contain a string.
type logTap struct {
	slog.Handler
	mu    *sync.Mutex
	seen  *[]string
	attrs []slog.Attr
}

func newLogTap(next slog.Handler) *logTap {
	return &logTap{Handler: next, mu: &sync.Mutex{}, seen: new([]string)}
}

func (h *logTap) Handle(ctx context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	h.mu.Lock()
	*h.seen = append(*h.seen, b.String())
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h *logTap) WithAttrs(as []slog.Attr) slog.Handler {
	return &logTap{Handler: h.Handler.WithAttrs(as), mu: h.mu, seen: h.seen, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *logTap) WithGroup(name string) slog.Handler {
	return &logTap{Handler: h.Handler.WithGroup(name), mu: h.mu, seen: h.seen, attrs: h.attrs}
}

// count returns how many records so far contain s.
func (h *logTap) count(s string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range *h.seen {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

var errBoom = errors.New("boom")

func wireIncoming(name string) wire.Incoming {
	return wire.Incoming{Token: wire.NewToken(), Name: name, PairAddr: "127.0.0.1:1"}
}
