package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurier-net/kurier/relay/wire"
)

// maxWriteBatch bounds the frames the writer coalesces into one Write.
const maxWriteBatch = 64 << 10 // bytes

// session is one control session with a relay. The control loop (run) owns
// the request state; a reader and a writer goroutine move frames.
type session struct {
	p         *Proxy
	relay     RelayAddr
	transport string
	conn      ctrlConn
	log       *slog.Logger
	since     time.Time

	sendq chan []byte     // encoded frames for the writer; bounded, never waited on
	ctrl  chan wire.Frame // Result and RouteGone, reader → control loop
	kick  chan struct{}   // cap 1: the routes changed
	done  chan struct{}   // closed by close

	closeOnce sync.Once
	reason    string // why the session ended; written before done is closed
	err       error  // the error that ended it, if any; written before done is closed

	goaway   atomic.Bool  // the relay sent GoAway
	lastRecv atomic.Int64 // unix nanoseconds of the last frame received

	mu   sync.Mutex             // guards held and busy
	held map[string]*routeEntry // routes registered at the relay, by name
	busy map[string]*op         // the request in flight for a name

	// Owned by the control loop.
	pending map[uint32]*op
	nextReq uint32
	retry   map[string]retryAt

	wg sync.WaitGroup // reader and writer
}

// op is a Register or Withdraw in flight.
type op struct {
	reqID    uint32
	name     string
	entry    *routeEntry // the entry registered; nil for a withdraw
	withdraw bool
	sent     time.Time
}

// retryAt holds back a new Register for a name after a failure.
type retryAt struct {
	entry *routeEntry
	at    time.Time
}

func (p *Proxy) newSession(relay RelayAddr, transport string, c ctrlConn, log *slog.Logger) *session {
	s := &session{
		p:         p,
		relay:     relay,
		transport: transport,
		conn:      c,
		log:       log.With("transport", transport),
		since:     time.Now(),
		sendq:     make(chan []byte, p.cfg.WriteQueue),
		ctrl:      make(chan wire.Frame, 16),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		held:      map[string]*routeEntry{},
		busy:      map[string]*op{},
		pending:   map[uint32]*op{},
		retry:     map[string]retryAt{},
	}
	s.lastRecv.Store(s.since.UnixNano())
	return s
}

// run serves the session until it ends or ctx is cancelled, and closes it.
// When it returns the reader and writer have exited.
func (s *session) run(ctx context.Context) {
	s.wg.Go(s.readLoop)
	s.wg.Go(s.writeLoop)
	defer func() {
		s.close(closeShutdown, nil) // no-op if it already ended
		s.wg.Wait()
		s.mu.Lock()
		clear(s.held)
		clear(s.busy)
		s.mu.Unlock()
		s.p.changed.notify()
	}()

	// The first frame makes the stream visible to the relay's AcceptStream.
	if !s.send(wire.Ping{Nonce: rand.Uint64()}) {
		return
	}
	tick := time.NewTicker(s.p.cfg.PingInterval)
	defer tick.Stop()
	force := true
	for {
		s.reconcile(time.Now(), force)
		force = false
		select {
		case <-ctx.Done():
			reason := closeShutdown
			if errors.Is(context.Cause(ctx), errRelayRemoved) {
				reason = closeRelayRemoved
			}
			s.close(reason, nil)
			return
		case <-s.done:
			return
		case <-s.kick:
			force = true
		case f := <-s.ctrl:
			s.handle(f, time.Now())
		case now := <-tick.C:
			if !s.tick(now) {
				return
			}
			force = true
		}
	}
}

// tick checks liveness and sends a Ping. It reports whether the session is
// still alive.
func (s *session) tick(now time.Time) bool {
	if silent := now.Sub(time.Unix(0, s.lastRecv.Load())); silent > 3*s.p.cfg.PingInterval {
		s.close(closePingTimeout, errors.New("no frame from the relay for "+silent.Round(time.Millisecond).String()))
		return false
	}
	for _, o := range s.pending {
		if now.Sub(o.sent) > s.p.cfg.RequestTimeout {
			s.close(closeRequestTimeout, errors.New("relay did not answer a "+opName(o)+" in time"))
			return false
		}
	}
	return s.send(wire.Ping{Nonce: rand.Uint64()})
}

