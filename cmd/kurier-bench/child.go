package main

// The relay and the private proxy run in child processes: the bench binary
// re-executes itself with childEnv set to "relay" or "proxy". A child prints
// one JSON line when it is ready (or failed), then answers one JSON line per
// command read from stdin ("stats", or "gc" to collect garbage and return
// memory to the OS first), and shuts down when stdin closes. The parent reads
// the child's CPU time, RSS and open files from /proc itself.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
	"github.com/kurier-net/kurier/relay"
)

// childEnv selects the child mode; it is not meant to be set by hand.
const childEnv = "KURIER_BENCH_CHILD"

// childMsg is one line a child prints.
type childMsg struct {
	Error string `json:"error,omitempty"`

	// Ready line of a relay: where it listens.
	Endpoints *pki.RelayEndpoints `json:"endpoints,omitempty"`
	// NoFile is the child's RLIMIT_NOFILE after raising it.
	NoFile uint64 `json:"nofile,omitempty"`

	// Answer to stats or gc.
	HeapInuse  uint64             `json:"heap_inuse,omitempty"`
	StackInuse uint64             `json:"stack_inuse,omitempty"`
	Sys        uint64             `json:"sys,omitempty"`
	Goroutines int                `json:"goroutines,omitempty"`
	Counters   map[string]float64 `json:"counters,omitempty"` // counters and gauges, "name{label=value}"
	Hists      map[string]hist    `json:"hists,omitempty"`
}

// hist is a Prometheus histogram: cumulative counts at each upper bound.
type hist struct {
	Count  uint64    `json:"count"`
	Sum    float64   `json:"sum"`
	Bounds []float64 `json:"bounds"`
	Cum    []uint64  `json:"cum"`
}

// childMain runs a child and returns its exit code.
func childMain(role string, args []string) int {
	fs := flag.NewFlagSet("kurier-bench child", flag.ContinueOnError)
	dir := fs.String("dir", "", "network directory")
	verbose := fs.Bool("verbose", false, "log at Info")
	var ep pki.RelayEndpoints
	fs.StringVar(&ep.Public, "public", "", "relay public address")
	fs.StringVar(&ep.Pairing, "pairing", "", "relay pairing address")
	fs.StringVar(&ep.Control, "control", "", "relay QUIC control address")
	fs.StringVar(&ep.ControlTCP, "control-tcp", "", "relay TCP control address")
	target := fs.String("target", "", "backend address (proxy)")
	maxPending := fs.Int("max-pending-per-member", 0, "relay Config.MaxPendingPerMember (0: default)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the child's whole life to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	out := json.NewEncoder(os.Stdout)
	fail := func(err error) int {
		out.Encode(childMsg{Error: err.Error()})
		return 1
	}
	nofile, err := raiseNoFile()
	if err != nil {
		return fail(err)
	}
	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})).With("child", role)
	trust, err := loadTrust(*dir)
	if err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}

	var stop func()
	ready := childMsg{NoFile: nofile}
	switch role {
	case "relay":
		stop, ready.Endpoints, err = startRelayChild(*dir, trust, *maxPending, reg, log)
	case "proxy":
		stop, err = startProxyChild(*dir, trust, ep, *target, reg, log)
	default:
		err = fmt.Errorf("unknown child mode %q", role)
	}
	if err != nil {
		return fail(err)
	}
	defer stop()
	if err := out.Encode(ready); err != nil {
		return 1
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() { // until the parent closes stdin
		switch sc.Text() {
		case "gc":
			runtime.GC()
			runtime.GC() // a second cycle empties sync.Pool victim caches
			debug.FreeOSMemory()
			fallthrough
		case "stats":
			if err := out.Encode(stats(reg)); err != nil {
				return 1
			}
		default:
			out.Encode(childMsg{Error: fmt.Sprintf("unknown command %q", sc.Text())})
		}
	}
	return 0
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns it.
func raiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	rl.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("setrlimit NOFILE %d: %w", rl.Max, err)
	}
	return rl.Cur, nil
}

