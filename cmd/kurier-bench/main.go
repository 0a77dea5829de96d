// Command kurier-bench measures Kurier's relayed path against a direct TLS
// connection on loopback, in the same run: bulk throughput and the relay's
// CPU per GB, connection setup latency, many parallel clients, and the
// relay's memory per idle relayed connection.
//
// The relay and the private proxy run in their own processes (this binary
// re-executed), so their CPU time and memory are read from /proc for them
// alone. The client and the backend, a TLS server presenting the member's
// own certificate, run in this process. See docs/benchmarks.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

func main() {
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(childMain(role, os.Args[1:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "kurier-bench:", err)
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type options struct {
	size     int64
	rounds   int
	setup    int
	parallel int
	conns    int
	phases   map[string]bool
	// relayPending overrides the relay's MaxPendingPerMember (0: default).
	relayPending int
	cpuProfile   string // directory for the children's CPU profiles
	user         string // run the children as this user (needs root)
	timeout      time.Duration
	json         bool
	verbose      bool
}

var allPhases = []string{"throughput", "setup", "parallel", "memory"}

const usage = `Usage: kurier-bench [flags]

Measures the relayed path (client → relay → private proxy → backend) against a
direct TLS connection (client → backend) on loopback, in one run, and prints
one table: measurement | direct | relayed | ratio/added | target | met?

  throughput  TLS 1.3 download and upload of --size bytes, --rounds times per
              path (direct and relayed alternate); MB/s and the ratio; CPU
              seconds per GB of the relay process (and of the proxy process)
  setup       --setup new connections per path, one after another: TCP
              connect + full mTLS 1.3 handshake + first response byte; p50,
              p99, mean and the added latency
  parallel    --parallel clients started at once per path, one connection and
              one request each: successes, total time, p50/p99 per client
  memory      --conns idle relayed connections held open; the relay process's
              RSS (VmRSS after GC and FreeOSMemory) before, halfway and after;
              KiB per connection. Scaled down, with a note, if the hard
              RLIMIT_NOFILE cannot hold that many.

The relay and the proxy run as child processes with production defaults
(except the relay's per-IP connection rate limit, raised because every client
is 127.0.0.1). The backend presents the health office's own certificate and
the client verifies it: the relayed path stays end-to-end TLS. A fresh
throwaway network PKI is made in a temporary directory and removed on exit.
The "met?" column compares figures with the targets; it does not change the
exit status. Exit codes: 0 measured, 1 a measurement failed, 2 usage.

Flags:
`

func parseFlags(args []string, stderr io.Writer) (options, error) {
	o := options{size: 1 << 30}
	fs := flag.NewFlagSet("kurier-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	fs.Var((*sizeFlag)(&o.size), "size", "bytes per bulk transfer (B, KB, MB, GB, KiB, MiB, GiB)")
	fs.IntVar(&o.rounds, "rounds", 5, "bulk transfers per path and direction")
	fs.IntVar(&o.setup, "setup", 1000, "sequential new connections per path")
	fs.IntVar(&o.parallel, "parallel", 1000, "clients started at once per path")
	fs.IntVar(&o.conns, "conns", 10000, "idle relayed connections for the memory measurement")
	phases := fs.String("phases", strings.Join(allPhases, ","), "measurements to run, comma-separated")
	fs.IntVar(&o.relayPending, "relay-max-pending-per-member", 0, "what-if: the relay's Config.MaxPendingPerMember (0: its default, 256)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write CPU profiles of the relay and proxy children to this `directory`")
	fs.StringVar(&o.user, "user", "", "run the relay and proxy children as this `user` (needs root), so the kernel's limits for unprivileged processes apply as in production")
	fs.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this long")
	fs.BoolVar(&o.json, "json", false, "print the results as JSON")
	fs.BoolVar(&o.verbose, "verbose", false, "show the children's logs and progress")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, errUsage
	}
	bad := func(format string, a ...any) (options, error) {
		fmt.Fprintf(stderr, "kurier-bench: "+format+"\n", a...)
		return o, errUsage
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	if o.size < 1<<20 || o.rounds < 1 || o.setup < 1 || o.parallel < 1 || o.conns < 1 || o.timeout <= 0 || o.relayPending < 0 {
		return bad("--size must be at least 1MiB; --rounds, --setup, --parallel, --conns and --timeout must be positive")
	}
	if o.user != "" && o.cpuProfile != "" {
		return bad("--cpuprofile and --user cannot be combined")
	}
	if o.cpuProfile != "" {
		if fi, err := os.Stat(o.cpuProfile); err != nil || !fi.IsDir() {
			return bad("--cpuprofile %s: not a directory", o.cpuProfile)
		}
	}
	o.phases = map[string]bool{}
	for p := range strings.SplitSeq(*phases, ",") {
		p = strings.TrimSpace(p)
		known := false
		for _, a := range allPhases {
			known = known || p == a
		}
		if !known {
			return bad("unknown phase %q (want %s)", p, strings.Join(allPhases, ","))
		}
		o.phases[p] = true
	}
	return o, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	opts, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.timeout)
	defer cancel()
	nofile, err := raiseNoFile()
	if err != nil {
		return err
	}
	progress := func(format string, a ...any) {
		if opts.verbose {
			fmt.Fprintf(stderr, "kurier-bench: "+format+"\n", a...)
		}
	}

	dir, err := os.MkdirTemp("", "kurier-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := writeNetwork(dir, time.Now()); err != nil {
		return fmt.Errorf("make network: %w", err)
	}
	trust, err := loadTrust(dir)
	if err != nil {
		return err
	}
	office, err := loadIdentity(dir, officeName)
	if err != nil {
		return err
	}
	vendor, err := loadIdentity(dir, vendorName)
	if err != nil {
		return err
	}
	be, err := startBackend(office, trust)
	if err != nil {
		return err
	}
	defer be.close()
	cl, err := newClients(vendor, trust)
	if err != nil {
		return err
	}
	rep := &report{Machine: machine()}
	b := &bench{opts: opts, dir: dir, cl: cl, be: be, rep: rep}
	if b.exe, err = os.Executable(); err != nil {
		return err
	}
	if opts.user != "" {
		if b.cred, b.exe, err = handOver(dir, b.exe, opts.user); err != nil {
			return err
		}
		rep.notef("relay and proxy ran as user %s (uid %d)", opts.user, b.cred.Uid)
	}
	defer b.stopChildren()

	var failures []error
	phase := func(name string, f func(context.Context) error) {
		if !opts.phases[name] || ctx.Err() != nil {
			return
		}
		progress("%s…", name)
		t0 := time.Now()
		if err := f(ctx); err != nil {
			if ctx.Err() != nil { // reported once, below
				rep.notef("%s stopped: %v", name, stopReason(ctx, opts))
				return
			}
			failures = append(failures, fmt.Errorf("%s: %w", name, err))
			rep.notef("%s FAILED: %v", name, err)
		}
		progress("%s done in %v", name, time.Since(t0).Round(time.Millisecond))
	}
	if opts.phases["throughput"] || opts.phases["setup"] || opts.phases["parallel"] {
		if err := b.startChildren(ctx); err != nil {
			return err
		}
		phase("throughput", b.throughput)
		phase("setup", b.setup)
		phase("parallel", b.parallel)
		b.stopChildren()
	}
	phase("memory", func(ctx context.Context) error { return b.memory(ctx, nofile) })
	if ctx.Err() != nil {
		failures = append(failures, stopReason(ctx, opts))
	}
	rep.Machine.LoadAfter = loadAvg()
	if opts.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		rep.print(stdout)
	}
	return errors.Join(failures...)
}

// handOver gives dir and everything in it to user and copies exe into it,
// so that children running as user can read their keys and run the binary
// (a "go run" binary sits in a directory only its owner can enter).
func handOver(dir, exe, name string) (*syscall.Credential, string, error) {
	if os.Geteuid() != 0 {
		return nil, "", errors.New("--user needs root")
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, "", err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, "", fmt.Errorf("user %s: %w", name, err)
	}
	b, err := os.ReadFile(exe)
	if err != nil {
		return nil, "", err
	}
	copied := filepath.Join(dir, "kurier-bench")
	if err := os.WriteFile(copied, b, 0o755); err != nil {
		return nil, "", err
	}
	err = filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(uid), int(gid))
	})
	if err != nil {
		return nil, "", err
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, copied, nil
}