// reconcile sends the Registers and Withdraws that bring the routes held at
// the relay in line with the proxy's routes. Unless force is set it does
// nothing while more than half of the request window is in flight, so that a
// resync of many routes does not rescan the table for every answer.
func (s *session) reconcile(now time.Time, force bool) {
	if !force && len(s.pending) > maxInflight/2 {
		return
	}
	tbl := s.p.routes.Load()
	if force {
		for name, r := range s.retry {
			if !now.Before(r.at) {
				delete(s.retry, name) // bounded by the routes that failed recently
			}
		}
	}
	var out []wire.Frame
	var same []*routeEntry
	s.mu.Lock()
	for name := range s.held {
		if len(s.pending) >= maxInflight {
			break
		}
		if s.busy[name] != nil {
			continue
		}
		if e, ok := tbl.byName[name]; ok && !e.expired(now) {
			continue
		}
		if r, ok := s.retry[name]; ok && r.entry == nil && now.Before(r.at) {
			continue
		}
		o := s.newOpLocked(name, nil, now)
		out = append(out, wire.Withdraw{ReqID: o.reqID, Name: name})
	}
	for name, e := range tbl.byName {
		if len(s.pending) >= maxInflight {
			break
		}
		if e.expired(now) || s.busy[name] != nil {
			continue
		}
		if h := s.held[name]; h == e {
			continue
		} else if h != nil && sameRegistration(h, e) {
			s.held[name] = e
			same = append(same, e)
			continue
		}
		if r, ok := s.retry[name]; ok && r.entry == e && now.Before(r.at) {
			continue
		}
		o := s.newOpLocked(name, e, now)
		out = append(out, wire.Register{ReqID: o.reqID, SingleUse: e.SingleUse, TTL: e.ttlSeconds(now), Name: name})
	}
	s.mu.Unlock()
	for _, e := range same {
		e.report(s, nil)
	}
	for _, f := range out {
		if !s.send(f) {
			return
		}
	}
	if len(same) > 0 {
		s.p.changed.notify()
	}
}

// newOpLocked starts a request for name. s.mu must be held.
func (s *session) newOpLocked(name string, e *routeEntry, now time.Time) *op {
	s.nextReq++
	o := &op{reqID: s.nextReq, name: name, entry: e, withdraw: e == nil, sent: now}
	s.pending[o.reqID] = o
	s.busy[name] = o
	return o
}

func opName(o *op) string {
	if o.withdraw {
		return "withdraw"
	}
	return "register"
}

// handle processes a Result or RouteGone from the relay.
func (s *session) handle(f wire.Frame, now time.Time) {
	switch m := f.(type) {
	case wire.Result:
		s.handleResult(m, now)
	case wire.RouteGone:
		s.handleGone(m, now)
	}
	s.p.changed.notify()
}

func (s *session) handleResult(m wire.Result, now time.Time) {
	o, ok := s.pending[m.ReqID]
	if !ok {
		s.log.Debug("result for unknown request", "req_id", m.ReqID, "code", m.Code.String())
		return
	}
	delete(s.pending, m.ReqID)
	s.p.m.registrations.WithLabelValues(opName(o), codeLabel(m.Code)).Inc()
	retry := retryAt{entry: o.entry, at: now.Add(s.p.cfg.PingInterval)}

	s.mu.Lock()
	delete(s.busy, o.name)
	if o.withdraw {
		switch m.Code {
		case wire.CodeOK, wire.CodeNotFound:
			delete(s.held, o.name)
		default: // the reconcile after the next tick tries again
			s.retry[o.name] = retry
		}
		s.mu.Unlock()
		return
	}
	switch m.Code {
	case wire.CodeOK:
		s.held[o.name] = o.entry
		delete(s.retry, o.name)
	default:
		s.retry[o.name] = retry
	}
	s.mu.Unlock()

	switch m.Code {
	case wire.CodeOK:
		o.entry.report(s, nil)
	case wire.CodeForbidden, wire.CodeBad:
		// The relay's namespace rules are the proxy's own (checked in
		// AddRoute), so this is a disagreement an operator must look at.
		s.log.Warn("relay refused route", "sni", o.name, "code", m.Code.String(), "err", m.Message)
		o.entry.report(s, &RefusedError{Relay: s.relay.Name, Code: m.Code, Message: m.Message})
		s.p.dropEntry(o.entry)
	default: // limit, draining: kept and retried
		s.log.Debug("relay did not take route", "sni", o.name, "code", m.Code.String(), "err", m.Message)
		o.entry.report(s, &RefusedError{Relay: s.relay.Name, Code: m.Code, Message: m.Message})
	}
}

