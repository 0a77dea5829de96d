package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/kurier-net/kurier/relay"
	"github.com/kurier-net/kurier/relay/wire"
)

// Requests and replies are memberlist reliable messages: each is one TCP
// stream to the peer, encrypted and authenticated with the cluster key. A
// request carries an id and the asker's name; the answer is a reply with
// the same id, sent back the same way.

var (
	errGone = errors.New("cluster: relay is not a live member")
	errBusy = errors.New("cluster: too many requests in flight")
)

// call is a request waiting for its reply.
type call struct {
	to string
	ch chan callResult // cap 1; the first result wins
}

type callResult struct {
	reply replyMsg
	err   error
}

func (cl *call) finish(r callResult) {
	select {
	case cl.ch <- r:
	default:
	}
}

// call sends the request build makes to the member named to and waits for
// its reply, for ctx to end or for Shutdown.
func (c *Cluster) call(ctx context.Context, to string, build func(id uint64) message) (replyMsg, error) {
	node, ok := c.node(to)
	if !ok {
		return replyMsg{}, fmt.Errorf("%w: %s", errGone, to)
	}
	id := c.nextID.Add(1)
	msg, err := encode(build(id))
	if err != nil {
		return replyMsg{}, err
	}
	cl := &call{to: to, ch: make(chan callResult, 1)}
	c.callMu.Lock()
	if len(c.calls) >= maxCalls {
		c.callMu.Unlock()
		c.m.dropped.WithLabelValues("busy").Inc()
		return replyMsg{}, errBusy
	}
	c.calls[id] = cl
	c.callMu.Unlock()
	defer func() {
		c.callMu.Lock()
		delete(c.calls, id)
		c.callMu.Unlock()
	}()
	ml := c.ml.Load()
	// SendReliable dials and writes without a context; it runs on its own
	// so the caller's deadline holds. memberlist's stream timeout bounds it.
	if !c.goTracked(func() {
		if err := ml.SendReliable(node, msg); err != nil {
			cl.finish(callResult{err: fmt.Errorf("send to %s: %w", to, err)})
		}
	}) {
		return replyMsg{}, ErrClosed
	}
	select {
	case r := <-cl.ch:
		return r.reply, r.err
	case <-ctx.Done():
		return replyMsg{}, ctx.Err()
	case <-c.done:
		return replyMsg{}, ErrClosed
	}
}

// request returns the head of a request with id.
func (c *Cluster) request(id uint64) request {
	return request{id: id, from: c.cfg.Name, addr: c.addr}
}

// resolve hands a reply to the call waiting for it.
func (c *Cluster) resolve(m replyMsg) {
	c.callMu.Lock()
	cl := c.calls[m.id]
	c.callMu.Unlock()
	if cl == nil || cl.to != m.from {
		c.m.dropped.WithLabelValues("late_reply").Inc()
		c.log.Debug("reply to no request in flight", "peer", m.from)
		return
	}
	cl.finish(callResult{reply: m})
}

// failCalls ends the calls to a relay that left.
func (c *Cluster) failCalls(name string) {
	c.callMu.Lock()
	defer c.callMu.Unlock()
	for _, cl := range c.calls {
		if cl.to == name {
			cl.finish(callResult{err: fmt.Errorf("%w: %s left", errGone, name)})
		}
	}
}

// reply answers req from a goroutine holding one of slots; build runs in
// that goroutine. The answer goes to the member named req.from, or to
// req.addr if this relay does not know it yet (it may have just joined).
func (c *Cluster) reply(req request, slots chan struct{}, build func() replyMsg) {
	node, ok := c.node(req.from)
	if !ok {
		ap, err := netip.ParseAddrPort(req.addr)
		if err != nil { // checked by decode
			c.m.dropped.WithLabelValues("malformed").Inc()
			return
		}
		node = &memberlist.Node{Name: req.from, Addr: ap.Addr().AsSlice(), Port: ap.Port()}
	}
	if !c.trySpawn(slots, func() {
		r := build()
		r.id = req.id
		c.send(node, r)
	}) {
		c.m.dropped.WithLabelValues("busy").Inc()
	}
}

func (c *Cluster) send(node *memberlist.Node, m replyMsg) {
	m.from = c.cfg.Name
	b, err := encode(m)
	if err != nil {
		c.log.Error("encode reply", "err", err)
		return
	}
	ml := c.ml.Load()
	if ml == nil { // a request raced New
		return
	}
	if err := ml.SendReliable(node, b); err != nil {
		c.log.Debug("reply not sent", "peer", node.Name, "err", err)
	}
}

