package eps

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

// Item is a message as local software receives it, by callback or _poll.
type Item struct {
	MessageID     store.ID  `json:"message_id"`
	From          string    `json:"from"`
	Kind          string    `json:"kind"` // request, response, notification or status
	Service       string    `json:"service"`
	CorrelationID *store.ID `json:"correlation_id,omitempty"`
	Sync          bool      `json:"sync,omitempty"`
	Deadline      time.Time `json:"deadline"`
	// Params is the payload: the params of a request or notification, the
	// {"result": …} or {"error": …} of a response, or, for status, the
	// state of a message this member sent.
	Params json.RawMessage `json:"params,omitempty"`
	// Sealed is the verified but unopened payload (PassSealed).
	Sealed *seal.Envelope `json:"sealed,omitempty"`
}

func (s *Server) itemFor(from string, m *wireMessage, payload []byte) *Item {
	it := &Item{MessageID: m.ID, From: from, Kind: m.Kind, Service: m.Service, CorrelationID: m.CorrelationID, Sync: m.Sync, Deadline: m.Deadline}
	if s.cfg.PassSealed {
		it.Sealed = m.Sealed
	} else {
		it.Params = payload
	}
	return it
}

// isStructured reports whether raw is a JSON object or array.
func isStructured(raw json.RawMessage) bool {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{', '[':
			return true
		}
		return false
	}
	return false
}

// appendCallback appends the JSON-RPC request that hands it to local
// software: {"jsonrpc":"2.0","id":"<message id>","method":"<service>",
// "params":…}. Written by hand, as the wire message is: encoding/json
// would scan and copy the payload twice more. A payload that is not an
// object or array goes without params, as JSON-RPC wants; an object or
// array that is not valid JSON is refused.
func appendCallback(b []byte, it *Item) ([]byte, error) {
	method := it.Service
	if it.Kind == "status" {
		method = "_status"
	} else if err := pki.ValidServiceName(method); err != nil {
		return nil, err // its alphabet needs no escaping below
	}
	b = append(b, `{"jsonrpc":"2.0","id":"`...)
	b = hex.AppendEncode(b, it.MessageID[:])
	b = append(b, `","method":"`...)
	b = append(b, method...)
	b = append(b, '"')
	switch {
	case it.Sealed != nil:
		var err error
		b = append(b, `,"params":{"sealed":`...)
		if b, err = it.Sealed.AppendJSON(b); err != nil {
			return nil, err
		}
		b = append(b, '}')
	case isStructured(it.Params):
		if !json.Valid(it.Params) {
			return nil, errors.New("eps: payload is not JSON")
		}
		b = append(b, `,"params":`...)
		b = append(b, it.Params...)
	}
	return append(b, '}'), nil
}

// answerPayload is what goes back to a requester, sealed.
func answerPayload(result json.RawMessage, rerr *jsonrpc.Error) ([]byte, error) {
	if rerr != nil {
		return json.Marshal(map[string]any{"error": rerr})
	}
	if len(result) == 0 {
		result = json.RawMessage("null")
	}
	return json.Marshal(map[string]json.RawMessage{"result": result})
}

