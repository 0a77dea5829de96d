package eps

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sync/errgroup"

	"github.com/kurier-net/kurier/proxy"
)

// Endpoint is an endpoint server with its private proxy built in, as
// `kurier eps` runs it: the proxy dials out to the relays and holds the
// member's route, whose connections reach the server's peer API. Nothing
// listens for other members.
type Endpoint struct {
	Server *Server
	Proxy  *proxy.Proxy
	peers  *proxy.Listener
	route  string
}

// endpointBacklog bounds the relayed connections waiting for the peer
// API to accept them.
const endpointBacklog = 1024

// NewEndpoint makes the proxy from pcfg and the server from cfg. pcfg's
// Identity, Trust, Logger and Registerer default to cfg's, and one-time
// links (cfg.Links) without Routes register theirs at this proxy. It
// starts nothing; see Serve.
func NewEndpoint(cfg Config, pcfg proxy.Config) (*Endpoint, error) {
	if cfg.Identity == nil {
		return nil, errors.New("eps: Config.Identity is required")
	}
	if pcfg.Identity == nil {
		pcfg.Identity = cfg.Identity
	}
	if pcfg.Trust.Roots == nil && pcfg.Trust.Directory == nil {
		pcfg.Trust = cfg.Trust
	}
	if pcfg.Logger == nil {
		pcfg.Logger = cfg.Logger
	}
	if pcfg.Registerer == nil {
		pcfg.Registerer = cfg.Registerer
	}
	px, err := proxy.New(pcfg)
	if err != nil {
		return nil, err
	}
	if cfg.Links != nil && cfg.Links.Routes == nil {
		links := *cfg.Links
		links.Routes = px
		cfg.Links = &links
	}
	if cfg.Status == nil {
		cfg.Status = func() any { return px.Status() }
	}
	srv, err := New(cfg)
	if err != nil {
		px.Close()
		return nil, err
	}
	return &Endpoint{
		Server: srv, Proxy: px, peers: proxy.NewListener(endpointBacklog),
		route: cfg.Identity.ID().DNSName(),
	}, nil
}

// Serve runs the proxy, delivery, the peer API behind the proxy and the
// local API on local, and then registers the member's route at the
// relays. It returns when all of them have stopped: after Shutdown or
// Close, or at once (closing the rest) when one fails. Cancelling ctx
// stops the proxy's sessions and delivery; the APIs stop with Shutdown
// or Close, so that the caller may drain them.
func (e *Endpoint) Serve(ctx context.Context, local net.Listener) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := e.Proxy.Run(gctx); err != nil && !errors.Is(err, proxy.ErrClosed) && !errors.Is(err, context.Canceled) {
			return fmt.Errorf("proxy: %w", err)
		}
		return nil
	})
	g.Go(func() error { return e.Server.Run(gctx) })
	g.Go(func() error {
		if err := e.Server.ServePeer(e.peers); !errors.Is(err, ErrServerClosed) {
			return fmt.Errorf("peer API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := e.Server.ServeLocal(local); !errors.Is(err, ErrServerClosed) {
			return fmt.Errorf("local API: %w", err)
		}
		return nil
	})
	if err := e.Proxy.AddRoute(gctx, proxy.Route{Name: e.route, Target: e.peers}); err != nil {
		e.Close()
		return errors.Join(fmt.Errorf("route %s: %w", e.route, err), g.Wait())
	}
	// A part that fails takes the others down; a cancelled ctx does not,
	// since the caller drains with Shutdown.
	stop := context.AfterFunc(gctx, func() {
		if ctx.Err() == nil {
			e.Close()
		}
	})
	defer stop()
	return g.Wait()
}

// Registered reports at how many relays the member's route is held.
func (e *Endpoint) Registered() int { return e.Proxy.Registered(e.route) }

// Shutdown drains the server (the APIs, delivery in progress), then the
// proxy, within ctx.
func (e *Endpoint) Shutdown(ctx context.Context) error {
	err := e.Server.Shutdown(ctx)
	if perr := e.Proxy.Shutdown(ctx); err == nil && !errors.Is(perr, proxy.ErrClosed) {
		err = perr
	}
	return err
}

// Close stops the server and the proxy at once.
func (e *Endpoint) Close() error {
	return errors.Join(e.Server.Close(), e.Proxy.Close())
}