// stopReason says why ctx ended: the --timeout or a signal.
func stopReason(ctx context.Context, opts options) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("--timeout %v reached", opts.timeout)
	}
	return errors.New("interrupted")
}

// row is one line of the result table.
type row struct {
	Measurement string `json:"measurement"`
	Direct      string `json:"direct"`
	Relayed     string `json:"relayed"`
	Ratio       string `json:"ratio_or_added"`
	Target      string `json:"target"`
	Met         string `json:"met"`
}

type machineInfo struct {
	CPUs       int    `json:"cpus"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
}

type report struct {
	Machine machineInfo `json:"machine"`
	Rows    []row       `json:"rows"`
	Notes   []string    `json:"notes"`
}

func (r *report) add(x row) { r.Rows = append(r.Rows, x) }

func (r *report) notef(format string, a ...any) { r.Notes = append(r.Notes, fmt.Sprintf(format, a...)) }

func (r *report) print(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "kurier-bench: %d CPUs (%s), Linux %s, %s; load average before %s, after %s\n\n",
		m.CPUs, m.CPU, m.Kernel, m.Go, m.LoadBefore, m.LoadAfter)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tdirect\trelayed\tratio/added\ttarget\tmet?")
	for _, x := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Measurement, x.Direct, x.Relayed, x.Ratio, x.Target, x.Met)
	}
	tw.Flush()
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "  -", n)
		}
	}
}

func machine() machineInfo {
	m := machineInfo{CPUs: runtime.NumCPU(), Go: runtime.Version(), LoadBefore: loadAvg()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.Lines(string(b)) {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				m.CPU = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// sizeFlag is a byte count with an optional unit.
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1},
}

func parseSize(v string) (int64, error) {
	v = strings.TrimSpace(v)
	mult := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("invalid size %q", v)
	}
	return int64(f * float64(mult)), nil
}

func formatSize(n int64) string {
	for _, u := range sizeUnits[:3] {
		if n >= u.mult && n%u.mult == 0 {
			return fmt.Sprintf("%d%s", n/u.mult, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}
