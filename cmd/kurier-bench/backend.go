package main

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/kurier-net/kurier/pki"
)

// The backend speaks a minimal request protocol inside TLS: one op byte and
// a big-endian uint64.
const (
	opPing     = 'P' // answer one byte
	opDownload = 'D' // send n bytes
	opUpload   = 'U' // read n bytes, then answer one byte
)

const ioBuf = 256 << 10 // bytes per Write of a bulk transfer

// backend is the office's TLS server, standing in for its EPS: mTLS 1.3 with
// the office's own certificate (pki.ServerConfig, the directory decides who
// may connect). Direct clients reach it on its address; relayed clients reach
// it through relay and proxy. It runs in the parent process.
type backend struct {
	ln net.Listener
	tc *tls.Config
	wg sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

func startBackend(id *pki.Identity, trust pki.Trust) (*backend, error) {
	tc, err := pki.ServerConfig(id, trust, []string{pki.ALPNPeer}, nil)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	b := &backend{ln: ln, tc: tc, conns: map[net.Conn]struct{}{}}
	b.wg.Go(b.serve)
	return b, nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) serve() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() || errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(5 * time.Millisecond) // EMFILE and the like: back off
			continue
		}
		b.mu.Lock()
		b.conns[c] = struct{}{}
		b.mu.Unlock()
		b.wg.Go(func() {
			defer func() {
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
			serveConn(tls.Server(c, b.tc))
		})
	}
}

// close stops the backend and closes every connection.
func (b *backend) close() {
	b.ln.Close()
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

// serveConn answers requests until the client hangs up. Idle connections
// hold no bulk buffer.
func serveConn(c *tls.Conn) {
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if err := c.Handshake(); err != nil {
		return
	}
	c.SetDeadline(time.Time{})
	var buf []byte
	var req [9]byte
	for {
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		n := int64(binary.BigEndian.Uint64(req[1:]))
		if req[0] != opPing && buf == nil {
			buf = make([]byte, ioBuf)
		}
		switch req[0] {
		case opPing:
		case opDownload:
			if err := writeN(c, buf, n); err != nil {
				return
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

func writeN(w io.Writer, buf []byte, n int64) error {
	for n > 0 {
		k, err := w.Write(buf[:min(n, int64(len(buf)))])
		if err != nil {
			return err
		}
		n -= int64(k)
	}
	return nil
}

func request(w io.Writer, op byte, n int64) error {
	var req [9]byte
	req[0] = op
	binary.BigEndian.PutUint64(req[1:], uint64(n))
	_, err := w.Write(req[:])
	return err
}

// clients dials the backend as the vendor: full TLS 1.3 handshakes (no
// session resumption), the vendor's certificate presented, the backend
// verified to be exactly the office (chain to the bench root, key pinned in
// the directory).
type clients struct {
	tc *tls.Config
}

func newClients(id *pki.Identity, trust pki.Trust) (*clients, error) {
	tc, err := pki.ClientConfig(id, trust, officeID, []string{pki.ALPNPeer}, nil)
	if err != nil {
		return nil, err
	}
	tc.ClientSessionCache = nil // every connection makes a full handshake
	return &clients{tc: tc}, nil
}

// dial connects to addr and completes the TLS handshake within timeout.
// The connection is closed if ctx ends while it is open.
func (cl *clients) dial(ctx context.Context, addr string, timeout time.Duration) (*conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cl.tc)
	raw.SetDeadline(time.Now().Add(timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("tls handshake via %s: %w", addr, err)
	}
	c := &conn{Conn: tc}
	c.stop = context.AfterFunc(ctx, func() { tc.SetDeadline(time.Now()) })
	return c, nil
}

// conn is a client connection tied to a context.
type conn struct {
	*tls.Conn
	stop func() bool
}

func (c *conn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// ping sends a ping and waits for the answer.
func (c *conn) ping() error {
	if err := request(c, opPing, 0); err != nil {
		return err
	}
	var one [1]byte
	_, err := io.ReadFull(c, one[:])
	return err
}

// connectOnce measures one new connection: TCP connect, full TLS 1.3
// handshake, and the first byte of the backend's answer to a ping.
func (cl *clients) connectOnce(ctx context.Context, addr string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := cl.dial(ctx, addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if err := c.ping(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// transfer opens a connection to addr and downloads (or uploads) n bytes;
// it returns the time of the transfer alone, from the request to the last
// byte (download) or the backend's acknowledgement (upload).
func (cl *clients) transfer(ctx context.Context, addr string, upload bool, n int64, timeout time.Duration) (time.Duration, error) {
	c, err := cl.dial(ctx, addr, timeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, ioBuf)
	start := time.Now()
	if upload {
		if err := request(c, opUpload, n); err != nil {
			return 0, err
		}
		if err := writeN(c, buf, n); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(c, buf[:1]); err != nil {
			return 0, err
		}
	} else {
		if err := request(c, opDownload, n); err != nil {
			return 0, err
		}
		got, err := io.CopyBuffer(io.Discard, io.LimitReader(c, n), buf)
		if err != nil {
			return 0, err
		}
		if got != n {
			return 0, fmt.Errorf("downloaded %d of %d bytes", got, n)
		}
	}
	return time.Since(start), nil
}
