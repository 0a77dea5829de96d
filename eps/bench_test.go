package eps_test

// Benchmarks of synchronous calls between two endpoint servers, in one
// process: the office's software calls "vendor-a.guest-lists" on its EPS's
// local API; the EPS seals the params to the vendor, signs them and sends
// them over HTTP/2 inside mTLS to the vendor's EPS, either through a real
// relay and the vendor's private proxy ("relayed") or straight to a TCP
// listener of the vendor's EPS ("direct"); the vendor's EPS verifies and
// opens them, hands them to the vendor's software by callback (an HTTP
// server that answers at once), seals and signs the answer, and the
// office's EPS verifies and opens it. Method and figures:
// docs/benchmarks.md, "Endpoint server".
//
//	go test -run '^$' -bench . ./eps/
//	go test -run '^$' -bench 'SealedCalls/direct' -cpuprofile /tmp/eps.prof ./eps/
//
// Everything here is prefixed bench so as not to collide with the helpers
// of eps_test.go.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/eps"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay/relaytest"
)

const benchNetwork = "kurier.bench"

// benchPayload is a typical request: a check-in list of about 1 KiB (the
// size eps/seal's benchmarks use).
var benchPayload = func() json.RawMessage {
	guests := bytes.Repeat([]byte(`{"name":"Erika Mustermann","phone":"+49 30 1234567"},`), 20)
	return json.RawMessage(`{"location":"Café Rot","guests":[` + string(guests[:len(guests)-1]) + `]}`)
}()

// benchNet is a relay, the vendor's endpoint server (the callee, reachable
// through the relay and on a direct listener) and two endpoint servers of
// the office (the callers: one dials the relay, the other the vendor's
// direct listener). The two callers differ only in Config.Relays.
type benchNet struct {
	apis map[string]*jsonrpc.Client // "relayed", "direct": the callers' local APIs
}

