package cluster

import (
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"
)

// BenchmarkConvergence measures how long a route announcement on one relay
// takes to be visible on the two other relays of a three-relay cluster,
// with memberlist's LAN timing (gossip every 200ms). One op is one
// announcement; withdrawals alternate with announcements. Run with
// -benchtime=200x for stable percentiles.
func BenchmarkConvergence(b *testing.B) {
	env := newTestEnv(b, 1)
	key := newKey(b)
	quiet := slog.New(slog.DiscardHandler)
	start := func(name string, join ...*testNode) *testNode {
		n := newNode(b, Config{Name: name, SecretKey: key, Verifier: env.verifier(b, 1), Logger: quiet}, join...)
		if err := n.Join(b.Context()); err != nil {
			b.Fatal(err)
		}
		return n
	}
	x := start("ra")
	y := start("rb", x)
	z := start("rc", x)
	waitMembers(b, 3, x, y, z)

	var lat []time.Duration
	i := 0
	for b.Loop() {
		name := "n" + strconv.Itoa(i/2) + ".hd-1." + testNet
		held := i%2 == 0
		i++
		// Announcements come at any point of the gossip cycle; without
		// this pause the loop would lock onto the 200ms gossip ticker.
		b.StopTimer()
		time.Sleep(rand.N(250 * time.Millisecond))
		b.StartTimer()
		t0 := time.Now()
		x.hold(name, held)
		deadline := t0.Add(10 * time.Second)
		for (len(y.Holders(name)) > 0) != held || (len(z.Holders(name)) > 0) != held {
			if time.Now().After(deadline) {
				b.Fatalf("%s not converged after 10s", name)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.5), "ms-p50")
	b.ReportMetric(pct(0.9), "ms-p90")
	b.ReportMetric(pct(1), "ms-max")
}

// BenchmarkForward measures one forwarded announcement: request to the
// holding relay, its Deliver, and the reply, over loopback.
func BenchmarkForward(b *testing.B) {
	env := newTestEnv(b, 1)
	key := newKey(b)
	quiet := slog.New(slog.DiscardHandler)
	x := newNode(b, Config{Name: "ra", SecretKey: key, Verifier: env.verifier(b, 1), Logger: quiet})
	if err := x.Join(b.Context()); err != nil {
		b.Fatal(err)
	}
	y := newNode(b, Config{Name: "rb", SecretKey: key, Verifier: env.verifier(b, 1), Logger: quiet}, x)
	if err := y.Join(b.Context()); err != nil {
		b.Fatal(err)
	}
	const name = "hd-1." + testNet
	x.hold(name, true)
	waitFor(b, "rb to learn the route", func() bool { return len(y.Holders(name)) == 1 })
	for b.Loop() {
		if err := y.Forward(b.Context(), wireIncoming(name)); err != nil {
			b.Fatal(err)
		}
	}
}