// Forward delivers in to a relay that holds in.Name, trying each holder in
// random order until one confirms that its control session took it. It
// returns relay.ErrNoRoute if no other relay holds the name or every holder
// says it no longer does. Each attempt is bounded by ForwardTimeout, all of
// them by ctx. It is safe for concurrent use.
func (c *Cluster) Forward(ctx context.Context, in wire.Incoming) error {
	start := time.Now()
	holders := c.Holders(in.Name)
	if len(holders) == 0 {
		c.m.forwards.WithLabelValues("no_route").Inc()
		return relay.ErrNoRoute
	}
	rand.Shuffle(len(holders), func(i, j int) { holders[i], holders[j] = holders[j], holders[i] })
	var errs []error
	refused := 0
	result := "error"
	for _, h := range holders {
		actx, cancel := context.WithTimeout(ctx, c.cfg.ForwardTimeout)
		r, err := c.call(actx, h, func(id uint64) message {
			return forwardMsg{request: c.request(id), in: in}
		})
		cancel()
		switch {
		case err == nil && r.code == codeOK:
			c.m.forwards.WithLabelValues("ok").Inc()
			c.m.forwardTime.Observe(time.Since(start).Seconds())
			return nil
		case err == nil && r.code == codeNoRoute:
			refused++
			errs = append(errs, fmt.Errorf("%s: %w", h, relay.ErrNoRoute))
		case err == nil:
			errs = append(errs, fmt.Errorf("%s: %w", h, ErrDeliver))
		default:
			if errors.Is(err, context.DeadlineExceeded) {
				result = "timeout"
			}
			errs = append(errs, fmt.Errorf("%s: %w", h, err))
		}
		if ctx.Err() != nil {
			break
		}
	}
	if refused == len(holders) {
		c.m.forwards.WithLabelValues("refused").Inc()
		return fmt.Errorf("cluster: forward %s: %w", in.Name, relay.ErrNoRoute)
	}
	c.m.forwards.WithLabelValues(result).Inc()
	return fmt.Errorf("cluster: forward %s: %w", in.Name, errors.Join(errs...))
}

// serveForward delivers a forwarded announcement to the local relay. Deliver
// does not block, so it runs on memberlist's goroutine; the reply is sent
// from a handler goroutine.
func (c *Cluster) serveForward(m forwardMsg) {
	code := codeOK
	if l := c.getLocal(); l == nil {
		code = codeNoRoute
	} else if err := l.Deliver(m.from, m.in); err != nil {
		code = codeFailed
		if errors.Is(err, relay.ErrNoRoute) {
			code = codeNoRoute
		}
	}
	c.reply(m.request, c.handlers, func() replyMsg { return replyMsg{code: code} })
}

// Refuse tells the relay named to that the announcements with tokens, which
// it forwarded here, will not be answered: the member withdrew the route
// before its proxy dialled back. It never blocks: the refused messages, at
// most maxRefused tokens each, are sent one after another from one handler
// goroutine (each is its own stream, so they may arrive in any order). If to is not a live member or no handler is free, they are
// dropped (reason unknown_peer or busy) and those clients wait out their
// PairTimeout at to; a failed send is counted as send_error.
func (c *Cluster) Refuse(to string, tokens []wire.Token) {
	if len(tokens) == 0 {
		return
	}
	node, ok := c.node(to)
	if !ok {
		c.m.dropped.WithLabelValues("unknown_peer").Inc()
		c.log.Debug("refused announcements of a relay that is not a live member", "peer", to, "tokens", len(tokens))
		return
	}
	var msgs [][]byte
	for batch := range slices.Chunk(tokens, maxRefused) {
		b, err := encode(refusedMsg{from: c.cfg.Name, tokens: batch})
		if err != nil { // cannot happen: names and counts are checked
			c.log.Error("encode refused message", "err", err)
			return
		}
		msgs = append(msgs, b)
	}
	ml := c.ml.Load()
	if !c.trySpawn(c.handlers, func() {
		for _, b := range msgs {
			if err := ml.SendReliable(node, b); err != nil {
				c.m.dropped.WithLabelValues("send_error").Inc()
				c.log.Debug("refused message not sent", "peer", to, "err", err)
				return
			}
		}
	}) {
		c.m.dropped.WithLabelValues("busy").Inc()
	}
}

// serveRefused hands refused announcements to the local relay, which
// refuses their clients. Refused does not block, so it runs on
// memberlist's goroutine. The tokens themselves are the authority: only
// this relay and the one it forwarded them to know them.
func (c *Cluster) serveRefused(m refusedMsg) {
	if l := c.getLocal(); l != nil {
		l.Refused(m.tokens)
	}
}

// serveFetchDir sends this relay's signed directory.
func (c *Cluster) serveFetchDir(m fetchDirMsg) {
	c.reply(m.request, c.dirSlots, func() replyMsg {
		r := replyMsg{code: codeUnavailable}
		if snap := c.cfg.Verifier.Current(); snap != nil {
			r.code, r.body = codeOK, snap.Signed
		}
		return r
	})
}

