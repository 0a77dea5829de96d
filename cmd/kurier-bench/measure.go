package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// bench holds what every measurement uses.
type bench struct {
	opts options
	dir  string              // network files for the children
	exe  string              // this binary, as the children run it
	cred *syscall.Credential // the children's user; nil: ours
	cl   *clients
	be   *backend
	rep  *report

	relay, proxy *child
	started      int    // children started so far, to name profiles
	public       string // the relay's public address
	relayNoFile  uint64
	proxyNoFile  uint64
}

// startChildren starts a fresh relay and proxy and checks that a relayed
// connection reaches the backend with end-to-end TLS.
func (b *bench) startChildren(ctx context.Context) error {
	b.started++
	rargs, pargs := []string{"-dir", b.dir}, []string{"-dir", b.dir}
	if b.opts.relayPending != 0 {
		rargs = append(rargs, "-max-pending-per-member", fmt.Sprint(b.opts.relayPending))
	}
	if d := b.opts.cpuProfile; d != "" {
		rargs = append(rargs, "-cpuprofile", filepath.Join(d, fmt.Sprintf("relay-%d.pprof", b.started)))
		pargs = append(pargs, "-cpuprofile", filepath.Join(d, fmt.Sprintf("proxy-%d.pprof", b.started)))
	}
	relay, msg, err := startChild(ctx, b.exe, "relay", rargs, b.cred, b.opts.verbose)
	if err != nil {
		return err
	}
	ep := msg.Endpoints
	if ep == nil {
		relay.stop()
		return errors.New("relay child reported no endpoints")
	}
	pargs = append(pargs, "-public", ep.Public, "-pairing", ep.Pairing,
		"-control", ep.Control, "-control-tcp", ep.ControlTCP, "-target", b.be.addr())
	proxy, pmsg, err := startChild(ctx, b.exe, "proxy", pargs, b.cred, b.opts.verbose)
	if err != nil {
		relay.stop()
		return err
	}
	b.relay, b.proxy, b.public = relay, proxy, ep.Public
	b.relayNoFile, b.proxyNoFile = msg.NoFile, pmsg.NoFile

	c, err := b.cl.dial(ctx, b.public, 10*time.Second)
	if err != nil {
		b.stopChildren()
		return fmt.Errorf("first relayed connection: %w", err)
	}
	defer c.Close()
	if err := c.ping(); err != nil {
		b.stopChildren()
		return fmt.Errorf("first relayed request: %w", err)
	}
	if got, err := pki.PeerID(c.ConnectionState()); err != nil || got != officeID {
		b.stopChildren()
		return fmt.Errorf("relayed client saw peer %v (%v), want the backend %s", got, err, officeID)
	}
	return nil
}

func (b *bench) stopChildren() {
	if b.proxy != nil {
		b.proxy.stop()
		b.proxy = nil
	}
	if b.relay != nil {
		b.relay.stop()
		b.relay = nil
	}
}

type path struct{ name, addr string }

func (b *bench) paths() (direct, relayed path) {
	return path{"direct", b.be.addr()}, path{"relayed", b.public}
}

