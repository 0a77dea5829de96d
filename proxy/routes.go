package proxy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/relay/wire"
)

// Route is a name the proxy registers at the relays and the local target its
// clients are handed to.
type Route struct {
	// Name is the TLS server name clients use. It is either the member's own
	// DNS name, <name>.<network>, with TTL 0 (registered while the proxy
	// runs), or a one-time route one label below it,
	// <label>.<name>.<network>, with a TTL.
	Name string
	// TTL is the lifetime of a one-time route, rounded up to whole seconds.
	// It must be 0 for the member's own name and positive for any other.
	// The proxy drops the route locally when it expires.
	TTL time.Duration
	// SingleUse routes carry one relayed connection in the whole network:
	// once a pairing succeeds (here or reported by a relay's RouteGone) the
	// route is dropped and withdrawn at every relay.
	SingleUse bool
	// Target receives the relayed connections: a DialTarget or a *Listener.
	// Required.
	Target Target
}

// Target is where relayed connections go: a DialTarget or a *Listener.
type Target interface{ target() }

// DialTarget relays each connection to a local TCP address, such as a local
// HTTPS server. The bytes are spliced unmodified in both directions.
type DialTarget struct {
	// Addr is the host:port to dial.
	Addr string
}

func (DialTarget) target() {}

// RefusedError is returned by AddRoute when a relay refused a route for good
// (wire.CodeForbidden or wire.CodeBad). The route is not kept.
type RefusedError struct {
	Relay   string
	Code    wire.Code
	Message string
}

// permanent reports whether the relay refused the route for good (rather
// than for now: at a limit, draining).
func (e *RefusedError) permanent() bool {
	return e.Code == wire.CodeForbidden || e.Code == wire.CodeBad
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("proxy: relay %s refused route: %v: %s", e.Relay, e.Code, e.Message)
}

// routeEntry is one version of a route. A new AddRoute for the same name
// makes a new entry; sessions compare entries by pointer.
type routeEntry struct {
	Route
	expires time.Time // zero: no TTL

	// claimed is set while a pairing for a single-use route is in progress
	// or done, so that a second announcement (from another relay) is refused.
	claimed atomic.Bool

	mu      sync.Mutex         // guards results
	results map[*session]error // answers from sessions to a Register of this entry
}

// expired reports whether the route's TTL has run out at now.
func (e *routeEntry) expired(now time.Time) bool {
	return !e.expires.IsZero() && !now.Before(e.expires)
}

// ttlSeconds is the remaining lifetime for a Register sent at now, rounded
// up; 0 for routes without a TTL.
func (e *routeEntry) ttlSeconds(now time.Time) uint32 {
	if e.expires.IsZero() {
		return 0
	}
	d := e.expires.Sub(now)
	return uint32(max(1, (d+time.Second-1)/time.Second))
}

// sameRegistration reports whether a relay holding a needs no new Register
// for b: only the target differs.
func sameRegistration(a, b *routeEntry) bool {
	return a.SingleUse == b.SingleUse && a.expires.Equal(b.expires)
}

func (e *routeEntry) report(s *session, err error) {
	e.mu.Lock()
	if e.results == nil {
		e.results = map[*session]error{}
	}
	e.results[s] = err
	e.mu.Unlock()
}

func (e *routeEntry) result(s *session) (error, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	err, ok := e.results[s]
	return err, ok
}

// refusal returns the first refusal for good reported for e, or nil.
func (e *routeEntry) refusal() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, err := range e.results {
		if re, ok := errors.AsType[*RefusedError](err); ok && re.permanent() {
			return re
		}
	}
	return nil
}

// routeTable is the set of routes. It is never mutated after it is stored.
type routeTable struct {
	byName map[string]*routeEntry
}

// lookup returns the route for name, if it is held and not expired.
func (p *Proxy) lookup(name string, now time.Time) (*routeEntry, bool) {
	e, ok := p.routes.Load().byName[name]
	if !ok || e.expired(now) {
		return nil, false
	}
	return e, true
}

// checkRoute validates r against the member's namespace.
func (p *Proxy) checkRoute(r Route) error {
	switch {
	case r.Name == p.selfName:
		if r.TTL != 0 || r.SingleUse {
			return fmt.Errorf("%w: %s is the member's own name and takes no TTL and no single use", ErrInvalidRoute, r.Name)
		}
	case strings.HasSuffix(r.Name, "."+p.selfName):
		label := strings.TrimSuffix(r.Name, "."+p.selfName)
		if pki.ValidName(label) != nil {
			return fmt.Errorf("%w: %q is not one label below %s", ErrNamespace, r.Name, p.selfName)
		}
		if r.TTL <= 0 {
			return fmt.Errorf("%w: one-time route %s needs a positive TTL", ErrInvalidRoute, r.Name)
		}
		if r.TTL > math.MaxUint32*time.Second {
			return fmt.Errorf("%w: TTL %v of %s is too long", ErrInvalidRoute, r.TTL, r.Name)
		}
	default:
		return fmt.Errorf("%w: %q (member %s)", ErrNamespace, r.Name, p.selfName)
	}
	if len(r.Name) > wire.MaxName {
		return fmt.Errorf("%w: name %q is longer than %d bytes", ErrInvalidRoute, r.Name, wire.MaxName)
	}
	switch t := r.Target.(type) {
	case DialTarget:
		if _, _, err := net.SplitHostPort(t.Addr); err != nil {
			return fmt.Errorf("%w: target address %q: %v", ErrInvalidRoute, t.Addr, err)
		}
	case *Listener:
		if t == nil {
			return fmt.Errorf("%w: nil Listener target", ErrInvalidRoute)
		}
	default:
		return fmt.Errorf("%w: no target", ErrInvalidRoute)
	}
	return nil
}

