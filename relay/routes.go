package relay

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// route is one registered name. Immutable after creation, but for
// withdrawn.
type route struct {
	name      string
	sess      *session
	expires   time.Time // zero: while the session lasts
	singleUse bool
	// withdrawn is set when the member withdraws the route, before the
	// clients waiting for it are refused. Whoever announces a client on
	// the route checks it after recording the client, so a Withdraw that
	// races the announcement cannot miss it.
	withdrawn atomic.Bool
}

func (r *route) expired(now time.Time) bool {
	return !r.expires.IsZero() && !now.Before(r.expires)
}

// routeTable maps names to the sessions that registered them. The last
// registration of a name wins; a session ending removes only its own routes.
type routeTable struct {
	mu     sync.RWMutex // guards byName
	byName map[string]*route
}

func newRouteTable() *routeTable { return &routeTable{byName: map[string]*route{}} }

func (t *routeTable) lookup(name string) (*route, bool) {
	t.mu.RLock()
	r, ok := t.byName[name]
	t.mu.RUnlock()
	return r, ok
}

func (t *routeTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byName)
}

// put installs r and returns the route it replaced, if any.
func (t *routeTable) put(r *route) (old *route) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old = t.byName[r.name]
	t.byName[r.name] = r
	return old
}

// remove deletes r if it is still the route for its name.
func (t *routeTable) remove(r *route) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byName[r.name] == r {
		delete(t.byName, r.name)
		return true
	}
	return false
}

// expired removes and returns every expired route.
func (t *routeTable) expired(now time.Time) []*route {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*route
	for n, r := range t.byName {
		if r.expired(now) {
			delete(t.byName, n)
			out = append(out, r)
		}
	}
	return out
}

// normalizeName lowercases a server name and drops one trailing dot. It
// returns "" for names that are not plausible DNS names.
func normalizeName(s string) string {
	s = strings.TrimSuffix(s, ".")
	if len(s) == 0 || len(s) > 253 {
		return ""
	}
	var b []byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.':
		case 'A' <= c && c <= 'Z':
			if b == nil {
				b = []byte(s)
			}
			b[i] = c + ('a' - 'A')
		default:
			return ""
		}
	}
	if b != nil {
		return string(b)
	}
	return s
}

// routeKind says what a name is to the member registering it.
type routeKind int

const (
	routeForeign routeKind = iota // outside the member's namespace
	routeOwn                      // <member>.<network>
	routeOneTime                  // <label>.<member>.<network>
)

// classify decides whether id may register name: its own DNS name, or one
// label below it.
func classify(id pki.ID, name string) routeKind {
	own := id.DNSName()
	if name == own {
		return routeOwn
	}
	label, ok := strings.CutSuffix(name, "."+own)
	if !ok || pki.ValidName(label) != nil {
		return routeForeign
	}
	return routeOneTime
}

// rateLimiter counts new connections per source IP in one-second windows.
// Its map holds at most the addresses seen in the current window.
type rateLimiter struct {
	limit int

	mu     sync.Mutex // guards the fields below
	window int64      // unix second of the current window
	counts map[netip.Addr]int
}

func newRateLimiter(perSecond int) *rateLimiter {
	return &rateLimiter{limit: perSecond, counts: map[netip.Addr]int{}}
}

// allow counts one connection from ip and reports whether it is within the
// limit.
func (l *rateLimiter) allow(ip netip.Addr, now time.Time) bool {
	sec := now.Unix()
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec != l.window {
		l.window = sec
		if len(l.counts) > 4096 {
			l.counts = map[netip.Addr]int{} // let a flood's map be collected
		} else {
			clear(l.counts)
		}
	}
	n := l.counts[ip] + 1
	l.counts[ip] = n
	return n <= l.limit
}
