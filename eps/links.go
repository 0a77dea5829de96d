package eps

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/eps/submit"
	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/proxy"
)

// Router registers and withdraws routes at the relays: the private proxy
// (*proxy.Proxy).
type Router interface {
	AddRoute(ctx context.Context, r proxy.Route) error
	RemoveRoute(ctx context.Context, name string) error
}

// LinkConfig turns on one-time submission links for a health office: _link
// makes a link https://<label>.<member>.<network>/#<secret> for one index
// case. The endpoint server registers the one-time route <label>.<member>.
// <network> at the relays (with the link's expiry), serves the submission
// page (eps/submit) on it over TLS, stores the sealed submission in its
// inbox as a notification from "anonymous" for local software, and then
// withdraws the route: the link is dead.
type LinkConfig struct {
	// Routes registers the links' routes at the relays. Required.
	Routes Router
	// Certificate is the page's TLS certificate: browsers must accept it
	// for <label>.<member>.<network>, so in production it is a wildcard
	// certificate for *.<member>.<network> from a CA browsers trust (the
	// network's own CA is not one). Required.
	Certificate *tls.Certificate
	// Key is the X25519 seal key browsers seal to (pki.WebSealKEM); the
	// directory must list its public key for this member. Required.
	Key pki.SealPrivateKey
	// Service is the service submissions arrive as. If empty,
	// "index-cases".
	Service string
	// DisplayName is the office's name on the page. If empty, the
	// member's display name in the directory.
	DisplayName string
	// Port is the relays' public port, if not 443: it goes into links.
	Port int
	// DefaultTTL is a link's lifetime when _link names none; MaxTTL
	// bounds named ones. If zero, 72h and 14 days.
	DefaultTTL, MaxTTL time.Duration
	// MaxLinks bounds the links alive at once. If zero, 10000.
	MaxLinks int
}

// linkRecord is what the store keeps of a live link.
type linkRecord struct {
	Link submit.Link `json:"link"`
}

// links serves the one-time links of a Server.
type links struct {
	s    *Server
	cfg  LinkConfig
	host string // <member>.<network>
	ln   *proxy.Listener
	srv  *http.Server
	reg  prometheus.Registerer
	log  *slog.Logger

	mu   sync.Mutex // guards live
	live map[string]*liveLink
}

type liveLink struct {
	link *submit.Link
	h    *submit.LinkHandler
	stop context.CancelFunc // ends the watcher before its time (withdraw)
}

func newLinks(s *Server, cfg LinkConfig) (*links, error) {
	switch {
	case cfg.Routes == nil:
		return nil, errors.New("eps: LinkConfig.Routes is required")
	case cfg.Certificate == nil:
		return nil, errors.New("eps: LinkConfig.Certificate is required")
	case cfg.Key.Key == nil || cfg.Key.Key.KEM().ID() != seal.KEMX25519:
		return nil, errors.New("eps: LinkConfig.Key must be an X25519 seal key (pki.NewWebSealKey)")
	case s.self.Role != pki.RoleHealthOffice:
		return nil, fmt.Errorf("eps: one-time links are for health offices, not %s", s.self.Role)
	}
	if cfg.Service == "" {
		cfg.Service = "index-cases"
	}
	if err := pki.ValidServiceName(cfg.Service); err != nil {
		return nil, fmt.Errorf("eps: LinkConfig.Service: %w", err)
	}
	if cfg.DefaultTTL <= 0 {
		cfg.DefaultTTL = 72 * time.Hour
	}
	if cfg.MaxTTL <= 0 {
		cfg.MaxTTL = 14 * 24 * time.Hour
	}
	if cfg.MaxLinks <= 0 {
		cfg.MaxLinks = 10000
	}
	l := &links{
		s: s, cfg: cfg, host: s.self.DNSName(), ln: proxy.NewListener(256),
		reg: s.cfg.Registerer, log: s.log.With("part", "links"), live: map[string]*liveLink{},
	}
	l.srv = &http.Server{
		Handler:           http.HandlerFunc(l.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(l.log.Handler(), slog.LevelDebug),
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{*cfg.Certificate},
			NextProtos:   []string{"h2", "http/1.1"},
		},
	}
	return l, nil
}

// routeName is the route (and TLS server name) of a link.
func (l *links) routeName(label string) string { return label + "." + l.host }

// hostPort is the host of links' URLs.
func (l *links) hostPort() string {
	if l.cfg.Port == 0 || l.cfg.Port == 443 {
		return l.host
	}
	return net.JoinHostPort(l.host, strconv.Itoa(l.cfg.Port))
}

// run restores the stored links and serves the pages until ctx ends.
func (l *links) run(ctx context.Context) {
	l.restore(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := l.srv.ServeTLS(l.ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("serving submission pages stopped", "err", err)
		}
	})
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l.srv.Shutdown(sctx)
	l.ln.Close()
	wg.Wait()
}