// startRelayChild runs a relay with production defaults on loopback ports.
// The one change: the per-source-IP connection rate limit (default 100/s) is
// raised out of the way, because every bench client comes from 127.0.0.1;
// the limiter still runs on every connection. maxPending, if not zero,
// overrides MaxPendingPerMember for what-if runs.
func startRelayChild(dir string, trust pki.Trust, maxPending int, reg *prometheus.Registry, log *slog.Logger) (func(), *pki.RelayEndpoints, error) {
	id, err := loadIdentity(dir, relayName)
	if err != nil {
		return nil, nil, err
	}
	srv, err := relay.New(relay.Config{Identity: id, Trust: trust, MaxConnRate: 1 << 20, MaxPendingPerMember: maxPending, Logger: log, Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, nil, err
		}
		lns = append(lns, ln)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		for _, l := range lns {
			l.Close()
		}
		return nil, nil, err
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(relay.Listeners{Public: lns[0], Pairing: lns[1], ControlTCP: lns[2], ControlQUIC: pc}); err != nil {
			log.Error("relay serve failed", "err", err)
			os.Exit(1)
		}
	})
	ep := &pki.RelayEndpoints{
		Public:     lns[0].Addr().String(),
		Pairing:    lns[1].Addr().String(),
		Control:    pc.LocalAddr().String(),
		ControlTCP: lns[2].Addr().String(),
	}
	return func() {
		srv.Close()
		pc.Close()
		wg.Wait()
	}, ep, nil
}

