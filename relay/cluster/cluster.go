// Package cluster lets several relays act as one. The relays form a
// memberlist cluster (SWIM gossip, LAN profile, every packet and stream
// encrypted and authenticated with a shared AES key) and share three things:
//
//   - which relay holds a control session for which route name, so a relay
//     that accepts a client for a name it does not hold forwards the
//     announcement to one that does;
//   - the forwarded announcements themselves: a request to the holding relay,
//     answered once its local control session has taken it;
//   - the version of the newest verified directory each relay holds. A relay
//     that learns of a newer one fetches the signed bytes from the relay that
//     has it and hands them to its pki.Verifier, which checks the signature.
//     Gossip never vouches for content; it only says where to fetch. So a
//     revocation published to one relay reaches all of them within seconds.
//
// The message formats are in message.go and docs/relay.md.
package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/wire"
)

// ErrClosed is returned by calls on a Cluster after Shutdown.
var ErrClosed = errors.New("cluster: shut down")

// ErrDeliver is returned by Forward when the holding relay took the
// announcement but could not pass it to its control session.
var ErrDeliver = errors.New("cluster: holding relay could not deliver")

// Local is the relay this cluster node belongs to. *relay.Server
// implements it.
type Local interface {
	// Deliver passes an announcement that the relay named from forwarded
	// to the local control session holding in.Name. It must not block; it
	// returns relay.ErrNoRoute if no session holds the name.
	Deliver(from string, in wire.Incoming) error
	// Refused ends the pending pairings of tokens, announcements this relay
	// forwarded, because the relay they were delivered at reports that the
	// member withdrew the route. It must not block.
	Refused(tokens []wire.Token)
	// Holds reports whether a local control session holds name. Announce
	// asks it, so that announcements racing each other still leave the
	// relay's own table as the final word.
	Holds(name string) bool
}

var (
	_ relay.Cluster = (*Cluster)(nil)
	_ Local         = (*relay.Server)(nil)
)

// Config configures a Cluster node.
type Config struct {
	// Name is this relay's member name (1-63 of a-z, 0-9 and '-'). It is
	// the node's name in the cluster and must be unique in it. Required.
	Name string
	// BindAddr is the IP address gossip listens on, UDP and TCP. If empty,
	// 0.0.0.0 is used.
	BindAddr string
	// BindPort is the gossip port, UDP and TCP. If zero, the kernel picks a
	// free port; Addr reports it. Production sets it (memberlist's usual
	// port is 7946).
	BindPort int
	// AdvertiseAddr is the IP address other relays reach this one at. If
	// empty, the bound address is used, or a private address of the host
	// if bound to 0.0.0.0.
	AdvertiseAddr string
	// AdvertisePort is the port other relays reach this one at. If zero,
	// the bound port is used.
	AdvertisePort int
	// SecretKey is the cluster key, shared by all relays: 16, 24 or 32
	// bytes select AES-128, -192 or -256 in GCM mode. Every gossip packet
	// and stream is encrypted and authenticated with it; unencrypted
	// traffic is refused. Required.
	SecretKey Key
	// Join lists host:port addresses of relays to join (IP literals, or
	// names the system resolver resolves). If empty, Join starts a new
	// cluster; Start then joins only what JoinDirectory finds.
	Join []string
	// JoinDirectory makes Start also join the relays the directory names:
	// the gossip endpoints that the other relay members publish, in the
	// directory the Verifier holds and in each newer one. If false, Start
	// joins only Config.Join.
	JoinDirectory bool
	// Verifier holds this relay's directory; the cluster announces its
	// versions and feeds it newer ones fetched from other relays. Required.
	Verifier *pki.Verifier
	// MaxNamesPerRelay bounds the route names this cluster records for one
	// relay, this one included. If zero, 100000 is used.
	MaxNamesPerRelay int
	// ForwardTimeout bounds one forward attempt to one holding relay; the
	// caller's context bounds all attempts. If zero, 2s is used.
	ForwardTimeout time.Duration
	// FetchTimeout bounds fetching a directory or a relay's route list from
	// another relay. If zero, 30s is used.
	FetchTimeout time.Duration
	// Logger receives structured logs; memberlist's own log lines arrive at
	// Debug level. If nil, logs are discarded.
	Logger *slog.Logger
	// Registerer receives the metrics. If nil, none are exported.
	Registerer prometheus.Registerer
}