// callback POSTs an item to local software as a JSON-RPC request whose id
// is the message id, and returns the answer payload for a request. Headers
// (named by the SDK that reads them) carry what the endpoint server vouches
// for: the sender is the verified TLS peer.
func (s *Server) callback(ctx context.Context, it *Item) ([]byte, error) {
	body, err := appendCallback(make([]byte, 0, 256+len(it.Params)), it)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.CallbackTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.Callback, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(sdk.HeaderFrom, it.From)
	req.Header.Set(sdk.HeaderMessageID, it.MessageID.String())
	req.Header.Set(sdk.HeaderKind, it.Kind)
	req.Header.Set(sdk.HeaderService, it.Service)
	req.Header.Set(sdk.HeaderDeadline, it.Deadline.UTC().Format(time.RFC3339))
	if it.CorrelationID != nil {
		req.Header.Set(sdk.HeaderCorrelationID, it.CorrelationID.String())
	}
	if it.Sync {
		req.Header.Set(sdk.HeaderSync, "true")
	}
	if it.Sealed != nil {
		req.Header.Set(sdk.HeaderSealed, "true")
	}
	if s.cfg.CallbackToken != "" {
		req.Header.Set("Authorization", "Bearer "+s.cfg.CallbackToken)
	}
	resp, err := s.callbackClient().Do(req)
	if err != nil {
		s.m.callbacks.WithLabelValues("error").Inc()
		return nil, err
	}
	defer resp.Body.Close()
	rb, err := readLimited(resp.Body, s.cfg.MaxBody, resp.ContentLength)
	if err != nil || resp.StatusCode < 200 || resp.StatusCode > 299 {
		s.m.callbacks.WithLabelValues("error").Inc()
		if err == nil {
			err = fmt.Errorf("callback answered HTTP %d", resp.StatusCode)
		}
		return nil, err
	}
	s.m.callbacks.WithLabelValues("ok").Inc()
	if it.Kind != "request" {
		return nil, nil
	}
	var r struct {
		JSONRPC string          `json:"jsonrpc"`
		Result  json.RawMessage `json:"result"`
		Error   *jsonrpc.Error  `json:"error"`
	}
	if err := json.Unmarshal(rb, &r); err != nil || r.JSONRPC != "2.0" || (r.Result == nil && r.Error == nil) {
		return nil, errors.New("callback did not answer with a JSON-RPC response")
	}
	return answerPayload(r.Result, r.Error)
}

func (s *Server) callbackClient() *http.Client { return s.cbClient }

// deliverSync gives a synchronous request to local software and waits for
// its answer: by callback, or to a poller (until ctx ends).
func (s *Server) deliverSync(ctx context.Context, it *Item) ([]byte, error) {
	if s.cfg.Callback != "" {
		return s.callback(ctx, it)
	}
	return s.inbox.waitAnswer(ctx, it)
}

// runOutbox delivers queued messages until ctx ends: each recipient's queue
// head in turn, recipients in parallel (at most 16 at once).
func (s *Server) runOutbox(ctx context.Context) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	defer wg.Wait()
	inflight := map[string]bool{}
	var mu sync.Mutex // guards inflight
	for {
		due, next, err := s.cfg.Store.Due(64)
		if err != nil {
			s.log.Error("reading the outbox failed", "err", err)
			next = time.Now().Add(time.Second)
		}
		for _, o := range due {
			mu.Lock()
			busy := inflight[o.Peer]
			inflight[o.Peer] = true
			mu.Unlock()
			if busy {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Go(func() {
				defer func() { <-sem }()
				s.deliver(ctx, o)
				mu.Lock()
				delete(inflight, o.Peer)
				mu.Unlock()
				s.kick(s.kickOut) // the next head may be due at once
			})
		}
		wait := time.Minute
		if !next.IsZero() {
			wait = min(wait, max(time.Until(next), time.Millisecond))
		}
		if len(due) > 0 && len(due) >= 64 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.kickOut:
		case <-t.C:
		}
		t.Stop()
	}
}

// deliver makes one delivery attempt and records its outcome.
func (s *Server) deliver(ctx context.Context, o store.Outgoing) {
	id := o.ID
	now := time.Now()
	if !now.Before(o.Deadline) {
		if err := s.cfg.Store.MarkExpired(id); err == nil {
			s.m.delivery.WithLabelValues("expired").Inc()
			s.report(o, "expired", "the deadline passed before delivery")
		}
		return
	}
	fail := func(reason string) {
		if err := s.cfg.Store.MarkFailed(id, errors.New(reason)); err == nil {
			s.m.delivery.WithLabelValues("failed").Inc()
			s.report(o, "failed", reason)
		}
	}
	retry := func(err error, after time.Duration) {
		backoff := s.cfg.RetryMin << min(o.Attempts, 20)
		backoff = min(backoff, s.cfg.RetryMax)
		backoff = time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64()))
		backoff = max(backoff, after)
		next := time.Now().Add(backoff)
		if next.After(o.Deadline) {
			next = o.Deadline // one last look at the deadline, then expire
		}
		s.cfg.Store.MarkAttempt(id, err, next)
		s.m.delivery.WithLabelValues("retry").Inc()
	}
	m, _, err := s.memberEntry(o.Peer)
	if err != nil {
		fail(err.Error())
		return
	}
	to := s.memberID(m)
	env, err := seal.Parse(o.Sealed)
	if err != nil {
		fail("stored envelope unreadable: " + err.Error())
		return
	}
	wm := &wireMessage{ID: id, Kind: o.Kind.String(), Service: o.Service, Deadline: o.Deadline, Sealed: env}
	if o.Kind == store.Response {
		c := o.CorrelationID
		wm.CorrelationID = &c
	}
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	status, body, hdr, err := s.postH(actx, to, wm)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			retry(err, 0)
		}
		return
	}
	switch {
	case status == http.StatusAccepted:
		digest, _ := envelopeDigest(env)
		if _, err := VerifyReceipt(body, to, id, digest, s.cfg.Trust, time.Now()); err != nil {
			retry(err, 0)
			return
		}
		if err := s.cfg.Store.MarkDelivered(id, body); err == nil {
			s.m.delivery.WithLabelValues("delivered").Inc()
			if o.Kind != store.Response {
				s.report(o, "delivered", "")
			}
		}
	case status == http.StatusTooManyRequests || status >= 500:
		retry(fmt.Errorf("%s answered HTTP %d", to.Name, status), retryAfter(hdr.Get("Retry-After")))
	default:
		fail(peerError(to.Name, status, body).Error())
	}
}