func newBenchNet(b *testing.B) *benchNet {
	b.Helper()
	ca := pkitest.NewCA(b, benchNetwork, time.Now())
	r := relaytest.Listen(b, ca, "r1")
	officeCert := ca.Issue(b, pki.RoleHealthOffice, "hd-1")
	vendorCert := ca.Issue(b, pki.RoleProvider, "vendor-a")
	var members []pki.Member
	keys := map[string]pki.SealPrivateKey{}
	for _, m := range []struct {
		cert     *tls.Certificate
		name     string
		services []string
	}{{officeCert, "hd-1", []string{"submit"}}, {vendorCert, "vendor-a", []string{"guest-lists"}}} {
		k, err := pki.NewSealKey("s1")
		if err != nil {
			b.Fatal(err)
		}
		keys[m.name] = k
		e := pkitest.Member(m.cert, m.name, m.services...)
		e.SealKeys = []pki.SealKey{k.Public()}
		members = append(members, e)
	}
	dir := ca.Directory(append(members, r.Member())...) // everyone may call everything
	log := slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))

	r.Serve(b, ca.Trust(b, dir), nil)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() { cancel(); wg.Wait() })
	serve := func(name string, f func() error) {
		wg.Go(func() {
			if err := f(); err != nil && ctx.Err() == nil {
				b.Errorf("%s: %v", name, err)
			}
		})
	}

	// The vendor's software answers every call at once.
	software := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var call struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.NewDecoder(req.Body).Decode(&call); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"jsonrpc":"2.0","id":`))
		w.Write(call.ID)
		w.Write([]byte(`,"result":{"guests":1}}`))
	}))
	b.Cleanup(software.Close)

	newServer := func(cert *tls.Certificate, name string, cfg eps.Config) *eps.Server {
		st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "eps.db")})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		cfg.Identity, cfg.Trust, cfg.Store = benchIdentity(b, cert), ca.Trust(b, dir), st
		cfg.SealKeys, cfg.Logger = []pki.SealPrivateKey{keys[name]}, log.With("member", name)
		srv, err := eps.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() {
			sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer scancel()
			if err := srv.Shutdown(sctx); err != nil {
				b.Errorf("%s: Shutdown = %v", name, err)
			}
		})
		return srv
	}

	// The callee: through its private proxy and on a plain listener.
	// PeerRate and PeerConcurrency are raised: the defaults (200 calls/s
	// and 64 at once per calling member) would refuse a benchmark's load
	// with 429.
	vendor := newServer(vendorCert, "vendor-a", eps.Config{Callback: software.URL, PeerRate: 1e9, PeerConcurrency: 1024})
	pln := proxy.NewListener(256)
	px, err := proxy.New(proxy.Config{Identity: benchIdentity(b, vendorCert), Trust: ca.Trust(b, dir), Logger: log})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { px.Close() })
	wg.Go(func() { px.Run(ctx) })
	direct, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	serve("vendor-a peer (relayed)", func() error { return ignoreClosed(vendor.ServePeer(pln)) })
	serve("vendor-a peer (direct)", func() error { return ignoreClosed(vendor.ServePeer(direct)) })
	name := "vendor-a." + benchNetwork
	if err := px.AddRoute(ctx, proxy.Route{Name: name, Target: pln}); err != nil {
		b.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); px.Registered(name) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			b.Fatal("the vendor's route was not registered at the relay")
		}
	}

	// The callers.
	n := &benchNet{apis: map[string]*jsonrpc.Client{}}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, IdleConnTimeout: time.Minute}}
	for path, addr := range map[string]string{"relayed": r.Endpoints.Public, "direct": direct.Addr().String()} {
		office := newServer(officeCert, "hd-1", eps.Config{Relays: func() []string { return []string{addr} }})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		serve("hd-1 local API ("+path+")", func() error { return ignoreClosed(office.ServeLocal(ln)) })
		c := &jsonrpc.Client{URL: "http://" + ln.Addr().String() + "/", HTTPClient: hc}
		// The first call opens the peer connection (TLS handshake, and
		// through the relay the pairing); the benchmarks measure warm
		// connections.
		if _, err := benchCall(ctx, c); err != nil {
			b.Fatalf("first %s call: %v", path, err)
		}
		n.apis[path] = c
	}
	// Cleanups run last first: close the software's connections before
	// the callers' Shutdown waits for them.
	b.Cleanup(hc.CloseIdleConnections)
	return n
}

func benchIdentity(b *testing.B, c *tls.Certificate) *pki.Identity {
	id, err := pki.NewIdentity(c)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

func ignoreClosed(err error) error {
	if errors.Is(err, eps.ErrServerClosed) {
		return nil
	}
	return err
}

// benchCall makes one call and returns how long it took.
func benchCall(ctx context.Context, c *jsonrpc.Client) (time.Duration, error) {
	var res struct {
		Guests int `json:"guests"`
	}
	start := time.Now()
	err := c.Call(ctx, "vendor-a.guest-lists", benchPayload, &res)
	d := time.Since(start)
	if err == nil && res.Guests != 1 {
		err = errors.New("unexpected result")
	}
	return d, err
}

// reportLatency reports the p50 and p99 of lat in microseconds, and the
// calls per second over elapsed.
func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) (p50 float64) {
	if len(lat) == 0 {
		return 0
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "calls/s")
	return q(0.50)
}

// BenchmarkCall: one caller, one call at a time, on a warm connection.
// direct also reports relayed ÷ direct of the p50 measured just before.
func BenchmarkCall(b *testing.B) {
	n := newBenchNet(b)
	var relayedP50 float64
	for _, path := range []string{"relayed", "direct"} {
		b.Run(path, func(b *testing.B) {
			c := n.apis[path]
			var lat []time.Duration
			start := time.Now()
			for b.Loop() {
				d, err := benchCall(b.Context(), c)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
			}
			p50 := reportLatency(b, lat, time.Since(start))
			if path == "relayed" {
				relayedP50 = p50
			} else if relayedP50 > 0 {
				b.ReportMetric(relayedP50/p50, "relayed/direct-p50")
			}
		})
	}
}

// BenchmarkSealedCalls: many callers at once (8 per GOMAXPROCS), every
// call sealed and signed both ways; calls/s is the throughput.
func BenchmarkSealedCalls(b *testing.B) {
	n := newBenchNet(b)
	for _, path := range []string{"relayed", "direct"} {
		b.Run(path, func(b *testing.B) {
			c := n.apis[path]
			var mu sync.Mutex // guards lat
			var lat []time.Duration
			b.SetParallelism(8)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					d, err := benchCall(context.Background(), c)
					if err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, d)
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			b.StopTimer()
			reportLatency(b, lat, elapsed)
		})
	}
}