// restore re-registers the links of the store that are still alive: not
// expired and not used (the submission is in the inbox, which is written
// before a link counts as used).
func (l *links) restore(ctx context.Context) {
	recs, err := l.s.cfg.Store.Links()
	if err != nil {
		l.log.Error("reading stored links failed", "err", err)
		return
	}
	for label, b := range recs {
		var rec linkRecord
		if err := json.Unmarshal(b, &rec); err != nil || rec.Link.Check() != nil || rec.Link.Label != label {
			l.log.Error("dropping an unreadable stored link", "label", label)
			l.s.cfg.Store.DeleteLink(label)
			continue
		}
		id, _ := store.ParseID(rec.Link.MessageID)
		if _, err := l.s.cfg.Store.Received(store.Anonymous, id); err == nil || !time.Now().Before(rec.Link.Expires) {
			l.s.cfg.Store.DeleteLink(label)
			continue
		}
		if err := l.activate(ctx, &rec.Link); err != nil {
			l.log.Warn("a stored link could not be served again", "link", rec.Link, "err", err)
		}
	}
}

type linkParams struct {
	// TTLSeconds is the link's lifetime; 0: the default.
	TTLSeconds int64 `json:"ttl_seconds,omitempty"`
	// DisplayName overrides the office's name on the page.
	DisplayName string `json:"display_name,omitempty"`
}

type linkResult struct {
	URL       string    `json:"url"`
	Label     string    `json:"label"`
	MessageID string    `json:"message_id"`
	Service   string    `json:"service"`
	Expires   time.Time `json:"expires"`
}

// create answers _link: a new link, stored, registered and served.
func (l *links) create(ctx context.Context, raw json.RawMessage) (any, error) {
	var p linkParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	ttl := l.cfg.DefaultTTL
	if p.TTLSeconds != 0 {
		if p.TTLSeconds < 60 || time.Duration(p.TTLSeconds)*time.Second > l.cfg.MaxTTL {
			return nil, rpcErr(jsonrpc.CodeInvalidParams, "ttl_seconds must be between 60 and %d", int64(l.cfg.MaxTTL/time.Second))
		}
		ttl = time.Duration(p.TTLSeconds) * time.Second
	}
	name := p.DisplayName
	if name == "" {
		name = l.cfg.DisplayName
	}
	if name == "" {
		if m, _, err := l.s.memberEntry(l.s.self.Name); err == nil {
			name = m.DisplayName
		}
	}
	if !l.hasKey() {
		return nil, rpcErr(jsonrpc.CodeUnavailable, "the directory lists no X25519 seal key %q for %s: browsers could not seal to it", l.cfg.Key.ID, l.s.self.Name)
	}
	l.mu.Lock()
	n := len(l.live)
	l.mu.Unlock()
	if n >= l.cfg.MaxLinks {
		return nil, rpcErr(jsonrpc.CodeQueueFull, "%d links are alive, the limit", n)
	}
	link, err := submit.NewLink(submit.Link{
		Recipient: l.cfg.Key.Public(), RecipientName: l.s.self.Name, DisplayName: name,
		Service: l.cfg.Service, Expires: time.Now().Add(ttl).UTC().Truncate(time.Second),
	})
	if err != nil {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "%v", err)
	}
	b, err := json.Marshal(linkRecord{Link: *link})
	if err != nil {
		return nil, err
	}
	// Stored first: a link the software was given survives a restart.
	if err := l.s.cfg.Store.PutLink(link.Label, b); err != nil {
		return nil, storeErr(l.s.self.Name, err)
	}
	if err := l.activate(ctx, link); err != nil {
		l.s.cfg.Store.DeleteLink(link.Label)
		return nil, rpcErr(jsonrpc.CodeUnavailable, "registering the link at the relays: %v", err)
	}
	l.log.Info("one-time link created", "link", link)
	return linkResult{
		URL: link.URL(l.hostPort()), Label: link.Label, MessageID: link.MessageID,
		Service: link.Service, Expires: link.Expires,
	}, nil
}

// hasKey reports whether the directory lists the links' seal key for this
// member.
func (l *links) hasKey() bool {
	m, _, err := l.s.memberEntry(l.s.self.Name)
	if err != nil {
		return false
	}
	pub := l.cfg.Key.Public()
	for _, k := range m.SealKeys {
		if k.ID == pub.ID && k.KEM == pub.KEM && string(k.Public) == string(pub.Public) {
			return true
		}
	}
	return false
}