// retryAfter reads a Retry-After header in seconds, bounded to an hour.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return time.Duration(min(n, 3600)) * time.Second
}

// report tells local software the final state of a message it sent.
func (s *Server) report(o store.Outgoing, state, reason string) {
	rep := map[string]any{"message_id": o.ID, "to": o.Peer, "service": o.Service, "kind": o.Kind.String(), "status": state, "reason": reason}
	if o.Kind == store.Response {
		rep["correlation_id"] = o.CorrelationID // the request it answered, which software knows
	}
	p, _ := json.Marshal(rep)
	it := &Item{MessageID: store.NewID(), From: s.self.Name, Kind: "status", Service: o.Service, Deadline: o.Deadline, Params: p}
	if s.cfg.Callback == "" {
		s.inbox.addStatus(it)
		return
	}
	// Best effort: _message reports the same state durably.
	s.wg.Go(func() {
		for attempt := range 3 {
			if _, err := s.callback(s.ctx, it); err == nil || s.ctx.Err() != nil {
				return
			}
			select {
			case <-time.After(time.Second << attempt):
			case <-s.ctx.Done():
				return
			}
		}
	})
}

// runInbox hands stored messages to local software by callback, in arrival
// order, retrying with backoff. In poll mode it only wakes pollers.
func (s *Server) runInbox(ctx context.Context) {
	retries := map[string]int{} // message key → attempts, while failing
	for {
		wait := time.Minute
		if s.cfg.Callback == "" {
			s.inbox.wake()
		} else {
			items, err := s.cfg.Store.Pending(32)
			if err != nil {
				s.log.Error("reading the inbox failed", "err", err)
			}
			for _, in := range items {
				if ctx.Err() != nil {
					return
				}
				key := in.Peer + "/" + in.ID.String()
				if err := s.handOver(ctx, in); err != nil {
					n := retries[key]
					retries[key] = n + 1
					backoff := min(s.cfg.RetryMin<<min(n, 20), s.cfg.RetryMax)
					s.cfg.Store.Lease(in.Peer, in.ID, time.Now().Add(backoff))
					s.log.Warn("local software did not take a message; retrying", "peer", in.Peer, "err", err, "retry_in", backoff)
					wait = min(wait, backoff)
					continue
				}
				delete(retries, key)
			}
			if len(items) == 32 {
				wait = 0
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.kickIn:
		case <-t.C:
		}
		t.Stop()
	}
}

// handOver delivers one inbox message by callback and acknowledges it; for
// a request the software's answer goes back to the sender in the same
// transaction as the acknowledgement.
func (s *Server) handOver(ctx context.Context, in store.Incoming) error {
	if settled, err := s.settleUnusable(in); settled || err != nil {
		return err
	}
	it, err := s.openIncoming(in)
	if err != nil {
		return err
	}
	answer, err := s.callback(ctx, it)
	if err != nil {
		return err
	}
	if in.Kind == store.Request {
		return s.ackRequest(in, answer)
	}
	return s.cfg.Store.Ack(in.Peer, in.ID, nil)
}

// settleUnusable acknowledges a received message local software cannot be
// given: past its deadline (dropped), or whose payload does not open or is
// not JSON (a request gets an error response, so its sender learns why).
// It reports whether it settled the message. Poll and callback mode treat
// such messages alike.
func (s *Server) settleUnusable(in store.Incoming) (bool, error) {
	if !time.Now().Before(in.Deadline) {
		s.log.Warn("dropping a received message past its deadline", "peer", in.Peer, "service", in.Service)
		s.m.peerIn.WithLabelValues("expired_undelivered").Inc()
		return true, s.cfg.Store.Ack(in.Peer, in.ID, nil)
	}
	if _, err := s.openIncoming(in); err != nil {
		s.log.Warn("a received message cannot be handed over", "peer", in.Peer, "service", in.Service, "err", err)
		if in.Kind == store.Request {
			var e *jsonrpc.Error
			if !errors.As(err, &e) {
				e = rpcErr(jsonrpc.CodeSealed, "payload cannot be opened")
			}
			ans, _ := answerPayload(nil, e)
			return true, s.ackRequest(in, ans)
		}
		return true, s.cfg.Store.Ack(in.Peer, in.ID, nil)
	}
	return false, nil
}

// openIncoming turns a stored message into the item local software sees.
func (s *Server) openIncoming(in store.Incoming) (*Item, error) {
	env, err := seal.Parse(in.Sealed)
	if err != nil {
		return nil, err
	}
	if in.Peer == store.Anonymous {
		return s.openAnonymous(in, env)
	}
	wm := &wireMessage{ID: in.ID, Kind: in.Kind.String(), Service: in.Service, Deadline: in.Deadline, Sealed: env}
	if in.Kind == store.Response {
		c := in.CorrelationID
		wm.CorrelationID = &c
	}
	m, _, err := s.memberEntry(in.Peer)
	if err != nil {
		return nil, err
	}
	payload, err := s.openFrom(s.memberID(m), wm)
	if err != nil {
		return nil, err
	}
	return s.itemFor(in.Peer, wm, payload), nil
}

// ackRequest acknowledges a received request and queues the answer to its
// sender atomically.
func (s *Server) ackRequest(in store.Incoming, answer []byte) error {
	req := &wireMessage{ID: in.ID, Kind: "request", Service: in.Service}
	resp, err := s.response(in.Peer, req, answer, time.Now().Add(s.cfg.DefaultDeadline))
	if err != nil {
		return err
	}
	return s.enqueueResponse(in, resp)
}

// enqueueResponse acknowledges the request in and queues resp, its answer,
// in one transaction.
func (s *Server) enqueueResponse(in store.Incoming, resp *wireMessage) error {
	sealed, err := json.Marshal(resp.Sealed)
	if err != nil {
		return err
	}
	err = s.cfg.Store.AckAndEnqueue(in.Peer, in.ID, store.Message{
		ID: resp.ID, Kind: store.Response, Peer: in.Peer, Service: in.Service,
		CorrelationID: in.ID, Deadline: resp.Deadline, Sealed: sealed,
	})
	if err != nil {
		return storeErr(in.Peer, err)
	}
	s.kick(s.kickOut)
	return nil
}

// localPoll returns messages waiting for local software (long-poll).
func (s *Server) localPoll(ctx context.Context, raw json.RawMessage) (any, error) {
	var p struct {
		Max   int `json:"max"`
		Wait  int `json:"wait"`  // seconds to wait for a message, at most 30
		Lease int `json:"lease"` // seconds before an unacknowledged message is offered again; default 60
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Max <= 0 {
		p.Max = 10
	}
	p.Max = min(p.Max, 100)
	p.Wait = min(max(p.Wait, 0), 30)
	if p.Lease <= 0 {
		p.Lease = 60
	}
	lease := time.Duration(min(p.Lease, 3600)) * time.Second
	deadline := time.Now().Add(time.Duration(p.Wait) * time.Second)
	for {
		wake := s.inbox.waiter()
		items := s.inbox.take(p.Max)
		if n := p.Max - len(items); n > 0 && s.cfg.Callback == "" {
			stored, err := s.cfg.Store.Claim(n, time.Now().Add(lease))
			if err != nil {
				return nil, err
			}
			for _, in := range stored {
				if settled, err := s.settleUnusable(in); settled || err != nil {
					if err != nil {
						s.log.Warn("a received message could not be settled", "peer", in.Peer, "err", err)
					}
					continue
				}
				it, err := s.openIncoming(in)
				if err != nil { // settleUnusable opened it a moment ago
					continue
				}
				items = append(items, it)
			}
		}
		if len(items) > 0 || !time.Now().Before(deadline) {
			if items == nil {
				items = []*Item{}
			}
			return map[string]any{"messages": items}, nil
		}
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			t.Stop()
			return map[string]any{"messages": []*Item{}}, nil
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// localAck acknowledges a polled message; for a request it carries the
// answer, which goes back to the sender.
func (s *Server) localAck(raw json.RawMessage) (any, error) {
	var p struct {
		MessageID store.ID        `json:"message_id"`
		From      string          `json:"from"`
		Result    json.RawMessage `json:"result,omitempty"`
		Error     *jsonrpc.Error  `json:"error,omitempty"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if p.Result != nil && p.Error != nil {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "give result or error, not both")
	}
	answer, err := answerPayload(p.Result, p.Error)
	if err != nil {
		return nil, err
	}
	if s.inbox.answer(p.From, p.MessageID, answer) {
		return map[string]any{"acked": true}, nil
	}
	in, err := s.cfg.Store.Received(p.From, p.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "no message %s from %q is waiting", p.MessageID, p.From)
	}
	if err != nil {
		return nil, err
	}
	if in.Acked {
		return map[string]any{"acked": true, "duplicate": true}, nil
	}
	if in.Kind == store.Request {
		err = s.ackRequest(in, answer)
	} else {
		err = s.cfg.Store.Ack(p.From, p.MessageID, nil)
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"acked": true}, nil
}

// localQueue holds, in memory, what pollers fetch besides the stored inbox:
// synchronous requests whose caller waits, and status reports. Both are
// bounded.
type localQueue struct {
	mu     sync.Mutex // guards the fields below
	syncs  []*syncWait
	status []*Item
	wakeCh chan struct{} // closed and replaced to wake pollers
}

type syncWait struct {
	it      *Item
	taken   bool
	answers chan []byte
}

const (
	maxSyncWaiting = 1024
	maxStatus      = 1024
)

func newLocalQueue() *localQueue { return &localQueue{wakeCh: make(chan struct{})} }

func (q *localQueue) waiter() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.wakeCh
}

func (q *localQueue) wake() {
	q.mu.Lock()
	close(q.wakeCh)
	q.wakeCh = make(chan struct{})
	q.mu.Unlock()
}

func (q *localQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.syncs) + len(q.status)
}

func (q *localQueue) addStatus(it *Item) {
	q.mu.Lock()
	if len(q.status) >= maxStatus {
		q.status = q.status[1:] // drop oldest: _message has the durable state
	}
	q.status = append(q.status, it)
	q.mu.Unlock()
	q.wake()
}

// take returns up to n untaken sync requests and status reports.
func (q *localQueue) take(n int) []*Item {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*Item
	for _, w := range q.syncs {
		if len(out) >= n {
			break
		}
		if !w.taken {
			w.taken = true
			out = append(out, w.it)
		}
	}
	k := min(n-len(out), len(q.status))
	out = append(out, q.status[:k]...)
	q.status = q.status[k:]
	return out
}

// waitAnswer queues a sync request for pollers and waits for its answer.
func (q *localQueue) waitAnswer(ctx context.Context, it *Item) ([]byte, error) {
	w := &syncWait{it: it, answers: make(chan []byte, 1)}
	q.mu.Lock()
	if len(q.syncs) >= maxSyncWaiting {
		q.mu.Unlock()
		return nil, errors.New("too many synchronous requests waiting for local software")
	}
	q.syncs = append(q.syncs, w)
	q.mu.Unlock()
	q.wake()
	defer func() {
		q.mu.Lock()
		for i, x := range q.syncs {
			if x == w {
				q.syncs = append(q.syncs[:i], q.syncs[i+1:]...)
				break
			}
		}
		q.mu.Unlock()
	}()
	select {
	case a := <-w.answers:
		return a, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// answer completes a waiting sync request; it reports whether one matched.
func (q *localQueue) answer(from string, id store.ID, answer []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, w := range q.syncs {
		if w.it.MessageID == id && w.it.From == from {
			select {
			case w.answers <- answer:
			default:
			}
			return true
		}
	}
	return false
}