const (
	defaultMaxNames = 100000
	// maxNameBytes bounds the route name bytes per relay, so that one
	// relay's complete list always fits a pull reply and a push/pull state.
	maxNameBytes = 8 << 20
	// pullGrace is how long a gap in a relay's versions, or silence from a
	// relay that joined, may last before its complete list is pulled.
	pullGrace = time.Second
	// pullRetry spaces pulls from a relay after a failed one.
	pullRetry = 2 * time.Second
	// syncInterval is how often gaps are checked.
	syncInterval = 250 * time.Millisecond
	// dirRetry is how often a directory fetch is retried while some relay
	// announces a newer version; dirBackoff is how long a relay that served
	// a refused directory is not asked for that version again.
	dirRetry   = 5 * time.Second
	dirBackoff = 30 * time.Second
	// maxCalls bounds requests in flight; maxHandlers bounds goroutines
	// answering requests; maxDirServes bounds directories being sent, each
	// up to pki.MaxDirectorySize.
	maxCalls     = 4096
	maxHandlers  = 256
	maxDirServes = 4
	// maxQueued bounds the gossip queue; past it the oldest messages go.
	maxQueued = 1024
	// maxFlush bounds the routes messages one flush gossips.
	maxFlush = 16
)

// Key is a cluster key. It redacts itself when printed or logged.
type Key []byte

func (Key) String() string       { return "REDACTED" }
func (Key) GoString() string     { return "cluster.Key(REDACTED)" }
func (Key) LogValue() slog.Value { return slog.StringValue("REDACTED") }

// Cluster is one relay's node in the relay cluster. Create it with New,
// call SetLocal, then Start (or Join); stop it with Shutdown. Its methods are safe for
// concurrent use.
type Cluster struct {
	cfg  Config // immutable after New
	log  *slog.Logger
	m    *metrics
	ml   atomic.Pointer[memberlist.Memberlist] // set once Create returns
	bq   *memberlist.TransmitLimitedQueue      // see newQueue
	addr string
	lim  limits

	local   atomic.Pointer[Local]
	members atomic.Int64  // live members, this one included
	dirSeen atomic.Uint64 // newest own directory version announced
	nextID  atomic.Uint64

	started atomic.Bool // Start was called

	done     chan struct{} // closed by Shutdown
	dirWake  chan struct{} // cap 1: a newer directory was announced
	joinWake chan struct{} // cap 1: a member left
	handlers chan struct{} // slots for request handlers
	dirSlots chan struct{} // slots for directory serves

	mu      sync.RWMutex // guards tab, nodes and dirFail
	tab     *table
	nodes   map[string]*memberlist.Node // other live members by name
	dirFail map[dirSource]time.Time     // failed fetches until when

	callMu sync.Mutex // guards calls
	calls  map[uint64]*call

	gate gate // closed by Shutdown: memberlist calls back and logs after its own Shutdown

	lifeMu  sync.Mutex // guards closed; held while adding to wg
	closed  bool
	wg      sync.WaitGroup
	stopped chan struct{} // closed when Shutdown is complete

	shutdownOnce sync.Once
	shutdownErr  error
}