// startProxyChild runs the office's private proxy with production defaults
// and its own route pointing at the backend (a DialTarget, spliced). It
// returns once the route is registered at the relay.
func startProxyChild(dir string, trust pki.Trust, ep pki.RelayEndpoints, target string, reg *prometheus.Registry, log *slog.Logger) (func(), error) {
	id, err := loadIdentity(dir, officeName)
	if err != nil {
		return nil, err
	}
	p, err := proxy.New(proxy.Config{
		Identity:   id,
		Trust:      trust,
		Relays:     []proxy.RelayAddr{{Name: relayName, Endpoints: ep}},
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(context.Background()) }()
	stop := func() {
		p.Close()
		<-runDone
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	name := officeID.DNSName()
	if err := p.AddRoute(ctx, proxy.Route{Name: name, Target: proxy.DialTarget{Addr: target}}); err != nil {
		stop()
		return nil, fmt.Errorf("add route %s: %w", name, err)
	}
	for p.Registered(name) == 0 {
		select {
		case <-ctx.Done():
			stop()
			return nil, fmt.Errorf("route %s not registered at the relay: %+v", name, p.Status())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return stop, nil
}

// stats reports the child's Go memory and its metrics.
func stats(reg *prometheus.Registry) childMsg {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := childMsg{
		HeapInuse:  ms.HeapInuse,
		StackInuse: ms.StackInuse,
		Sys:        ms.Sys,
		Goroutines: runtime.NumGoroutine(),
		Counters:   map[string]float64{},
		Hists:      map[string]hist{},
	}
	mfs, err := reg.Gather()
	if err != nil {
		m.Error = err.Error()
		return m
	}
	for _, mf := range mfs {
		for _, mt := range mf.Metric {
			var labels []string
			for _, lp := range mt.Label {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := mf.GetName()
			if len(labels) > 0 {
				sort.Strings(labels)
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case mt.Counter != nil:
				m.Counters[key] = mt.Counter.GetValue()
			case mt.Gauge != nil:
				m.Counters[key] = mt.Gauge.GetValue()
			case mt.Histogram != nil:
				h := hist{Count: mt.Histogram.GetSampleCount(), Sum: mt.Histogram.GetSampleSum()}
				for _, b := range mt.Histogram.Bucket {
					h.Bounds = append(h.Bounds, b.GetUpperBound())
					h.Cum = append(h.Cum, b.GetCumulativeCount())
				}
				m.Hists[key] = h
			}
		}
	}
	return m
}

// child is the parent's handle on a child process.
type child struct {
	role   string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // stdout lines; closed at EOF
	stderr *tail
	done   chan struct{} // closed when the process has exited
}

// startChild starts a child and waits for its ready line.
// It runs exe (this binary) under cred if cred is not nil.
func startChild(ctx context.Context, exe, role string, args []string, cred *syscall.Credential, verbose bool) (*child, childMsg, error) {
	if verbose {
		args = append(args, "-verbose")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), childEnv+"="+role)
	// Its own process group, so a terminal's ^C reaches only the parent,
	// which then stops the child; and killed if the parent dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	var err error
	c := &child{role: role, cmd: cmd, lines: make(chan string, 4), stderr: &tail{max: 8 << 10}, done: make(chan struct{})}
	if verbose {
		cmd.Stderr = io.MultiWriter(c.stderr, os.Stderr)
	} else {
		cmd.Stderr = c.stderr
	}
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, childMsg{}, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, childMsg{}, err
	}
	if err := cmd.Start(); err != nil {
		return nil, childMsg{}, fmt.Errorf("start %s child: %w", role, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		cmd.Wait()
		close(c.done)
	}()
	msg, err := c.read(ctx, 30*time.Second)
	if err != nil {
		c.stop()
		return nil, childMsg{}, err
	}
	return c, msg, nil
}

// read waits for the child's next line.
func (c *child) read(ctx context.Context, timeout time.Duration) (childMsg, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-c.lines:
		if !ok {
			return childMsg{}, fmt.Errorf("%s child exited: %s", c.role, c.stderr.String())
		}
		var m childMsg
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			return childMsg{}, fmt.Errorf("%s child said %q: %w", c.role, line, err)
		}
		if m.Error != "" {
			return m, fmt.Errorf("%s child: %s", c.role, m.Error)
		}
		return m, nil
	case <-t.C:
		return childMsg{}, fmt.Errorf("%s child did not answer within %v", c.role, timeout)
	case <-ctx.Done():
		return childMsg{}, ctx.Err()
	}
}

// call sends a command and returns the answer.
func (c *child) call(ctx context.Context, cmd string) (childMsg, error) {
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		return childMsg{}, fmt.Errorf("%s child: %w", c.role, err)
	}
	return c.read(ctx, 60*time.Second)
}

// stop closes the child's stdin, which shuts it down, and kills it if it
// has not exited within five seconds. It is idempotent.
func (c *child) stop() {
	c.stdin.Close()
	select {
	case <-c.done:
		return
	case <-time.After(5 * time.Second):
	}
	c.cmd.Process.Kill()
	<-c.done
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// userHZ is the unit of the CPU times in /proc/<pid>/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// cpu returns the child's user plus system CPU time from /proc/<pid>/stat,
// all threads included.
func (c *child) cpu() (time.Duration, error) {
	u, s, err := c.cpuSplit()
	return u + s, err
}

// cpuSplit returns the child's user and system CPU time.
func (c *child) cpuSplit() (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.pid()))
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	rest := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]) // the command name may hold spaces
	if len(rest) < 13 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: too few fields", c.pid())
	}
	utime, err1 := strconv.ParseUint(rest[11], 10, 64) // field 14
	stime, err2 := strconv.ParseUint(rest[12], 10, 64) // field 15
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", c.pid(), err)
	}
	return time.Duration(utime) * time.Second / userHZ, time.Duration(stime) * time.Second / userHZ, nil
}

// rssKB returns VmRSS from /proc/<pid>/status in KiB.
func (c *child) rssKB() (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid()))
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			return strconv.ParseInt(f[0], 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", c.pid())
}

// fds returns the number of open file descriptors of the child.
func (c *child) fds() (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", c.pid()))
	return len(ents), err
}

// pipes returns the capacities of the pipes the child holds open (each
// pipe once, whichever of its ends the child holds): capacity → count.
func (c *child) pipes() (map[int]int, error) {
	dir := fmt.Sprintf("/proc/%d/fd", c.pid())
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	out := map[int]int{}
	for _, e := range ents {
		path := dir + "/" + e.Name()
		link, err := os.Readlink(path)
		if err != nil || !strings.HasPrefix(link, "pipe:") || seen[link] {
			continue // closed meanwhile, or not a pipe
		}
		seen[link] = true
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		size, err := unix.FcntlInt(uintptr(fd), unix.F_GETPIPE_SZ, 0)
		unix.Close(fd)
		if err == nil {
			out[size]++
		}
	}
	return out, nil
}

// tail keeps the last max bytes written to it.
type tail struct {
	max int
	mu  sync.Mutex // guards b
	b   []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
