package proxy_test

// Benchmarks of the relayed path against a direct TLS connection, in one
// process: a client, a relay (relay.Server), the private proxy (proxy.Proxy
// with a DialTarget) and a local TLS backend presenting the member's own
// certificate, all on loopback. The client always verifies the backend's
// certificate, so the relayed path stays end-to-end TLS; the relay and the
// proxy only see ciphertext.
//
//	go test -run '^$' -bench . ./proxy/
//	go test -run '^$' -bench 'Throughput|Setup' -benchtime 3x ./proxy/
//
// Each benchmark has a direct and a relayed sub-benchmark over the same
// backend, so the two are measured in the same run. cmd/kurier-bench runs the
// relay in its own process and also reports the relay's CPU per GB and memory
// per idle connection; docs/benchmarks.md describes both.

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay"
)

const (
	benchNetwork = "kurier.test"
	benchChunk   = 16 << 20 // bytes moved per throughput iteration
	benchBatch   = 100      // clients per BenchmarkParallelClients iteration
	benchIOBuf   = 256 << 10
	benchTimeout = 30 * time.Second // bounds every client connection
)

// Requests of the backend's protocol: one op byte and a big-endian uint64.
const (
	opPing     = 'P' // answer one byte
	opDownload = 'D' // send n bytes
	opUpload   = 'U' // read n bytes, then answer one byte
)

// benchEnv is a running relay, proxy and backend for member hd-1.
type benchEnv struct {
	backend string      // direct address of the backend
	public  string      // the relay's public address
	client  *tls.Config // full handshakes only; verifies the backend as hd-1
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	ca := pkitest.NewCA(b, benchNetwork, time.Now())
	relayCert := ca.Issue(b, pki.RoleRelay, "r1")
	office := ca.Issue(b, pki.RoleHealthOffice, "hd-1")
	vendor := ca.Issue(b, pki.RoleProvider, "vendor-a")
	trust := ca.Trust(b, ca.Directory(
		pkitest.Member(relayCert, "Relay 1"),
		pkitest.Member(office, "Health office 1"),
		pkitest.Member(vendor, "Vendor A"),
	))
	officeID := benchIdentity(b, office)

	// The backend: the member's own TLS server (mTLS, as EPS to EPS).
	stc, err := pki.ServerConfig(officeID, trust, []string{pki.ALPNPeer}, nil)
	if err != nil {
		b.Fatal(err)
	}
	backend := startBenchBackend(b, stc)

	// The relay, with every listener on loopback. The per-source rate limit
	// stays on but high: every benchmark client comes from 127.0.0.1.
	srv, err := relay.New(relay.Config{Identity: benchIdentity(b, relayCert), Trust: trust, MaxConnRate: 1 << 20})
	if err != nil {
		b.Fatal(err)
	}
	pub, pair, ctl := benchListen(b), benchListen(b), benchListen(b)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var serving sync.WaitGroup
	serving.Go(func() {
		if err := srv.Serve(relay.Listeners{Public: pub, Pairing: pair, ControlTCP: ctl, ControlQUIC: pc}); err != nil {
			b.Errorf("relay Serve: %v", err)
		}
	})
	b.Cleanup(func() {
		srv.Close()
		pc.Close()
		serving.Wait()
	})

	// The private proxy, splicing relayed connections to the backend.
	p, err := proxy.New(proxy.Config{
		Identity: officeID,
		Trust:    trust,
		Relays: []proxy.RelayAddr{{Name: "r1", Endpoints: pki.RelayEndpoints{
			Public:     pub.Addr().String(),
			Pairing:    pair.Addr().String(),
			Control:    pc.LocalAddr().String(),
			ControlTCP: ctl.Addr().String(),
		}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(context.Background()) }()
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			b.Errorf("proxy Shutdown: %v", err)
		}
		<-runDone
	})
	name := officeID.ID().DNSName()
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Second)
	defer cancel()
	if err := p.AddRoute(ctx, proxy.Route{Name: name, Target: proxy.DialTarget{Addr: backend}}); err != nil {
		b.Fatal(err)
	}
	for p.Registered(name) == 0 {
		if ctx.Err() != nil {
			b.Fatalf("route %s not registered at the relay: %+v", name, p.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}

	ctc, err := pki.ClientConfig(benchIdentity(b, vendor), trust, officeID.ID(), []string{pki.ALPNPeer}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctc.ClientSessionCache = nil // every connection makes a full handshake
	return &benchEnv{backend: backend, public: pub.Addr().String(), client: ctc}
}

func benchIdentity(b *testing.B, c *tls.Certificate) *pki.Identity {
	b.Helper()
	id, err := pki.NewIdentity(c)
	if err != nil {
		b.Fatal(err)
	}
	return id
}

func benchListen(b *testing.B) net.Listener {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

// startBenchBackend serves the backend protocol over TLS with tc and returns
// its address. Its cleanup closes the listener and every connection.
func startBenchBackend(b *testing.B, tc *tls.Config) string {
	b.Helper()
	ln := benchListen(b)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // guards conns
		conns = map[net.Conn]struct{}{}
	)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Go(func() {
				defer func() {
					mu.Lock()
					delete(conns, c)
					mu.Unlock()
					c.Close()
				}()
				serveBenchConn(tls.Server(c, tc))
			})
		}
	})
	b.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// serveBenchConn answers requests on c until the client hangs up.