// New checks cfg and creates the cluster node: it binds the gossip port
// and starts gossiping, but joins nobody until Start or Join.
func New(cfg Config) (*Cluster, error) {
	if err := pki.ValidName(cfg.Name); err != nil {
		return nil, fmt.Errorf("cluster: Config.Name: %w", err)
	}
	switch len(cfg.SecretKey) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("cluster: Config.SecretKey must be 16, 24 or 32 bytes, not %d", len(cfg.SecretKey))
	}
	if cfg.Verifier == nil {
		return nil, errors.New("cluster: Config.Verifier is required")
	}
	if cfg.MaxNamesPerRelay <= 0 {
		cfg.MaxNamesPerRelay = defaultMaxNames
	}
	if cfg.ForwardTimeout <= 0 {
		cfg.ForwardTimeout = 2 * time.Second
	}
	if cfg.FetchTimeout <= 0 {
		cfg.FetchTimeout = 30 * time.Second
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	lg = lg.With("component", "cluster")
	c := &Cluster{
		cfg:      cfg,
		log:      lg,
		lim:      limits{maxNames: cfg.MaxNamesPerRelay, maxNameBytes: maxNameBytes},
		done:     make(chan struct{}),
		dirWake:  make(chan struct{}, 1),
		joinWake: make(chan struct{}, 1),
		handlers: make(chan struct{}, maxHandlers),
		dirSlots: make(chan struct{}, maxDirServes),
		nodes:    map[string]*memberlist.Node{},
		dirFail:  map[dirSource]time.Time{},
		calls:    map[uint64]*call{},
		stopped:  make(chan struct{}),
	}
	c.tab = newTable(cfg.Name, uint64(time.Now().UnixNano()), c.lim)
	var seed [8]byte
	rand.Read(seed[:])
	c.nextID.Store(binary.BigEndian.Uint64(seed[:]))
	c.members.Store(1)

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort // memberlist replaces a zero BindPort in both
	}
	mc.SecretKey = bytes.Clone(cfg.SecretKey)
	// memberlist would read /etc/resolv.conf itself for TCP DNS lookups of
	// join addresses; a library reads no file it was not handed. Without
	// it, names go to the system resolver.
	mc.DNSConfigPath = ""
	mc.GossipVerifyIncoming = true
	mc.GossipVerifyOutgoing = true
	// The label is authenticated with every packet and stream: a relay of
	// another network never mixes in, even with the same key.
	mc.Label = pki.ALPNGossip + "/" + cfg.Verifier.Network()
	mc.DelegateProtocolMin, mc.DelegateProtocolMax, mc.DelegateProtocolVersion = protoVersion, protoVersion, protoVersion
	d := &delegate{c: c}
	mc.Delegate = d
	mc.Events = d
	mc.Logger = log.New(logWriter{log: lg, gate: &c.gate}, "", 0)
	c.bq = newQueue(func() int { return int(c.members.Load()) }, mc.RetransmitMult)
	c.m = newMetrics(promauto.With(cfg.Registerer), c)

	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("cluster: start memberlist: %w", err)
	}
	c.ml.Store(ml)
	c.addr = ml.LocalNode().Address()

	c.goTracked(c.watchDirectory)
	c.goTracked(c.dirLoop)
	c.goTracked(c.syncLoop)
	return c, nil
}

// SetLocal sets the relay that forwarded announcements are delivered to. It
// must be called before Start or Join.
func (c *Cluster) SetLocal(l Local) { c.local.Store(&l) }

func (c *Cluster) getLocal() Local {
	if p := c.local.Load(); p != nil {
		return *p
	}
	return nil
}