// throughput measures bulk download and upload, alternating direct and
// relayed transfers (the order flips every round), and the relay's and the
// proxy's CPU time during the relayed ones.
func (b *bench) throughput(ctx context.Context) error {
	direct, relayed := b.paths()
	n := b.opts.size
	timeout := 30*time.Second + time.Duration(n/(10<<20))*time.Second // slower than 10 MB/s is a failure
	// Warm up both paths (TCP windows, goroutines, buffers).
	for _, p := range []path{direct, relayed} {
		if _, err := b.cl.transfer(ctx, p.addr, false, min(n, 64<<20), timeout); err != nil {
			return fmt.Errorf("warm-up %s: %w", p.name, err)
		}
	}
	rates := map[string][]float64{} // "download direct" → MB/s per round
	var relayUser, relaySys, proxyCPU time.Duration
	box := map[string]boxCPU{} // path name → box-wide CPU during its transfers
	moved := map[string]int64{}
	spent := map[string]time.Duration{} // path name → transfer time
	var relayedBytes int64
	for r := range b.opts.rounds {
		order := []path{direct, relayed}
		if r%2 == 1 {
			order = []path{relayed, direct}
		}
		for _, upload := range []bool{false, true} {
			for _, p := range order {
				var ru0, rs0, pc0 time.Duration
				if p == relayed {
					ru0, rs0, _ = b.relay.cpuSplit()
					pc0, _ = b.proxy.cpu()
				}
				box0, err := readBoxCPU()
				if err != nil {
					return err
				}
				d, err := b.cl.transfer(ctx, p.addr, upload, n, timeout)
				if err != nil {
					return fmt.Errorf("%s %s: %w", dirName(upload), p.name, err)
				}
				box1, err := readBoxCPU()
				if err != nil {
					return err
				}
				box[p.name] = box[p.name].add(box1.sub(box0))
				moved[p.name] += n
				spent[p.name] += d
				if p == relayed {
					ru1, rs1, err1 := b.relay.cpuSplit()
					pc1, err2 := b.proxy.cpu()
					if err := errors.Join(err1, err2); err != nil {
						return err
					}
					relayUser += ru1 - ru0
					relaySys += rs1 - rs0
					proxyCPU += pc1 - pc0
					relayedBytes += n
				}
				key := dirName(upload) + " " + p.name
				rates[key] = append(rates[key], float64(n)/d.Seconds()/1e6)
			}
		}
	}
	for _, dir := range []string{"download", "upload"} {
		d, r := median(rates[dir+" direct"]), median(rates[dir+" relayed"])
		ratio := r / d
		b.rep.add(row{
			Measurement: fmt.Sprintf("TLS %s, MB/s (median of %d × %s)", dir, b.opts.rounds, formatSize(n)),
			Direct:      fmt.Sprintf("%.0f", d),
			Relayed:     fmt.Sprintf("%.0f", r),
			Ratio:       fmt.Sprintf("%.2f×", ratio),
			Target:      "≥ 0.80×",
			Met:         yesNo(ratio >= 0.8),
		})
		b.rep.notef("%s MB/s per round: direct %s; relayed %s", dir, formatList(rates[dir+" direct"]), formatList(rates[dir+" relayed"]))
	}
	gb := float64(relayedBytes) / 1e9
	relayCPU := relayUser + relaySys
	b.rep.notef("relay CPU during relayed transfers: user %.2f s, system %.2f s for %.2f GB", relayUser.Seconds(), relaySys.Seconds(), gb)
	b.rep.add(row{
		Measurement: fmt.Sprintf("relay CPU s/GB relayed (relay process, %.1f GB)", gb),
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.3f", relayCPU.Seconds()/gb),
		Ratio:       "—",
		Target:      "— (DESIGN: 0.24)",
		Met:         "info",
	})
	perGB := func(name string, d time.Duration) float64 { return d.Seconds() / (float64(moved[name]) / 1e9) }
	bd, br := perGB("direct", box["direct"].busy), perGB("relayed", box["relayed"].busy)
	b.rep.add(row{
		Measurement: "whole box CPU s/GB (every process + softirq)",
		Direct:      fmt.Sprintf("%.3f", bd),
		Relayed:     fmt.Sprintf("%.3f", br),
		Ratio:       fmt.Sprintf("%.2f×", br/bd),
		Target:      "—",
		Met:         "info",
	})
	cores := func(name string) float64 { return box[name].busy.Seconds() / spent[name].Seconds() }
	b.rep.notef("whole box busy during transfers: direct %.2f of %d cores, relayed %.2f; softirq s/GB: direct %.3f, relayed %.3f (other engineers' work is included in both)",
		cores("direct"), runtime.NumCPU(), cores("relayed"), perGB("direct", box["direct"].softirq), perGB("relayed", box["relayed"].softirq))
	b.rep.add(row{
		Measurement: "proxy CPU s/GB relayed (proxy process)",
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.3f", proxyCPU.Seconds()/gb),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	return nil
}

func dirName(upload bool) string {
	if upload {
		return "upload"
	}
	return "download"
}

// setup measures opts.setup new connections per path, sequentially,
// alternating direct and relayed.
func (b *bench) setup(ctx context.Context) error {
	direct, relayed := b.paths()
	before, err := b.relay.call(ctx, "stats")
	if err != nil {
		return err
	}
	pbefore, err := b.proxy.call(ctx, "stats")
	if err != nil {
		return err
	}
	var dl, rl []time.Duration
	for i := range b.opts.setup {
		order := []path{direct, relayed}
		if i%2 == 1 {
			order = []path{relayed, direct}
		}
		for _, p := range order {
			d, err := b.cl.connectOnce(ctx, p.addr, 10*time.Second)
			if err != nil {
				return fmt.Errorf("setup %s #%d: %w", p.name, i, err)
			}
			if p == direct {
				dl = append(dl, d)
			} else {
				rl = append(rl, d)
			}
		}
	}
	after, err := b.relay.call(ctx, "stats")
	if err != nil {
		return err
	}
	pafter, err := b.proxy.call(ctx, "stats")
	if err != nil {
		return err
	}
	slices.Sort(dl)
	slices.Sort(rl)
	d50, r50 := percentile(dl, 50), percentile(rl, 50)
	d99, r99 := percentile(dl, 99), percentile(rl, 99)
	b.rep.add(row{
		Measurement: fmt.Sprintf("setup p50, ms (TCP + full mTLS 1.3 + 1st byte, n=%d)", len(dl)),
		Direct:      ms(d50),
		Relayed:     ms(r50),
		Ratio:       "+" + ms(r50-d50),
		Target:      "≤ +1 ms",
		Met:         yesNo(r50-d50 <= time.Millisecond),
	})
	b.rep.add(row{
		Measurement: "setup p99, ms",
		Direct:      ms(d99),
		Relayed:     ms(r99),
		Ratio:       "+" + ms(r99-d99),
		Target:      "—",
		Met:         "info",
	})
	b.rep.add(row{
		Measurement: "setup mean, ms",
		Direct:      ms(mean(dl)),
		Relayed:     ms(mean(rl)),
		Ratio:       "+" + ms(mean(rl)-mean(dl)),
		Target:      "—",
		Met:         "info",
	})
	const pairHist = "relay_pairing_duration_seconds"
	if h, ok := after.Hists[pairHist].minus(before.Hists[pairHist]); ok && h.Count > 0 {
		b.rep.add(row{
			Measurement: "relay_pairing_duration_seconds during setup, ms",
			Direct:      "—",
			Relayed:     fmt.Sprintf("p50 %s, p99 %s, mean %.3f", h.quantileMS(0.50), h.quantileMS(0.99), h.Sum/float64(h.Count)*1e3),
			Ratio:       "—",
			Target:      "—",
			Met:         "info",
		})
	}
	const proxyPair = "proxy_pairing_duration_seconds"
	if h, ok := pafter.Hists[proxyPair].minus(pbefore.Hists[proxyPair]); ok && h.Count > 0 {
		b.rep.notef("proxy_pairing_duration_seconds during setup (Incoming → paired, buckets from 0.5 ms): p50 %s ms, mean %.3f ms",
			h.quantileMS(0.50), h.Sum/float64(h.Count)*1e3)
	}
	return nil
}

// parallel starts opts.parallel clients at once per path, each making one
// new connection and one request.
func (b *bench) parallel(ctx context.Context) error {
	direct, relayed := b.paths()
	type result struct {
		ok    int
		total time.Duration
		lat   []time.Duration
		errs  map[string]int
	}
	run := func(p path) result {
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex // guards res
			res   = result{errs: map[string]int{}}
			start = make(chan struct{})
		)
		for range b.opts.parallel {
			wg.Go(func() {
				<-start
				d, err := b.cl.connectOnce(ctx, p.addr, 30*time.Second)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					res.errs[errClass(err)]++
					return
				}
				res.ok++
				res.lat = append(res.lat, d)
			})
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		res.total = time.Since(t0)
		slices.Sort(res.lat)
		return res
	}
	before, err := b.relay.call(ctx, "stats")
	if err != nil {
		return err
	}
	pbefore, err := b.proxy.call(ctx, "stats")
	if err != nil {
		return err
	}
	d := run(direct)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	r := run(relayed)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	after, err := b.relay.call(ctx, "stats")
	if err != nil {
		return err
	}
	pafter, err := b.proxy.call(ctx, "stats")
	if err != nil {
		return err
	}
	n := b.opts.parallel
	b.rep.add(row{
		Measurement: fmt.Sprintf("%d parallel clients: succeeded", n),
		Direct:      fmt.Sprint(d.ok),
		Relayed:     fmt.Sprint(r.ok),
		Ratio:       "—",
		Target:      fmt.Sprintf("%d", n),
		Met:         yesNo(r.ok == n),
	})
	b.rep.add(row{
		Measurement: "  all done, s",
		Direct:      fmt.Sprintf("%.2f", d.total.Seconds()),
		Relayed:     fmt.Sprintf("%.2f", r.total.Seconds()),
		Ratio:       fmt.Sprintf("%.2f×", r.total.Seconds()/d.total.Seconds()),
		Target:      "—",
		Met:         "info",
	})
	pct := func(res result, p int) string {
		if len(res.lat) == 0 {
			return "—"
		}
		return ms(percentile(res.lat, p))
	}
	for _, p := range []int{50, 99} {
		added := "—"
		if len(d.lat) > 0 && len(r.lat) > 0 {
			added = "+" + ms(percentile(r.lat, p)-percentile(d.lat, p))
		}
		b.rep.add(row{
			Measurement: fmt.Sprintf("  per client p%d, ms", p),
			Direct:      pct(d, p),
			Relayed:     pct(r, p),
			Ratio:       added,
			Target:      "—",
			Met:         "info",
		})
	}
	for _, x := range []struct {
		name string
		res  result
	}{{"direct", d}, {"relayed", r}} {
		if len(x.res.errs) > 0 {
			b.rep.notef("parallel %s failures: %v", x.name, x.res.errs)
		}
	}
	if diff := counterDiff(before, after, "relay_connections_total"); diff != "" {
		b.rep.notef("relay_connections_total during the parallel run: %s", diff)
	}
	if diff := counterDiff(pbefore, pafter, "proxy_incoming_total"); diff != "" {
		b.rep.notef("proxy_incoming_total during the parallel run: %s", diff)
	}
	const pairHist = "relay_pairing_duration_seconds"
	if h, ok := after.Hists[pairHist].minus(before.Hists[pairHist]); ok && h.Count > 0 {
		b.rep.notef("relay_pairing_duration_seconds during the parallel run: p50 %s ms, p99 %s ms, mean %.3f ms",
			h.quantileMS(0.50), h.quantileMS(0.99), h.Sum/float64(h.Count)*1e3)
	}
	return nil
}

// errClass shortens an error for a failure count.
func errClass(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// File descriptors: the parent holds a client and a backend socket per
// relayed connection; the relay and the proxy are measured (today two
// sockets plus a splice pipe pair per direction: 6 each).
const (
	parentFDsPerConn = 2
	fdReserve        = 256 // listeners, QUIC, runtime, slack
)

// memory opens idle relayed connections in a fresh relay and proxy and
// measures the relay's resident memory before, halfway and after.
func (b *bench) memory(ctx context.Context, parentNoFile uint64) error {
	if err := b.startChildren(ctx); err != nil {
		return err
	}
	defer b.stopChildren()

	// Warm up: code paths, pools and the proxy's pairing path.
	for range 64 {
		if _, err := b.cl.connectOnce(ctx, b.public, 10*time.Second); err != nil {
			return fmt.Errorf("memory warm-up: %w", err)
		}
	}
	if err := sleep(ctx, time.Second); err != nil { // let the closes reach every hop
		return err
	}
	type sample struct {
		slab         int64 // KiB, whole box
		conns        int
		rss, prss    int64 // KiB
		fds, pfds    int
		heap, stacks uint64
		goroutines   int
	}
	take := func(conns int) (sample, error) {
		if err := sleep(ctx, 2*time.Second); err != nil { // let pairing goroutines finish and timers settle
			return sample{}, err
		}
		m, err := b.relay.call(ctx, "gc")
		if err != nil {
			return sample{}, err
		}
		if _, err := b.proxy.call(ctx, "gc"); err != nil {
			return sample{}, err
		}
		s := sample{conns: conns, heap: m.HeapInuse, stacks: m.StackInuse, goroutines: m.Goroutines}
		var e0, e1, e2, e3, e4 error
		s.slab, e0 = slabKB()
		s.rss, e1 = b.relay.rssKB()
		s.prss, e2 = b.proxy.rssKB()
		s.fds, e3 = b.relay.fds()
		s.pfds, e4 = b.proxy.fds()
		return s, errors.Join(e0, e1, e2, e3, e4)
	}

	var (
		mu    sync.Mutex // guards conns
		conns []*conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	failed := map[string]int{} // error class → count; guarded by mu
	// open opens k more idle connections.
	open := func(k int) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 32 {
			wg.Go(func() {
				for next.Add(1) <= int64(k) && ctx.Err() == nil {
					c, err := b.cl.dial(ctx, b.public, 30*time.Second)
					if err == nil {
						if err = c.ping(); err != nil {
							c.Close()
						}
					}
					if err != nil {
						mu.Lock()
						failed[errClass(err)]++
						mu.Unlock()
						continue
					}
					c.SetDeadline(time.Time{}) // idle from now on
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
	}

	s0, err := take(0)
	if err != nil {
		return err
	}
	const idleFor = 5 * time.Second
	idleCPU := func() (relay, proxy float64, err error) {
		r0, err1 := b.relay.cpu()
		p0, err2 := b.proxy.cpu()
		if err := sleep(ctx, idleFor); err != nil {
			return 0, 0, err
		}
		r1, err3 := b.relay.cpu()
		p1, err4 := b.proxy.cpu()
		pct := func(d time.Duration) float64 { return 100 * d.Seconds() / idleFor.Seconds() }
		return pct(r1 - r0), pct(p1 - p0), errors.Join(err1, err2, err3, err4)
	}
	rIdle0, pIdle0, err := idleCPU()
	if err != nil {
		return err
	}
	busy0, err := b.bulkProbe(ctx)
	if err != nil {
		return err
	}
	// A first batch shows what a connection costs in file descriptors; the
	// rest is sized to fit the hard RLIMIT_NOFILE of every process.
	probeConns := min(100, max(1, b.opts.conns/2))
	open(probeConns)
	if err := sleep(ctx, 2*time.Second); err != nil { // let the first bursts end
		return err
	}
	rfds, err1 := b.relay.fds()
	pfds, err2 := b.proxy.fds()
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	if len(conns) == 0 {
		return errors.New("memory: no connection opened")
	}
	perConnFDs := func(now, before int) float64 { return max(1, float64(now-before)/float64(len(conns))) }
	fit := func(nofile uint64, per float64) int { return int(float64(int(nofile)-fdReserve) / (per * 1.02)) }
	rPer, pPer := perConnFDs(rfds, s0.fds), perConnFDs(pfds, s0.pfds)
	want := b.opts.conns
	maxConns := min(fit(b.relayNoFile, rPer), fit(b.proxyNoFile, pPer), fit(parentNoFile, parentFDsPerConn))
	n := want
	if maxConns < want {
		n = max(probeConns*2, maxConns/100*100)
		b.rep.notef("memory: %d idle connections requested, but the hard RLIMIT_NOFILE is %d in the relay, %d in the proxy and %d here, "+
			"and a relayed connection holds %.1f fds in the relay and %.1f in the proxy (measured on the first %d), so at most %d fit and %d were opened; "+
			"raise the hard limit (LimitNOFILE, or root with CAP_SYS_RESOURCE) to measure %d",
			want, b.relayNoFile, b.proxyNoFile, parentNoFile, rPer, pPer, len(conns), maxConns, n, want)
	}
	open(n/2 - len(conns))
	s1, err := take(len(conns))
	if err != nil {
		return err
	}
	open(n - len(conns))
	if ctx.Err() != nil {
		return ctx.Err()
	}
	s2, err := take(len(conns))
	if err != nil {
		return err
	}
	if len(failed) > 0 {
		b.rep.notef("memory: %d of %d connections opened; failures: %v", len(conns), n, failed)
	}
	if s2.conns == 0 {
		return errors.New("memory: no connection opened")
	}
	rIdle, pIdle, err := idleCPU()
	if err != nil {
		return err
	}

	pipes, err := b.relay.pipes()
	if err != nil {
		return err
	}
	busy1, err := b.bulkProbe(ctx)
	if err != nil {
		return fmt.Errorf("with %d idle connections: %w", s2.conns, err)
	}

	perConn := float64(s2.rss-s0.rss) / float64(s2.conns)
	slope := float64(s2.rss-s1.rss) / float64(max(1, s2.conns-s1.conns))
	b.rep.add(row{
		Measurement: fmt.Sprintf("relay RSS per idle relayed conn, KiB (%d open)", s2.conns),
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f", perConn),
		Ratio:       "—",
		Target:      "≤ 20",
		Met:         yesNo(perConn <= 20),
	})
	b.rep.add(row{
		Measurement: fmt.Sprintf("  same, slope from %d to %d conns", s1.conns, s2.conns),
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f", slope),
		Ratio:       "—",
		Target:      "≤ 20",
		Met:         yesNo(slope <= 20),
	})
	b.rep.add(row{
		Measurement: "proxy RSS per idle relayed conn, KiB",
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f", float64(s2.prss-s0.prss)/float64(s2.conns)),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	b.rep.add(row{
		Measurement: "relay fds per idle relayed conn",
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.2f", float64(s2.fds-s0.fds)/float64(s2.conns)),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	npipes, capacity := 0, 0
	var sizes []string
	for size, k := range pipes {
		npipes += k
		capacity += size * k
		sizes = append(sizes, fmt.Sprintf("%d × %s", k, formatSize(int64(size))))
	}
	slices.Sort(sizes)
	b.rep.add(row{
		Measurement: "relay pipes held per idle relayed conn",
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.2f", float64(npipes)/float64(s2.conns)),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	b.rep.notef("memory: the relay held %d pipes (%s) with %d idle conns; a pipe's slot array is kernel memory, 40 B per 4 KiB of capacity (10 KiB for 1MiB), not in VmRSS",
		npipes, strings.Join(sizes, ", "), s2.conns)
	b.rep.add(row{
		Measurement: "kernel slab per relayed conn, whole box (all 4 parties), KiB",
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f", float64(s2.slab-s0.slab)/float64(s2.conns)),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	b.rep.add(row{
		Measurement: fmt.Sprintf("relay CPU while %d conns idle, %% of a core", s2.conns),
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f (%.1f with none)", rIdle, rIdle0),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	b.rep.add(row{
		Measurement: fmt.Sprintf("proxy CPU while %d conns idle, %% of a core", s2.conns),
		Direct:      "—",
		Relayed:     fmt.Sprintf("%.1f (%.1f with none)", pIdle, pIdle0),
		Ratio:       "—",
		Target:      "—",
		Met:         "info",
	})
	for _, x := range []struct {
		label string
		p     probe
	}{{"no other conns", busy0}, {fmt.Sprintf("%d idle relayed conns open", s2.conns), busy1}} {
		b.rep.add(row{
			Measurement: fmt.Sprintf("TLS download, %s, MB/s (1 × %s)", x.label, formatSize(x.p.n)),
			Direct:      fmt.Sprintf("%.0f", x.p.direct),
			Relayed:     fmt.Sprintf("%.0f", x.p.relayed),
			Ratio:       fmt.Sprintf("%.2f×", x.p.relayed/x.p.direct),
			Target:      "≥ 0.80×",
			Met:         yesNo(x.p.relayed >= 0.8*x.p.direct),
		})
		b.rep.add(row{
			Measurement: "  relay CPU s/GB during that relayed download",
			Direct:      "—",
			Relayed:     fmt.Sprintf("%.3f", x.p.relayCPU),
			Ratio:       "—",
			Target:      "—",
			Met:         "info",
		})
	}
	b.rep.notef("memory: relay RSS %d → %d → %d KiB at %d → %d → %d conns (after GC + FreeOSMemory); Go heap in use %s → %s, stacks %s → %s, goroutines %d → %d",
		s0.rss, s1.rss, s2.rss, s0.conns, s1.conns, s2.conns, kib(s0.heap), kib(s2.heap), kib(s0.stacks), kib(s2.stacks), s0.goroutines, s2.goroutines)
	b.rep.notef("memory: per conn in the relay: Go heap %.1f KiB, goroutine stacks %.1f KiB, goroutines %.2f; proxy fds per conn %.2f",
		float64(s2.heap-s0.heap)/1024/float64(s2.conns), float64(s2.stacks-s0.stacks)/1024/float64(s2.conns),
		float64(s2.goroutines-s0.goroutines)/float64(s2.conns), float64(s2.pfds-s0.pfds)/float64(s2.conns))
	return nil
}

// boxCPU is CPU time of the whole machine, from the "cpu" line of
// /proc/stat.
type boxCPU struct {
	busy    time.Duration // user, nice, system, irq, softirq
	softirq time.Duration
}

func readBoxCPU() (boxCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return boxCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return boxCPU{}, errors.New("/proc/stat: no cpu line")
	}
	var v [8]uint64 // user nice system idle iowait irq softirq steal
	for i := range v {
		if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
			return boxCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
	}
	tick := func(n uint64) time.Duration { return time.Duration(n) * time.Second / userHZ }
	return boxCPU{busy: tick(v[0] + v[1] + v[2] + v[5] + v[6]), softirq: tick(v[6])}, nil
}

func (a boxCPU) sub(b boxCPU) boxCPU { return boxCPU{a.busy - b.busy, a.softirq - b.softirq} }
func (a boxCPU) add(b boxCPU) boxCPU { return boxCPU{a.busy + b.busy, a.softirq + b.softirq} }

// probe is one bulk download per path.
type probe struct {
	n               int64   // bytes per download
	direct, relayed float64 // MB/s
	relayCPU        float64 // s/GB of the relay process during the relayed one
}

// bulkProbe downloads min(--size, 512MiB) once directly and once relayed.
func (b *bench) bulkProbe(ctx context.Context) (probe, error) {
	direct, relayed := b.paths()
	p := probe{n: min(b.opts.size, 512<<20)}
	timeout := 30*time.Second + time.Duration(p.n/(10<<20))*time.Second
	for _, path := range []path{direct, relayed} {
		c0, err := b.relay.cpu()
		if err != nil {
			return p, err
		}
		d, err := b.cl.transfer(ctx, path.addr, false, p.n, timeout)
		if err != nil {
			return p, fmt.Errorf("download %s: %w", path.name, err)
		}
		c1, err := b.relay.cpu()
		if err != nil {
			return p, err
		}
		rate := float64(p.n) / d.Seconds() / 1e6
		if path == direct {
			p.direct = rate
		} else {
			p.relayed = rate
			p.relayCPU = (c1 - c0).Seconds() / (float64(p.n) / 1e9)
		}
	}
	return p, nil
}

// slabKB returns the kernel's slab memory (Slab in /proc/meminfo) in KiB.
func slabKB() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "Slab:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, errors.New("/proc/meminfo: no Slab")
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func kib(n uint64) string { return fmt.Sprintf("%d KiB", n>>10) }

// percentile returns the p-th percentile of sorted d (nearest rank).
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[max(i, 1)-1]
}

func mean(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	return sum / time.Duration(len(d))
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond)) }

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "NO"
}

func formatList(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.0f", x)
	}
	return strings.Join(parts, " ")
}

// minus returns h minus an earlier snapshot of the same histogram.
func (h hist) minus(old hist) (hist, bool) {
	if len(h.Bounds) == 0 || len(old.Bounds) != 0 && len(old.Bounds) != len(h.Bounds) {
		return hist{}, false
	}
	out := hist{Count: h.Count - old.Count, Sum: h.Sum - old.Sum, Bounds: h.Bounds, Cum: slices.Clone(h.Cum)}
	for i := range old.Cum {
		out.Cum[i] -= old.Cum[i]
	}
	return out, true
}

// quantileMS estimates a quantile in milliseconds by linear interpolation
// inside its bucket.
func (h hist) quantileMS(q float64) string {
	rank := q * float64(h.Count)
	lower, prev := 0.0, uint64(0)
	for i, ub := range h.Bounds {
		if float64(h.Cum[i]) >= rank {
			in := h.Cum[i] - prev
			frac := 1.0
			if in > 0 {
				frac = (rank - float64(prev)) / float64(in)
			}
			return fmt.Sprintf("%.3f", (lower+frac*(ub-lower))*1e3)
		}
		lower, prev = ub, h.Cum[i]
	}
	return fmt.Sprintf("> %.0f", lower*1e3)
}

// counterDiff lists the changes of the counters named name between two
// snapshots.
func counterDiff(before, after childMsg, name string) string {
	var parts []string
	for k, v := range after.Counters {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		if d := v - before.Counters[k]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s %+.0f", strings.TrimPrefix(k, name), d))
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