func serveBenchConn(c *tls.Conn) {
	c.SetDeadline(time.Now().Add(benchTimeout))
	if err := c.Handshake(); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	var buf []byte // only for bulk transfers
	var req [9]byte
	for {
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(req[1:]))
		if req[0] != opPing && buf == nil {
			buf = make([]byte, benchIOBuf)
		}
		switch req[0] {
		case opPing:
		case opDownload:
			for n > 0 {
				k, err := c.Write(buf[:min(n, int64(len(buf)))])
				if err != nil {
					return
				}
				n -= int64(k)
			}
			continue
		case opUpload:
			if _, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf); err != nil {
				return
			}
		default:
			return
		}
		if _, err := c.Write([]byte{1}); err != nil {
			return
		}
	}
}

// dial opens a client connection to addr and completes a full TLS handshake.
func (e *benchEnv) dial(addr string) (*tls.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, benchTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(benchTimeout))
	tc := tls.Client(c, e.client)
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, err
	}
	return tc, nil
}

func request(c io.ReadWriter, op byte, n int64) error {
	var req [9]byte
	req[0] = op
	binary.BigEndian.PutUint64(req[1:], uint64(n))
	_, err := c.Write(req[:])
	return err
}

// connectOnce measures one new connection: TCP connect, full TLS 1.3
// handshake, and the first byte of the backend's answer to a ping.
func (e *benchEnv) connectOnce(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := e.dial(addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := request(c, opPing, 0); err != nil {
		return 0, err
	}
	var one [1]byte
	if _, err := io.ReadFull(c, one[:]); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func (e *benchEnv) paths() []struct{ name, addr string } {
	return []struct{ name, addr string }{{"direct", e.backend}, {"relayed", e.public}}
}

// BenchmarkThroughput downloads benchChunk bytes per iteration from the
// backend over one TLS connection, directly and through relay and proxy.
func BenchmarkThroughput(b *testing.B) {
	e := newBenchEnv(b)
	for _, path := range e.paths() {
		b.Run(path.name, func(b *testing.B) {
			c, err := e.dial(path.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Time{})
			buf := make([]byte, benchIOBuf)
			b.SetBytes(benchChunk)
			b.ResetTimer()
			for range b.N {
				c.SetDeadline(time.Now().Add(benchTimeout))
				if err := request(c, opDownload, benchChunk); err != nil {
					b.Fatal(err)
				}
				if _, err := io.CopyBuffer(io.Discard, io.LimitReader(c, benchChunk), buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkThroughputUpload sends benchChunk bytes per iteration to the
// backend and waits for its acknowledgement.
func BenchmarkThroughputUpload(b *testing.B) {
	e := newBenchEnv(b)
	for _, path := range e.paths() {
		b.Run(path.name, func(b *testing.B) {
			c, err := e.dial(path.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			buf := make([]byte, benchIOBuf)
			b.SetBytes(benchChunk)
			b.ResetTimer()
			for range b.N {
				c.SetDeadline(time.Now().Add(benchTimeout))
				if err := request(c, opUpload, benchChunk); err != nil {
					b.Fatal(err)
				}
				for n := int64(benchChunk); n > 0; {
					k, err := c.Write(buf[:min(n, int64(len(buf)))])
					if err != nil {
						b.Fatal(err)
					}
					n -= int64(k)
				}
				var ack [1]byte
				if _, err := io.ReadFull(c, ack[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSetup makes one new connection per iteration (TCP connect, full
// mTLS 1.3 handshake, first response byte) and reports the median and 99th
// percentile besides the mean (ns/op).
func BenchmarkSetup(b *testing.B) {
	e := newBenchEnv(b)
	for _, path := range e.paths() {
		b.Run(path.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for range b.N {
				d, err := e.connectOnce(path.addr)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkParallelClients starts benchBatch clients at once per iteration,
// each making one new connection and one request. ns/op is the time for the
// whole batch; p50-µs and p99-µs are per client.
func BenchmarkParallelClients(b *testing.B) {
	e := newBenchEnv(b)
	for _, path := range e.paths() {
		b.Run(path.name, func(b *testing.B) {
			var (
				mu     sync.Mutex // guards lat and failed
				lat    []time.Duration
				failed int
			)
			for range b.N {
				var wg sync.WaitGroup
				for range benchBatch {
					wg.Go(func() {
						d, err := e.connectOnce(path.addr)
						mu.Lock()
						defer mu.Unlock()
						if err != nil {
							failed++
							return
						}
						lat = append(lat, d)
					})
				}
				wg.Wait()
			}
			b.ReportMetric(float64(failed)/float64(b.N*benchBatch), "failed/client")
			if len(lat) > 0 {
				reportPercentiles(b, lat)
			}
		})
	}
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	b.ReportMetric(micros(percentile(lat, 50)), "p50-µs")
	b.ReportMetric(micros(percentile(lat, 99)), "p99-µs")
}

// percentile returns the p-th percentile of sorted d (nearest rank).
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		panic(fmt.Sprintf("percentile of no samples (p%d)", p))
	}
	i := (len(d)*p + 99) / 100
	return d[max(i, 1)-1]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