// Join contacts the relays in Config.Join once and exchanges complete state
// with them. It succeeds if at least one answered, and returns nil at once
// if Config.Join is empty. If ctx ends first, it returns ctx.Err() and the
// attempt goes on in the background until memberlist's stream timeout.
// Start is the variant that does not wait and keeps trying.
func (c *Cluster) Join(ctx context.Context) error {
	if c.getLocal() == nil {
		return errors.New("cluster: SetLocal must be called before Join")
	}
	if len(c.cfg.Join) == 0 {
		return nil
	}
	res := make(chan error, 1)
	if !c.goTracked(func() {
		_, err := c.ml.Load().Join(c.cfg.Join)
		res <- err
	}) {
		return ErrClosed
	}
	select {
	case err := <-res:
		if err != nil {
			return fmt.Errorf("cluster: join %s: %w", strings.Join(c.cfg.Join, ","), err)
		}
		c.log.Info("joined cluster", "members", c.members.Load())
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Members returns the names of the live members, this relay included,
// sorted.
func (c *Cluster) Members() []string {
	c.mu.RLock()
	out := make([]string, 0, len(c.nodes)+1)
	for n := range c.nodes {
		out = append(out, n)
	}
	c.mu.RUnlock()
	out = append(out, c.cfg.Name)
	slices.Sort(out)
	return out
}

// Addr returns the host:port other relays reach this one at: the advertised
// address, which is the bound one unless Config.AdvertiseAddr says
// otherwise. With BindPort 0 it carries the port the kernel chose.
func (c *Cluster) Addr() string { return c.addr }

// Holders returns the other relays known to hold name.
func (c *Cluster) Holders(name string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.tab.holdersOf(name)
}

// Announce records that this relay now holds (held) or no longer holds a
// route for name. It never blocks on the network: the change is gossiped in
// the next round. If a Local is set, its Holds is the truth and held is
// ignored, so racing announcements settle on the relay's final state.
func (c *Cluster) Announce(name string, held bool) {
	if !validRouteName(name) {
		c.m.dropped.WithLabelValues("malformed").Inc()
		return
	}
	if l := c.getLocal(); l != nil {
		held = l.Holds(name)
	}
	c.mu.Lock()
	res := c.tab.setOwn(name, held)
	c.mu.Unlock()
	switch res {
	case ownOverLimit:
		c.m.dropped.WithLabelValues("over_limit").Inc()
		c.log.Debug("route not shared: this relay holds the most names the cluster records per relay", "sni", name, "max", c.cfg.MaxNamesPerRelay)
	case ownChangedDropping:
		c.m.dropped.WithLabelValues("queue_full").Inc()
	}
}

// Shutdown leaves the cluster (other relays drop this one's routes at
// once), stops gossip and waits for the node's goroutines. If ctx ends
// first it returns ctx.Err(); the goroutines still end within memberlist's
// stream timeout. It is idempotent.
func (c *Cluster) Shutdown(ctx context.Context) error { return c.shutdown(ctx, true) }

// shutdown is Shutdown; without leave the other relays find out by failure
// detection, as after a crash.
func (c *Cluster) shutdown(ctx context.Context, leave bool) error {
	c.shutdownOnce.Do(func() {
		timeout := 5 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			timeout = time.Until(dl)
		}
		var errs []error
		if leave && timeout > 0 {
			if err := c.ml.Load().Leave(timeout); err != nil {
				errs = append(errs, fmt.Errorf("cluster: leave: %w", err))
			}
		}
		if err := c.ml.Load().Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("cluster: stop memberlist: %w", err))
		}
		// memberlist's suspicion and ack timers outlive its Shutdown and
		// still log and call the delegates; from here on they are ignored.
		c.gate.close()
		c.lifeMu.Lock()
		c.closed = true
		c.lifeMu.Unlock()
		close(c.done)
		go func() {
			c.wg.Wait()
			close(c.stopped)
		}()
		c.shutdownErr = errors.Join(errs...)
	})
	select {
	case <-c.stopped:
		return c.shutdownErr
	case <-ctx.Done():
		return ctx.Err()
	}
}

// goTracked runs f in a goroutine Shutdown waits for. It returns false
// after Shutdown.
func (c *Cluster) goTracked(f func()) bool {
	c.lifeMu.Lock()
	defer c.lifeMu.Unlock()
	if c.closed {
		return false
	}
	c.wg.Go(f)
	return true
}

