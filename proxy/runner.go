package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/kurier-net/kurier/pki"
)

var (
	errRelayRemoved = errors.New("proxy: relay left the relay set")
	errStopping     = errors.New("proxy: stopping")
)

// relayRunner keeps the control session with one relay: it dials, runs the
// session until it ends, and redials with backoff.
type relayRunner struct {
	addr   RelayAddr
	id     pki.ID
	tls    *tls.Config // built once so that TLS sessions resume
	log    *slog.Logger
	cancel context.CancelCauseFunc // set before the runner starts

	mu       sync.Mutex // guards the fields below
	sess     *session
	lastErr  error
	tcpUntil time.Time // dial TCP first until then
	failing  bool      // the last attempt failed; only the first failure logs at Warn
}

func (p *Proxy) newRunner(a RelayAddr) (*relayRunner, error) {
	id := pki.ID{Network: p.self.Network, Role: pki.RoleRelay, Name: a.Name}
	conf, err := pki.ClientConfig(p.cfg.Identity, p.cfg.Trust, id, []string{pki.ALPNControl}, nil)
	if err != nil {
		return nil, err
	}
	return &relayRunner{addr: a, id: id, tls: conf, log: p.log.With("peer", id.String())}, nil
}

func (r *relayRunner) session() *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sess
}

func (r *relayRunner) status() RelayStatus {
	r.mu.Lock()
	s, lastErr := r.sess, r.lastErr
	r.mu.Unlock()
	st := RelayStatus{Name: r.addr.Name}
	if lastErr != nil {
		st.LastError = lastErr.Error()
	}
	if s != nil {
		st.Connected = true
		st.Transport = s.transport
		st.Since = s.since
		st.Routes = s.registeredCount()
	}
	return st
}

// runRelay dials the relay and serves sessions until ctx ends.
func (p *Proxy) runRelay(ctx context.Context, r *relayRunner) {
	b := backoff{min: p.cfg.BackoffMin, max: p.cfg.BackoffMax}
	for {
		s, err := p.connect(ctx, r)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			r.mu.Lock()
			r.lastErr = err
			first := !r.failing
			r.failing = true
			r.mu.Unlock()
			if first {
				r.log.Warn("relay unreachable", "err", err)
			} else {
				r.log.Debug("relay still unreachable", "err", err)
			}
			if !sleep(ctx, b.next()) {
				return
			}
			continue
		}
		r.mu.Lock()
		r.sess, r.failing = s, false
		r.mu.Unlock()
		p.m.sessions.WithLabelValues(s.transport).Inc()
		r.log.Info("control session established", "transport", s.transport)
		p.changed.notify()

		s.run(ctx)

		p.m.sessions.WithLabelValues(s.transport).Dec()
		r.mu.Lock()
		r.sess = nil
		if s.err != nil {
			r.lastErr = s.err
		}
		r.mu.Unlock()
		p.changed.notify()
		if ctx.Err() != nil {
			r.log.Info("control session closed", "reason", s.reason)
			return
		}
		r.log.Info("control session lost", "reason", s.reason, "err", s.err, "duration", time.Since(s.since))

		delay := b.next()
		switch {
		case s.goaway.Load():
			// The relay is draining; come back soon (it may restart
			// quickly), and let the backoff grow if it refuses.
			delay = jitter(p.cfg.BackoffMin)
		case time.Since(s.since) >= p.cfg.BackoffMax:
			b.reset()
			delay = b.next()
		}
		if !sleep(ctx, delay) {
			return
		}
	}
}

// connect dials the relay's control endpoint: QUIC first, then TCP+TLS, or
// TCP first while the relay is known to be reachable only that way.
func (p *Proxy) connect(ctx context.Context, r *relayRunner) (*session, error) {
	order := []string{transportQUIC, transportTCP}
	r.mu.Lock()
	if time.Now().Before(r.tcpUntil) {
		order = []string{transportTCP, transportQUIC}
	}
	r.mu.Unlock()
	if p.cfg.DisableQUIC {
		order = []string{transportTCP}
	}
	var errs []error
	for i, tr := range order {
		var c ctrlConn
		var err error
		if tr == transportQUIC {
			c, err = p.dialQUIC(ctx, r)
		} else {
			c, err = p.dialTCPControl(ctx, r)
		}
		if err != nil {
			p.m.connects.WithLabelValues(tr, "error").Inc()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("%s: %w", tr, err))
			continue
		}
		p.m.connects.WithLabelValues(tr, "ok").Inc()
		r.mu.Lock()
		switch {
		case tr == transportQUIC:
			r.tcpUntil = time.Time{}
		case i > 0: // QUIC failed just now, TCP worked
			r.tcpUntil = time.Now().Add(p.cfg.QUICRetry)
		}
		r.mu.Unlock()
		return p.newSession(r.addr, tr, c, r.log), nil
	}
	return nil, fmt.Errorf("dial relay %s: %w", r.addr.Name, errors.Join(errs...))
}

// ctrlConn is what a session runs on: a QUIC stream or a TLS connection.
type ctrlConn interface {
	io.ReadWriteCloser
	SetWriteDeadline(time.Time) error
}

// quicCtrl is a control stream with the QUIC connection and UDP socket it
// owns.
type quicCtrl struct {
	*quic.Stream
	conn *quic.Conn
	tr   *quic.Transport
	udp  *net.UDPConn
}

// Close closes the connection (with CONNECTION_CLOSE), the transport and the
// socket.
func (q *quicCtrl) Close() error {
	q.conn.CloseWithError(0, "closing")
	q.tr.Close()
	return q.udp.Close()
}

func (p *Proxy) dialQUIC(ctx context.Context, r *relayRunner) (ctrlConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.QUICTimeout)
	defer cancel()
	raddr, err := resolveUDP(ctx, r.addr.Endpoints.Control)
	if err != nil {
		return nil, err
	}
	network := "udp4"
	if raddr.IP.To4() == nil {
		network = "udp6"
	}
	udp, err := net.ListenUDP(network, nil)
	if err != nil {
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	tr := &quic.Transport{Conn: udp}
	qc, err := tr.Dial(ctx, raddr, r.tls, &quic.Config{
		HandshakeIdleTimeout:  p.cfg.QUICTimeout,
		MaxIdleTimeout:        3 * p.cfg.PingInterval,
		KeepAlivePeriod:       p.cfg.PingInterval,
		MaxIncomingStreams:    -1, // the relay opens no streams to us
		MaxIncomingUniStreams: -1,
	})
	if err != nil {
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("quic dial %s: %w", r.addr.Endpoints.Control, err)
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		qc.CloseWithError(0, "")
		tr.Close()
		udp.Close()
		return nil, fmt.Errorf("open control stream: %w", err)
	}
	return &quicCtrl{Stream: st, conn: qc, tr: tr, udp: udp}, nil
}

func (p *Proxy) dialTCPControl(ctx context.Context, r *relayRunner) (ctrlConn, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.addr.Endpoints.ControlTCP)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, r.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", r.addr.Endpoints.ControlTCP, err)
	}
	return tc, nil
}

// resolveUDP resolves host:port, bounded by ctx.
func resolveUDP(ctx context.Context, addr string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("address %q: bad port", addr)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ips[0].Unmap(), uint16(pn))), nil
}

// backoff is a jittered exponential delay.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	return jitter(b.cur)
}

func (b *backoff) reset() { b.cur = 0 }

// jitter spreads d by ±20 %.
func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// sleep waits for d or until ctx ends, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