// AddRoute adds r, or replaces the route of the same name, and registers it
// at every relay. It waits until every relay connected at the time of the
// call has answered (or its session ended), bounded by ctx. It returns
// ErrNamespace or ErrInvalidRoute if r is refused locally and a
// *RefusedError if a relay refused it for good; in those cases, and if ctx
// ends first (ctx.Err()), the route is not kept. Otherwise the route is kept
// even where it could not be registered yet (relay not connected, at a
// limit, draining): each session keeps trying, after every reconnect too.
// Registered and Status tell where it is registered.
func (p *Proxy) AddRoute(ctx context.Context, r Route) error {
	if err := p.checkRoute(r); err != nil {
		return err
	}
	now := time.Now()
	e := &routeEntry{Route: r}
	if r.TTL > 0 {
		e.expires = now.Add(r.TTL)
	}
	p.mu.Lock()
	draining := p.draining
	p.mu.Unlock()
	if draining {
		return ErrClosed
	}
	sessions := p.sessions()
	if err := p.putRoute(e); err != nil {
		return err
	}
	p.kickAll()

	err := p.waitFor(ctx, func() bool {
		if e.refusal() != nil || e.expired(time.Now()) {
			return true
		}
		if cur := p.routes.Load().byName[e.Name]; cur != e {
			return true // replaced, removed or used meanwhile: nothing more to wait for
		}
		for _, s := range sessions {
			if _, ok := e.result(s); !ok && !s.isClosed() {
				return false
			}
		}
		return true
	})
	if err == nil {
		err = e.refusal()
	}
	if err != nil {
		p.dropEntry(e)
		return err
	}
	return nil
}

// RemoveRoute drops the route name and withdraws it at every relay. It waits
// until no connected relay holds it any more, bounded by ctx. It returns an
// error wrapping ErrNoRoute if the proxy holds no such route.
func (p *Proxy) RemoveRoute(ctx context.Context, name string) error {
	p.routesMu.Lock()
	old := p.routes.Load()
	e, ok := old.byName[name]
	if ok {
		p.storeRoutesLocked(old.without(e))
	}
	p.routesMu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNoRoute, name)
	}
	p.kickAll()
	return p.waitFor(ctx, func() bool {
		for _, s := range p.sessions() {
			if s.holdsEntry(e) {
				return false
			}
		}
		return true
	})
}

// putRoute stores e, replacing a route of the same name.
func (p *Proxy) putRoute(e *routeEntry) error {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	old := p.routes.Load()
	if _, ok := old.byName[e.Name]; !ok && len(old.byName) >= p.cfg.MaxRoutes {
		return fmt.Errorf("%w: %d", ErrTooManyRoutes, p.cfg.MaxRoutes)
	}
	t := &routeTable{byName: make(map[string]*routeEntry, len(old.byName)+1)}
	for k, v := range old.byName {
		t.byName[k] = v
	}
	t.byName[e.Name] = e
	p.storeRoutesLocked(t)
	return nil
}

// dropEntry removes e if it is still the current route of its name, and
// tells the sessions.
func (p *Proxy) dropEntry(e *routeEntry) {
	p.routesMu.Lock()
	old := p.routes.Load()
	cur, ok := old.byName[e.Name]
	if ok && cur == e {
		p.storeRoutesLocked(old.without(e))
	}
	p.routesMu.Unlock()
	if ok && cur == e {
		p.kickAll()
	}
}

// clearRoutes drops every route.
func (p *Proxy) clearRoutes() {
	p.routesMu.Lock()
	p.storeRoutesLocked(&routeTable{byName: map[string]*routeEntry{}})
	p.routesMu.Unlock()
	p.kickAll()
}

// expireRoutes drops routes whose TTL ran out and returns the time until the
// next expiry, or 0 if no route expires. The sessions withdraw the expired
// routes (relays usually dropped them already and answer not_found).
func (p *Proxy) expireRoutes(now time.Time) time.Duration {
	next, dropped := p.dropExpired(now)
	if dropped {
		p.kickAll()
	}
	return next
}

func (p *Proxy) dropExpired(now time.Time) (next time.Duration, dropped bool) {
	p.routesMu.Lock()
	defer p.routesMu.Unlock()
	old := p.routes.Load()
	var t *routeTable
	for name, e := range old.byName {
		if e.expires.IsZero() {
			continue
		}
		if e.expired(now) {
			if t == nil {
				t = &routeTable{byName: make(map[string]*routeEntry, len(old.byName))}
				for k, v := range old.byName {
					t.byName[k] = v
				}
			}
			delete(t.byName, name)
			continue
		}
		if d := e.expires.Sub(now); next == 0 || d < next {
			next = d
		}
	}
	if t != nil {
		p.storeRoutesLocked(t)
	}
	return next, t != nil
}

// storeRoutesLocked publishes t. p.routesMu must be held.
func (p *Proxy) storeRoutesLocked(t *routeTable) {
	p.routes.Store(t)
	p.m.routes.Set(float64(len(t.byName)))
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// without returns a copy of t without e.
func (t *routeTable) without(e *routeEntry) *routeTable {
	n := &routeTable{byName: make(map[string]*routeEntry, len(t.byName))}
	for k, v := range t.byName {
		if v != e {
			n.byName[k] = v
		}
	}
	return n
}

// kickAll tells every session that the routes changed.
func (p *Proxy) kickAll() {
	for _, s := range p.sessions() {
		s.poke()
	}
	p.changed.notify()
}

// nothingRegistered reports whether no session holds a route or has a
// request in flight.
func (p *Proxy) nothingRegistered() bool {
	for _, s := range p.sessions() {
		if !s.settled() {
			return false
		}
	}
	return true
}