// trySpawn runs f in a tracked goroutine if one of slots is free. It
// returns false if none is or after Shutdown.
func (c *Cluster) trySpawn(slots chan struct{}, f func()) bool {
	select {
	case slots <- struct{}{}:
	default:
		return false
	}
	if !c.goTracked(func() {
		defer func() { <-slots }()
		f()
	}) {
		<-slots
		return false
	}
	return true
}

// node returns the memberlist node of a live member other than this one.
func (c *Cluster) node(name string) (*memberlist.Node, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	n, ok := c.nodes[name]
	return n, ok
}

// broadcast is a gossip message. Messages with the same name replace each
// other in the queue.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(o memberlist.Broadcast) bool {
	nb, ok := o.(memberlist.NamedBroadcast)
	return ok && nb.Name() == b.name
}
func (b *broadcast) Name() string    { return b.name }
func (b *broadcast) Message() []byte { return b.msg }
func (b *broadcast) Finished()       {}

// newQueue returns a gossip queue.
//
// memberlist v0.6.0's TransmitLimitedQueue loses messages: it orders them by
// (transmits, length, id) and treats equal keys as one message, and it
// restarts its id counter whenever the queue is momentarily empty, which
// GetBroadcasts causes while it takes the last message out to count a
// transmission. A message queued afterwards gets the id of one still in
// flight, and once both have the same transmit count and length, one
// silently replaces the other (hashicorp/memberlist#263, #324, open). Our
// dir messages all have the same length, so this bit in tests. A sentinel
// that is never sent keeps the queue from ever being empty: it is longer
// than any gossip packet, so GetBroadcasts never picks it, and being the
// first of the never-sent tier, Prune never drops it.
func newQueue(numNodes func() int, retransmitMult int) *memberlist.TransmitLimitedQueue {
	q := &memberlist.TransmitLimitedQueue{NumNodes: numNodes, RetransmitMult: retransmitMult}
	q.QueueBroadcast(&broadcast{name: "sentinel", msg: make([]byte, sentinelLen)})
	return q
}

// sentinelLen exceeds any gossip packet (memberlist's UDPBufferSize).
const sentinelLen = 64 << 10

// queued returns the gossip messages waiting to be sent.
func (c *Cluster) queued() int { return c.bq.NumQueued() - 1 }

// queue gossips msg. The queue keeps the maxQueued newest messages; a
// dropped routes message shows up as a gap at the receivers, who then pull.
func (c *Cluster) queue(name string, msg []byte) {
	c.bq.QueueBroadcast(&broadcast{name: name, msg: msg})
	if n := c.queued(); n > maxQueued {
		c.bq.Prune(maxQueued + 1) // + the sentinel
		c.m.dropped.WithLabelValues("queue_full").Add(float64(n - maxQueued))
	}
}

func routesKey(m routesMsg) string {
	return "r/" + m.origin + "/" + strconv.FormatUint(m.inc, 16) + "/" + strconv.FormatUint(m.base, 16)
}

// flush turns own route changes into gossip messages.
func (c *Cluster) flush() {
	c.mu.Lock()
	msgs := c.tab.flush(maxDelta)
	c.mu.Unlock()
	if len(msgs) > maxFlush {
		// A burst (a relay restarting, every member registering again)
		// would take many gossip rounds. Gossip only its newest changes:
		// the other relays see the gap and pull the whole list in one
		// request each.
		msgs = msgs[len(msgs)-maxFlush:]
	}
	for _, m := range msgs {
		b, err := encode(m)
		if err != nil { // cannot happen: names are checked in Announce
			c.log.Error("encode routes message", "err", err)
			continue
		}
		c.queue(routesKey(m), b)
	}
}

// watchDirectory announces each new directory version of this relay.
func (c *Cluster) watchDirectory() {
	v := c.cfg.Verifier
	for {
		ch := v.Changed()
		if snap := v.Current(); snap != nil && snap.Dir.Version > c.dirSeen.Load() {
			c.dirSeen.Store(snap.Dir.Version)
			c.mu.RLock()
			m := dirMsg{origin: c.cfg.Name, inc: c.tab.inc, version: snap.Dir.Version}
			c.mu.RUnlock()
			if b, err := encode(m); err == nil {
				c.queue("d/"+m.origin, b)
			}
		}
		select {
		case <-c.done:
			return
		case <-ch:
		}
	}
}