// servePull sends this relay's complete route list.
func (c *Cluster) servePull(m pullMsg) {
	dir := c.ownDir()
	c.reply(m.request, c.handlers, func() replyMsg {
		c.mu.RLock()
		rec := c.tab.ownRecord(dir)
		c.mu.RUnlock()
		b, err := encode(stateMsg{records: []record{rec}})
		if err != nil {
			return replyMsg{code: codeUnavailable}
		}
		return replyMsg{code: codeOK, body: b}
	})
}

// syncLoop pulls complete route lists where gossip left a gap.
func (c *Cluster) syncLoop() {
	t := time.NewTicker(syncInterval)
	defer t.Stop()
	for {
		var now time.Time
		select {
		case <-c.done:
			return
		case now = <-t.C:
		}
		c.mu.Lock()
		due := c.tab.pullsDue(now, pullGrace)
		c.mu.Unlock()
		for _, name := range due {
			if !c.trySpawn(c.handlers, func() { c.pull(name) }) {
				c.mu.Lock()
				c.tab.pullDone(name, false, now, pullRetry)
				c.mu.Unlock()
			}
		}
	}
}

// pull fetches a relay's complete route list from the relay itself.
func (c *Cluster) pull(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.FetchTimeout)
	defer cancel()
	r, err := c.call(ctx, name, func(id uint64) message { return pullMsg{c.request(id)} })
	if err == nil && r.code != codeOK {
		err = fmt.Errorf("%s has no route list to give", name)
	}
	var rec record
	if err == nil {
		if rec, err = decodeRecord(r.body, c.lim); err == nil && rec.origin != name {
			err = fmt.Errorf("%w: %s sent the route list of %s", errMalformed, name, rec.origin)
		}
		if err != nil {
			c.m.dropped.WithLabelValues(dropReason(err)).Inc()
		}
	}
	now := time.Now()
	c.mu.Lock()
	if err == nil {
		c.count(c.tab.applyRecord(rec, now))
	}
	c.tab.pullDone(name, err == nil, now, pullRetry)
	c.mu.Unlock()
	if err != nil {
		c.m.pulls.WithLabelValues("error").Inc()
		c.log.Debug("route list pull failed", "peer", name, "err", err)
		return
	}
	c.m.pulls.WithLabelValues("ok").Inc()
	if rec.dir > c.ownDir() {
		c.wakeDir()
	}
}

// dirLoop fetches newer directories that other relays announce.
func (c *Cluster) dirLoop() {
	t := time.NewTicker(dirRetry)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-c.dirWake:
		case <-t.C:
		}
		c.syncDirectory()
	}
}

// syncDirectory fetches the newest directory announced by another relay,
// trying the relays that announced it, newest first, and hands it to the
// verifier. A relay whose directory the verifier refuses is not asked for
// that version again for dirBackoff.
func (c *Cluster) syncDirectory() {
	now := time.Now()
	c.mu.Lock()
	srcs := c.tab.newerDirs(c.ownDir())
	for k, until := range c.dirFail {
		if now.After(until) {
			delete(c.dirFail, k)
		}
	}
	c.mu.Unlock()
	for _, src := range srcs {
		if src.version <= c.ownDir() {
			return
		}
		c.mu.RLock()
		_, failed := c.dirFail[src]
		c.mu.RUnlock()
		if failed {
			continue
		}
		result, err := c.fetchDirectory(src)
		c.m.fetches.WithLabelValues(result).Inc()
		if result == "ok" {
			c.log.Info("directory updated from the cluster", "peer", src.origin, "version", c.ownDir())
			continue
		}
		if c.ownDir() >= src.version {
			continue
		}
		c.mu.Lock()
		if len(c.dirFail) < maxCalls {
			c.dirFail[src] = now.Add(dirBackoff)
		}
		c.mu.Unlock()
		if result == "rejected" {
			c.log.Warn("directory from another relay refused", "peer", src.origin, "version", src.version, "err", err)
		} else {
			c.log.Debug("directory fetch failed", "peer", src.origin, "version", src.version, "err", err)
		}
		select {
		case <-c.done:
			return
		default:
		}
	}
}

// fetchDirectory fetches one relay's directory and offers it to the
// verifier. It returns the metric result.
func (c *Cluster) fetchDirectory(src dirSource) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.FetchTimeout)
	defer cancel()
	r, err := c.call(ctx, src.origin, func(id uint64) message {
		return fetchDirMsg{request: c.request(id), version: src.version}
	})
	if err != nil {
		return "error", err
	}
	if r.code != codeOK {
		return "error", fmt.Errorf("%s has no directory to give", src.origin)
	}
	changed, err := c.cfg.Verifier.Update(r.body)
	switch {
	case err != nil:
		return "rejected", err
	case !changed:
		return "unchanged", nil
	}
	return "ok", nil
}