// activate serves link and registers its route; a watcher withdraws the
// route once the link is used or expired.
func (l *links) activate(ctx context.Context, link *submit.Link) error {
	h, err := submit.Handler(submit.Config{
		Link:       *link,
		OnSubmit:   func(ctx context.Context, env *seal.Envelope) error { return l.submitted(link, env) },
		MaxBody:    min(l.s.cfg.MaxBody, seal.MaxSize+4<<10),
		Logger:     l.log,
		Registerer: l.reg,
	})
	if err != nil {
		return err
	}
	wctx, stop := context.WithCancel(l.s.ctx)
	l.mu.Lock()
	l.live[link.Label] = &liveLink{link: link, h: h, stop: stop}
	l.mu.Unlock()
	ttl := time.Until(link.Expires)
	if err := l.cfg.Routes.AddRoute(ctx, proxy.Route{Name: l.routeName(link.Label), TTL: ttl, Target: l.ln}); err != nil {
		stop()
		l.mu.Lock()
		delete(l.live, link.Label)
		l.mu.Unlock()
		return err
	}
	l.s.wg.Go(func() { l.watch(wctx, link, h) })
	return nil
}

// watch withdraws a link when it is used, expires or is withdrawn.
func (l *links) watch(ctx context.Context, link *submit.Link, h *submit.LinkHandler) {
	t := time.NewTimer(time.Until(link.Expires))
	defer t.Stop()
	reason := "used"
	select {
	case <-h.Done():
	case <-t.C:
		reason = "expired"
	case <-ctx.Done():
		if l.s.ctx.Err() != nil {
			// The server stops: the link stays stored and is served
			// again after a restart.
			return
		}
		reason = "withdrawn"
	}
	l.mu.Lock()
	delete(l.live, link.Label)
	l.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := l.cfg.Routes.RemoveRoute(rctx, l.routeName(link.Label)); err != nil {
		// The relays drop it at its expiry anyway.
		l.log.Warn("withdrawing a link's route failed", "link", link, "err", err)
	}
	if err := l.s.cfg.Store.DeleteLink(link.Label); err != nil {
		l.log.Warn("deleting a link record failed", "link", link, "err", err)
	}
	l.log.Info("one-time link closed", "link", link, "reason", reason)
}

// submitted stores a submission in the inbox. Only then does the page tell
// the citizen it arrived, and the link count as used.
func (l *links) submitted(link *submit.Link, env *seal.Envelope) error {
	sealed, err := json.Marshal(env)
	if err != nil {
		return err
	}
	id, err := store.ParseID(link.MessageID)
	if err != nil {
		return err
	}
	digest, err := envelopeDigest(env)
	if err != nil {
		return err
	}
	m := store.Message{
		ID: id, Kind: store.Notification, Peer: store.Anonymous, Service: link.Service,
		Deadline: time.Now().Add(l.s.cfg.MaxDeadline), Sealed: sealed,
	}
	_, _, err = l.s.storeReceived(m, digest)
	if err != nil {
		l.s.m.peerIn.WithLabelValues("submission_refused").Inc()
		l.log.Error("storing a submission failed", "link", link, "err", err)
		return err
	}
	l.s.m.peerIn.WithLabelValues("submission").Inc()
	l.s.kick(l.s.kickIn)
	return nil
}

// withdraw answers _unlink: the link dies before its time.
func (l *links) withdraw(raw json.RawMessage) (any, error) {
	var p struct {
		Label string `json:"label"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	l.mu.Lock()
	ll, ok := l.live[p.Label]
	l.mu.Unlock()
	if !ok {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "no live link %q", p.Label)
	}
	ll.stop()
	return map[string]any{"withdrawn": p.Label}, nil
}

// serveHTTP hands a request to its link's page by the TLS server name.
func (l *links) serveHTTP(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if r.TLS == nil || !strings.EqualFold(host, r.TLS.ServerName) {
		http.Error(w, "misdirected request", http.StatusMisdirectedRequest)
		return
	}
	label, ok := strings.CutSuffix(strings.ToLower(r.TLS.ServerName), "."+l.host)
	l.mu.Lock()
	ll := l.live[label]
	l.mu.Unlock()
	if !ok || ll == nil {
		l.s.m.peerIn.WithLabelValues("submission_no_link").Inc()
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "Dieser Link ist nicht (mehr) gültig. This link is no longer valid.", http.StatusNotFound)
		return
	}
	ll.h.ServeHTTP(w, r)
}

// openAnonymous opens a citizen's submission from the inbox.
func (s *Server) openAnonymous(in store.Incoming, env *seal.Envelope) (*Item, error) {
	it := &Item{MessageID: in.ID, From: store.Anonymous, Kind: "notification", Service: in.Service, Deadline: in.Deadline}
	if s.cfg.PassSealed {
		it.Sealed = env
		return it, nil
	}
	ctx := seal.Context{Sender: seal.Anonymous, Recipient: s.self.Name, Service: in.Service, Kind: seal.KindNotification, MessageID: in.ID.String()}
	pt, err := seal.Open(env, ctx, s.cfg.SealKeys)
	if err != nil {
		return nil, rpcErr(jsonrpc.CodeSealed, "submission cannot be opened: %v", err)
	}
	if !json.Valid(pt) || !isStructured(pt) {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "submission is not a JSON object")
	}
	it.Params = pt
	return it, nil
}