// ownDir returns the version of this relay's directory, 0 if none.
func (c *Cluster) ownDir() uint64 {
	if snap := c.cfg.Verifier.Current(); snap != nil {
		return snap.Dir.Version
	}
	return 0
}

func (c *Cluster) wakeDir() {
	select {
	case c.dirWake <- struct{}{}:
	default:
	}
}

// gate admits memberlist's callbacks and log lines until it is closed.
// close waits for those in progress.
type gate struct {
	mu     sync.RWMutex // held for reading by each callback; guards closed
	closed bool
}

func (g *gate) enter() bool {
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return false
	}
	return true
}

func (g *gate) leave() { g.mu.RUnlock() }

func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// logWriter turns memberlist's log lines into Debug records: a peer
// controls how often they happen.
type logWriter struct {
	log  *slog.Logger
	gate *gate
}

func (w logWriter) Write(p []byte) (int, error) {
	if !w.log.Enabled(context.Background(), slog.LevelDebug) || !w.gate.enter() {
		return len(p), nil
	}
	defer w.gate.leave()
	line := strings.TrimSpace(string(p))
	level := ""
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			level, line = line[1:i], strings.TrimSpace(line[i+1:])
		}
	}
	line = strings.TrimPrefix(line, "memberlist: ")
	w.log.Debug("memberlist", "ml_level", level, "line", line)
	return len(p), nil
}

type metrics struct {
	forwards    *prometheus.CounterVec
	forwardTime prometheus.Histogram
	fetches     *prometheus.CounterVec
	pulls       *prometheus.CounterVec
	dropped     *prometheus.CounterVec
}

func newMetrics(f promauto.Factory, c *Cluster) *metrics {
	m := &metrics{
		forwards: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_cluster_forwards_total",
			Help: "Announcements forwarded to other relays, by result: ok, no_route (no relay holds the name), refused (every holder said it no longer holds it), error, timeout.",
		}, []string{"result"}),
		forwardTime: f.NewHistogram(prometheus.HistogramOpts{
			Name:    "relay_cluster_forward_duration_seconds",
			Help:    "Time from forwarding an announcement to the holder's confirmation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}),
		fetches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_cluster_directory_fetches_total",
			Help: "Directories fetched from other relays, by result: ok, unchanged, rejected (the verifier refused it), error.",
		}, []string{"result"}),
		pulls: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_cluster_route_pulls_total",
			Help: "Complete route lists pulled from other relays after a gap, by result: ok, error.",
		}, []string{"result"}),
		dropped: f.NewCounterVec(prometheus.CounterOpts{
			Name: "relay_cluster_messages_dropped_total",
			Help: "Cluster messages and route names dropped, by reason: malformed, too_large, unknown_type, unknown_origin, unknown_peer, over_limit, queue_full, busy, late_reply, send_error.",
		}, []string{"reason"}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_cluster_members",
		Help: "Live cluster members, this relay included.",
	}, func() float64 { return float64(c.members.Load()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_cluster_remote_routes",
		Help: "Route names held by other relays.",
	}, func() float64 {
		c.mu.RLock()
		defer c.mu.RUnlock()
		return float64(len(c.tab.holders))
	})
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "relay_cluster_directory_version",
		Help: "Version of this relay's verified directory.",
	}, func() float64 { return float64(c.ownDir()) })
	return m
}

// dropReason maps a decoding error to its metric label.
func dropReason(err error) string {
	switch {
	case errors.Is(err, errTooLarge):
		return "too_large"
	case errors.Is(err, errUnknown):
		return "unknown_type"
	}
	return "malformed"
}
