package relay

import (
	"errors"
	"fmt"
	"net"
	"sync"
)

// Listeners are a relay's four sockets: clients, the private proxies'
// dial-backs, and the control endpoints over TCP+TLS and over QUIC.
type Listeners struct {
	Public, Pairing, ControlTCP net.Listener
	ControlQUIC                 net.PacketConn
}

// Serve serves all four of l until Shutdown or Close, and then returns
// nil. If one of them fails, Serve closes the server, so that the others
// stop too, and returns that failure.
func (s *Server) Serve(l Listeners) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, part := range []struct {
		name  string
		serve func() error
	}{
		{"public", func() error { return s.ServePublic(l.Public) }},
		{"pairing", func() error { return s.ServePairing(l.Pairing) }},
		{"control (TCP)", func() error { return s.ServeControlTCP(l.ControlTCP) }},
		{"control (QUIC)", func() error { return s.ServeControlQUIC(l.ControlQUIC) }},
	} {
		wg.Go(func() {
			err := part.serve()
			if err == nil || errors.Is(err, ErrServerClosed) {
				return
			}
			mu.Lock()
			if first == nil {
				first = fmt.Errorf("relay: serve %s: %w", part.name, err)
			}
			mu.Unlock()
			s.Close()
		})
	}
	wg.Wait()
	return first
}