// handleGone processes a relay's notice that a route ended there. A used
// single-use route, or an expired one-time route, is dropped everywhere; any
// other route is registered again after a delay.
func (s *session) handleGone(m wire.RouteGone, now time.Time) {
	s.mu.Lock()
	delete(s.held, m.Name)
	s.mu.Unlock()
	e, ok := s.p.routes.Load().byName[m.Name]
	if !ok {
		return
	}
	switch {
	case m.Reason == wire.GoneUsed && e.SingleUse,
		m.Reason == wire.GoneExpired && !e.expires.IsZero():
		s.log.Debug("route gone", "sni", m.Name, "reason", m.Reason)
		s.p.dropEntry(e)
	default:
		s.log.Debug("relay dropped route, registering again", "sni", m.Name, "reason", m.Reason)
		s.retry[m.Name] = retryAt{entry: e, at: now.Add(s.p.cfg.PingInterval)}
	}
}

// readLoop reads frames until the session ends.
func (s *session) readLoop() {
	buf := make([]byte, 0, 512)
	for {
		f, b, err := wire.ReadFrame(s.conn, buf)
		buf = b[:0]
		if err != nil {
			switch {
			case errors.Is(err, wire.ErrUnknown):
				// A whole frame of a type this proxy does not know was
				// consumed: skip it, so relays can add frame types.
				s.log.Debug("unknown control frame skipped", "err", err)
				s.lastRecv.Store(time.Now().UnixNano())
				continue
			case errors.Is(err, wire.ErrMalformed) || errors.Is(err, wire.ErrTooLarge):
				s.close(closeProtocolError, err)
			case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
				s.close(closeRelayClosed, err)
			default:
				s.close(closeReadError, err)
			}
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		switch m := f.(type) {
		case wire.Ping:
			if !s.send(wire.Pong(m)) {
				return
			}
		case wire.Pong:
		case wire.Incoming:
			s.p.incoming(s, m)
		case wire.Result, wire.RouteGone:
			select {
			case s.ctrl <- f:
			case <-s.done:
				return
			}
		case wire.GoAway:
			s.log.Info("relay going away", "err", m.Message)
			s.goaway.Store(true)
			s.close(closeGoAway, nil)
			return
		default:
			s.close(closeProtocolError, errors.New("relay sent a "+wire.TypeOf(f).String()+" frame"))
			return
		}
	}
}

// writeLoop writes queued frames, coalescing what is queued into one Write.
func (s *session) writeLoop() {
	var buf []byte
	for {
		select {
		case b := <-s.sendq:
			buf = append(buf[:0], b...)
		more:
			for len(buf) < maxWriteBatch {
				select {
				case b := <-s.sendq:
					buf = append(buf, b...)
				default:
					break more
				}
			}
			s.conn.SetWriteDeadline(time.Now().Add(3 * s.p.cfg.PingInterval))
			if _, err := s.conn.Write(buf); err != nil {
				s.close(closeWriteError, err)
				return
			}
		case <-s.done:
			return
		}
	}
}

// send queues f for the writer. It never blocks: if the queue is full the
// relay has stopped reading, and the session is closed. It reports whether
// f was queued.
func (s *session) send(f wire.Frame) bool {
	b, err := wire.Append(make([]byte, 0, 64), f)
	if err != nil { // only a bug gets here: names are checked in AddRoute
		s.close(closeProtocolError, err)
		return false
	}
	select {
	case <-s.done:
		return false
	default:
	}
	select {
	case s.sendq <- b:
		return true
	default:
		s.close(closeQueueFull, errors.New("control write queue full"))
		return false
	}
}

// close ends the session once, recording why, and closes the connection,
// which unblocks the reader and the writer.
func (s *session) close(reason string, err error) {
	s.closeOnce.Do(func() {
		s.reason, s.err = reason, err
		close(s.done)
		s.p.m.sessionCloses.WithLabelValues(reason).Inc()
		s.conn.Close()
	})
}

func (s *session) isClosed() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// poke tells the control loop that the routes changed.
func (s *session) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// holds reports whether the route name is registered at the relay.
func (s *session) holds(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.held[name]
	return ok && !s.isClosed()
}

// holdsEntry reports whether e is registered at the relay or being
// registered or withdrawn there.
func (s *session) holdsEntry(e *routeEntry) bool {
	if s.isClosed() {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held[e.Name] == e {
		return true
	}
	if o := s.busy[e.Name]; o != nil && (o.entry == e || o.withdraw) {
		return true
	}
	return false
}

// registeredCount returns the number of routes registered at the relay.
func (s *session) registeredCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// settled reports whether the relay holds no route and no request is in
// flight, or the session ended.
func (s *session) settled() bool {
	if s.isClosed() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held) == 0 && len(s.busy) == 0
}

// codeLabel is the metric label for a result code: a fixed set.
func codeLabel(c wire.Code) string {
	if c > wire.CodeDraining {
		return "other"
	}
	return c.String()
}
