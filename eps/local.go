package eps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

// Version is reported by _ping.
const Version = "kurier-eps/1"

func rpcErr(code int, format string, a ...any) *jsonrpc.Error {
	return &jsonrpc.Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// decodeParams decodes params strictly into v.
func decodeParams(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		raw = json.RawMessage("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return rpcErr(jsonrpc.CodeInvalidParams, "invalid params: %v", err)
	}
	return nil
}

// handleLocal answers one local JSON-RPC request.
func (s *Server) handleLocal(ctx context.Context, req *jsonrpc.Request) (any, error) {
	kind := "local"
	res, err := func() (any, error) {
		switch req.Method {
		case "_ping":
			return map[string]any{"pong": true, "version": Version, "member": s.self.String(), "time": time.Now().UTC()}, nil
		case "_directory":
			return s.localDirectory(req.Params)
		case "_status":
			return s.localStatus()
		case "_send":
			kind = "send"
			return s.localSend(req.Params)
		case "_message":
			return s.localMessage(req.Params)
		case "_poll":
			kind = "poll"
			return s.localPoll(ctx, req.Params)
		case "_ack":
			kind = "ack"
			return s.localAck(req.Params)
		case "_link", "_unlink":
			kind = "link"
			if s.links == nil {
				return nil, rpcErr(jsonrpc.CodeMethodNotFound, "%s: one-time links are not configured on this endpoint server", req.Method)
			}
			if req.Method == "_link" {
				return s.links.create(ctx, req.Params)
			}
			return s.links.withdraw(req.Params)
		case "_call":
			kind = "call"
			var p callParams
			if err := decodeParams(req.Params, &p); err != nil {
				return nil, err
			}
			return s.call(ctx, p)
		}
		member, service, ok := strings.Cut(req.Method, ".")
		if !ok || strings.HasPrefix(req.Method, "_") || strings.HasPrefix(req.Method, "rpc.") {
			return nil, rpcErr(jsonrpc.CodeMethodNotFound, "method not found: %q (want <member>.<service> or a _ method)", req.Method)
		}
		if req.ID == nil {
			// A JSON-RPC notification expects no answer: send it as an
			// asynchronous notification message instead of waiting.
			kind = "send"
			p, err := json.Marshal(sendParams{To: member, Service: service, Params: req.Params, Notification: true})
			if err != nil {
				return nil, err
			}
			return s.localSend(p)
		}
		kind = "call"
		return s.call(ctx, callParams{To: member, Service: service, Params: req.Params})
	}()
	result := "ok"
	if err != nil {
		var e *jsonrpc.Error
		if errors.As(err, &e) {
			result = fmt.Sprint(e.Code)
		} else {
			result = "internal"
		}
	}
	s.m.local.WithLabelValues(kind, result).Inc()
	return res, err
}

// callParams are the params of _call; "<member>.<service>" fills To,
// Service and Params.
type callParams struct {
	To      string          `json:"to"`
	Service string          `json:"service"`
	Params  json.RawMessage `json:"params,omitempty"`
	// Sealed, instead of Params, is an envelope the software sealed itself
	// (unsigned) with MessageID; the endpoint server signs it.
	Sealed    *seal.Envelope `json:"sealed,omitempty"`
	MessageID *store.ID      `json:"message_id,omitempty"`
}

// target checks that the member exists, offers the service and that this
// member may call it, and returns its seal key.
func (s *Server) target(to, service string, serviceCode int) (pki.ID, pki.SealKey, error) {
	if err := pki.ValidName(to); err != nil {
		return pki.ID{}, pki.SealKey{}, rpcErr(jsonrpc.CodeUnknownMember, "unknown member %q", to)
	}
	if err := pki.ValidServiceName(service); err != nil {
		return pki.ID{}, pki.SealKey{}, rpcErr(serviceCode, "invalid service name %q", service)
	}
	m, snap, err := s.memberEntry(to)
	if errors.Is(err, pki.ErrNoDirectory) {
		return pki.ID{}, pki.SealKey{}, rpcErr(jsonrpc.CodeUnavailable, "no signed directory loaded yet")
	}
	if err != nil {
		return pki.ID{}, pki.SealKey{}, rpcErr(jsonrpc.CodeUnknownMember, "%v", err)
	}
	if !snap.Allowed(s.self, to, service) {
		return pki.ID{}, pki.SealKey{}, rpcErr(jsonrpc.CodeNotAllowed, "%s may not call %s.%s (see the directory's services and permissions)", s.self.Name, to, service)
	}
	key, err := sealKeyOf(m)
	if err != nil {
		return pki.ID{}, pki.SealKey{}, rpcErr(jsonrpc.CodeSealed, "%v", err)
	}
	return s.memberID(m), key, nil
}

// envelope seals params (or signs a software-sealed envelope) for a message.
func (s *Server) envelope(to pki.ID, key pki.SealKey, m *wireMessage, params json.RawMessage, sealed *seal.Envelope) error {
	ctx := sealContext(s.self.Name, to.Name, m)
	if sealed != nil {
		env := *sealed
		if err := seal.Sign(&env, ctx, s.cert()); err != nil {
			return rpcErr(jsonrpc.CodeInvalidParams, "sealed: %v", err)
		}
		m.Sealed = &env
		return nil
	}
	if len(params) == 0 {
		params = json.RawMessage("null")
	}
	env, err := s.sealer.Seal(key, ctx, params, s.cert())
	if errors.Is(err, seal.ErrTooLarge) {
		return rpcErr(jsonrpc.CodeTooLarge, "payload too large to seal (at most %d bytes)", seal.MaxSize/4*3)
	}
	if err != nil {
		return err
	}
	m.Sealed = env
	return nil
}

// checkParams refuses params other than an object or array: they reach the
// recipient's software as JSON-RPC params, which must be one or the other.
func checkParams(raw json.RawMessage) error {
	if len(raw) == 0 || isStructured(raw) {
		return nil
	}
	return rpcErr(jsonrpc.CodeInvalidParams, "params must be a JSON object or array")
}

// call makes a synchronous call to another member and returns its result.
func (s *Server) call(ctx context.Context, p callParams) (any, error) {
	start := time.Now()
	if err := checkParams(p.Params); err != nil {
		return nil, err
	}
	to, key, err := s.target(p.To, p.Service, jsonrpc.CodeMethodNotFound)
	if err != nil {
		return nil, err
	}
	m := &wireMessage{ID: store.NewID(), Kind: "request", Service: p.Service, Sync: true, Deadline: start.Add(s.cfg.SyncTimeout)}
	if p.Sealed != nil {
		if p.MessageID == nil {
			return nil, rpcErr(jsonrpc.CodeInvalidParams, "a sealed payload needs the message_id it was sealed for")
		}
		m.ID = *p.MessageID
	}
	if err := s.envelope(to, key, m, p.Params, p.Sealed); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.SyncTimeout)
	defer cancel()
	status, body, err := s.post(ctx, to, m)
	if err != nil {
		if ctx.Err() != nil {
			return nil, rpcErr(jsonrpc.CodeTimeout, "%s did not answer within %s", to.Name, s.cfg.SyncTimeout)
		}
		return nil, rpcErr(jsonrpc.CodeUnavailable, "%s unreachable: %v", to.Name, err)
	}
	if status != 200 {
		return nil, peerError(to.Name, status, body)
	}
	resp, kind, err := decodeWire(body)
	if err != nil || kind != store.Response || *resp.CorrelationID != m.ID || resp.Service != m.Service {
		return nil, rpcErr(jsonrpc.CodeInternalError, "%s sent a malformed answer", to.Name)
	}
	answer, err := s.openFrom(to, resp)
	if err != nil {
		return nil, err
	}
	s.m.callDur.Observe(time.Since(start).Seconds())
	if s.cfg.PassSealed {
		return map[string]any{"sealed": resp.Sealed, "message_id": resp.ID, "from": to.Name}, nil
	}
	return answerResult(answer)
}

// answerResult turns a response payload {"result": …} or {"error": …} into
// the local call's result or error.
func answerResult(payload []byte) (any, error) {
	var a struct {
		Result json.RawMessage `json:"result"`
		Error  *jsonrpc.Error  `json:"error"`
	}
	if err := json.Unmarshal(payload, &a); err != nil {
		return nil, rpcErr(jsonrpc.CodeInternalError, "malformed answer")
	}
	if a.Error != nil {
		return nil, a.Error
	}
	if a.Result == nil {
		return json.RawMessage("null"), nil
	}
	return a.Result, nil
}

// openFrom verifies a message from peer and opens its payload (unless the
// server passes payloads on sealed, in which case it only verifies).
func (s *Server) openFrom(from pki.ID, m *wireMessage) ([]byte, error) {
	ctx := sealContext(from.Name, s.self.Name, m)
	if s.cfg.PassSealed {
		if _, err := s.verify.Verify(m.Sealed, ctx); err != nil {
			return nil, rpcErr(jsonrpc.CodeSealed, "payload from %s does not verify: %v", from.Name, err)
		}
		return nil, nil
	}
	pt, id, err := s.verify.OpenVerified(m.Sealed, ctx, s.cfg.SealKeys)
	if err != nil {
		return nil, rpcErr(jsonrpc.CodeSealed, "payload from %s cannot be opened: %v", from.Name, err)
	}
	return s.checkPayload(from, id, m, pt)
}

// openVerified opens a payload whose signature was verified just now, by
// signer (a synchronous request: verified before anything else, opened at
// once; verifying again would cost a second signature check).
func (s *Server) openVerified(from, signer pki.ID, m *wireMessage) ([]byte, error) {
	if s.cfg.PassSealed {
		if signer != from {
			return nil, rpcErr(jsonrpc.CodeSealed, "payload signed by %s, not %s", signer, from)
		}
		return nil, nil
	}
	pt, err := s.verify.Open(m.Sealed, sealContext(from.Name, s.self.Name, m), s.cfg.SealKeys)
	if err != nil {
		return nil, rpcErr(jsonrpc.CodeSealed, "payload from %s cannot be opened: %v", from.Name, err)
	}
	return s.checkPayload(from, signer, m, pt)
}

// checkPayload checks an opened payload signed by id for local software.
func (s *Server) checkPayload(from, id pki.ID, m *wireMessage, pt []byte) ([]byte, error) {
	if id != from {
		return nil, rpcErr(jsonrpc.CodeSealed, "payload signed by %s, not %s", id, from)
	}
	// Local software gets JSON-RPC params: refuse anything else here, once,
	// rather than wedge its delivery.
	if !json.Valid(pt) || (m.Kind != "response" && !isStructured(pt) && !bytes.Equal(bytes.TrimSpace(pt), []byte("null"))) {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "payload from %s is not a JSON object, array or null", from.Name)
	}
	return pt, nil
}

// post sends m to the peer and returns the HTTP status and body.
func (s *Server) post(ctx context.Context, to pki.ID, m *wireMessage) (int, []byte, error) {
	status, body, _, err := s.postH(ctx, to, m)
	return status, body, err
}

// postH is post that also returns the response headers.
func (s *Server) postH(ctx context.Context, to pki.ID, m *wireMessage) (int, []byte, http.Header, error) {
	b, err := m.marshal()
	if err != nil {
		return 0, nil, nil, err
	}
	req, err := newPeerRequest(b)
	if err != nil {
		return 0, nil, nil, err
	}
	resp, err := s.client.Do(ctx, to, req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body, s.cfg.MaxBody+64<<10, resp.ContentLength)
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, body, resp.Header, nil
}

// peerError maps a peer's refusal to a JSON-RPC error.
func peerError(from string, status int, body []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	json.Unmarshal(body, &e)
	msg := e.Error
	if msg == "" {
		msg = fmt.Sprintf("HTTP %d", status)
	}
	code := jsonrpc.CodeUnavailable
	switch status {
	case 403:
		code = jsonrpc.CodeNotAllowed
	case 413:
		code = jsonrpc.CodeTooLarge
	case 429:
		code = jsonrpc.CodeQueueFull
	case 504:
		code = jsonrpc.CodeTimeout
	case 400, 409:
		code = jsonrpc.CodeInvalidParams
	}
	return rpcErr(code, "%s refused: %s", from, msg)
}

// sendParams are the params of _send.
type sendParams struct {
	To            string          `json:"to"`
	Service       string          `json:"service"`
	Params        json.RawMessage `json:"params,omitempty"`
	Sealed        *seal.Envelope  `json:"sealed,omitempty"`
	MessageID     *store.ID       `json:"message_id,omitempty"`
	CorrelationID *store.ID       `json:"correlation_id,omitempty"`
	Notification  bool            `json:"notification,omitempty"`
	Deadline      *time.Time      `json:"deadline,omitempty"`
}

// localSend stores an asynchronous message and returns its id; delivery
// happens in the background.
func (s *Server) localSend(raw json.RawMessage) (any, error) {
	var p sendParams
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	if err := checkParams(p.Params); err != nil {
		return nil, err
	}
	if p.Sealed != nil && p.MessageID == nil {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "a sealed payload needs the message_id it was sealed for")
	}
	if p.CorrelationID != nil {
		if p.Notification {
			return nil, rpcErr(jsonrpc.CodeInvalidParams, "a message is either a response (correlation_id) or a notification")
		}
		return s.sendResponse(p)
	}
	kind := "request"
	if p.Notification {
		kind = "notification"
	}
	to, key, err := s.target(p.To, p.Service, jsonrpc.CodeInvalidParams)
	if err != nil {
		return nil, err
	}
	deadline, err := s.deadline(p.Deadline)
	if err != nil {
		return nil, err
	}
	m := &wireMessage{ID: store.NewID(), Kind: kind, Service: p.Service, Deadline: deadline}
	if p.MessageID != nil {
		m.ID = *p.MessageID // software's idempotency key (and, if sealed, what it sealed for)
	}
	if err := s.envelope(to, key, m, p.Params, p.Sealed); err != nil {
		return nil, err
	}
	sealed, err := json.Marshal(m.Sealed)
	if err != nil {
		return nil, err
	}
	k, _ := store.ParseKind(kind)
	err = s.cfg.Store.Enqueue(store.Message{ID: m.ID, Kind: k, Peer: to.Name, Service: m.Service, Deadline: m.Deadline, Sealed: sealed, CreatedAt: time.Now()})
	if errors.Is(err, store.ErrExists) {
		// The same message_id again: a retry after a lost answer succeeds
		// with the stored message's state; a different message is refused.
		if o, gerr := s.cfg.Store.Get(m.ID); gerr == nil && o.Peer == to.Name && o.Service == m.Service && o.Kind == k {
			return map[string]any{"message_id": o.ID, "status": o.State.String(), "deadline": o.Deadline, "duplicate": true}, nil
		}
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "message_id %s was used before for another message", m.ID)
	}
	if err != nil {
		return nil, storeErr(to.Name, err)
	}
	s.kick(s.kickOut)
	return map[string]any{"message_id": m.ID, "status": "queued", "deadline": m.Deadline}, nil
}

// deadline checks a requested delivery deadline or returns the default.
func (s *Server) deadline(d *time.Time) (time.Time, error) {
	now := time.Now()
	if d == nil {
		return now.Add(s.cfg.DefaultDeadline).UTC(), nil
	}
	if !d.After(now) || d.Sub(now) > s.cfg.MaxDeadline {
		return time.Time{}, rpcErr(jsonrpc.CodeInvalidParams, "deadline must lie in the future and within %s", s.cfg.MaxDeadline)
	}
	return d.UTC(), nil
}

// storeErr maps an outbox refusal to a JSON-RPC error.
func storeErr(to string, err error) error {
	switch {
	case errors.Is(err, store.ErrQueueFull):
		return rpcErr(jsonrpc.CodeQueueFull, "the queue for %s is full; retry later", to)
	case errors.Is(err, store.ErrTooLarge):
		return rpcErr(jsonrpc.CodeTooLarge, "payload too large")
	case errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrInvalid):
		return rpcErr(jsonrpc.CodeInvalidParams, "%v", err)
	}
	return err
}

// sendResponse answers a request received from p.To (correlation_id) with
// p.Params as its result, exactly like _ack: the request is acknowledged
// and the answer queued in one transaction, so a request never gets two
// responses.
func (s *Server) sendResponse(p sendParams) (any, error) {
	in, err := s.cfg.Store.Received(p.To, *p.CorrelationID)
	switch {
	case err != nil:
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "correlation_id %s is not a message received from %q", p.CorrelationID, p.To)
	case in.Kind != store.Request:
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "correlation_id %s is a %s, not a request", p.CorrelationID, in.Kind)
	case in.Acked && p.MessageID != nil && in.ResponseID == *p.MessageID:
		// The same answer again (after a lost reply or a crash): what
		// the first one queued stands.
		res := map[string]any{"message_id": in.ResponseID, "duplicate": true}
		if o, err := s.cfg.Store.Get(in.ResponseID); err == nil {
			res["status"], res["deadline"] = o.State.String(), o.Deadline
		}
		return res, nil
	case in.Acked:
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "request %s from %s was already answered", p.CorrelationID, p.To)
	case p.Service != "" && p.Service != in.Service:
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "request %s was for service %s", p.CorrelationID, in.Service)
	}
	deadline, err := s.deadline(p.Deadline)
	if err != nil {
		return nil, err
	}
	var resp *wireMessage
	if p.Sealed != nil {
		// The requester's permission was checked when the request arrived;
		// only its seal key is needed here.
		m, _, err := s.memberEntry(p.To)
		if err != nil {
			return nil, rpcErr(jsonrpc.CodeUnknownMember, "%v", err)
		}
		key, err := sealKeyOf(m)
		if err != nil {
			return nil, rpcErr(jsonrpc.CodeSealed, "%v", err)
		}
		corr := in.ID
		resp = &wireMessage{ID: *p.MessageID, Kind: "response", Service: in.Service, CorrelationID: &corr, Deadline: deadline}
		if err := s.envelope(s.memberID(m), key, resp, nil, p.Sealed); err != nil {
			return nil, err
		}
	} else {
		answer, err := answerPayload(p.Params, nil)
		if err != nil {
			return nil, err
		}
		var id store.ID
		if p.MessageID != nil {
			id = *p.MessageID
		}
		if resp, err = s.responseID(p.To, &wireMessage{ID: in.ID, Kind: "request", Service: in.Service}, answer, deadline, id); err != nil {
			return nil, err
		}
	}
	if err := s.enqueueResponse(in, resp); err != nil {
		return nil, err
	}
	return map[string]any{"message_id": resp.ID, "status": "queued", "deadline": resp.Deadline}, nil
}

// localMessage reports the delivery state of a sent message.
func (s *Server) localMessage(raw json.RawMessage) (any, error) {
	var p struct {
		MessageID store.ID `json:"message_id"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	o, err := s.cfg.Store.Get(p.MessageID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, rpcErr(jsonrpc.CodeInvalidParams, "no message %s in the outbox (never sent, or purged after its retention)", p.MessageID)
	}
	if err != nil {
		return nil, err
	}
	out := map[string]any{
		"message_id": o.ID, "to": o.Peer, "service": o.Service, "kind": o.Kind.String(),
		"status": o.State.String(), "attempts": o.Attempts, "deadline": o.Deadline,
	}
	if o.LastError != "" {
		out["last_error"] = o.LastError
	}
	if len(o.Receipt) > 0 {
		out["receipt"] = json.RawMessage(o.Receipt)
	}
	return out, nil
}

// localDirectory lists the members, their services and seal keys, so
// software can seal payloads itself.
func (s *Server) localDirectory(raw json.RawMessage) (any, error) {
	var p struct {
		Member string `json:"member,omitempty"`
	}
	if err := decodeParams(raw, &p); err != nil {
		return nil, err
	}
	snap := s.cfg.Trust.Directory.Current()
	if snap == nil {
		return nil, rpcErr(jsonrpc.CodeUnavailable, "no directory loaded yet")
	}
	type member struct {
		Name        string        `json:"name"`
		Role        pki.Role      `json:"role"`
		DisplayName string        `json:"display_name"`
		Services    []string      `json:"services"`
		SealKeys    []pki.SealKey `json:"seal_keys"`
		Callable    []string      `json:"callable"` // services this member may call
	}
	out := []member{}
	for _, m := range snap.Dir.Members {
		if m.Role == pki.RoleRelay || m.Suspended || snap.IsRevoked(m.Name, "") || (p.Member != "" && m.Name != p.Member) {
			continue
		}
		e := member{Name: m.Name, Role: m.Role, DisplayName: m.DisplayName, Services: m.Services, SealKeys: m.SealKeys, Callable: []string{}}
		for _, sv := range m.Services {
			if snap.Allowed(s.self, m.Name, sv) {
				e.Callable = append(e.Callable, sv)
			}
		}
		out = append(out, e)
	}
	return map[string]any{"network": snap.Dir.Network, "version": snap.Dir.Version, "self": s.self.Name, "members": out}, nil
}

// localStatus reports the server's health.
func (s *Server) localStatus() (any, error) {
	st := map[string]any{"member": s.self.String(), "version": Version}
	if snap := s.cfg.Trust.Directory.Current(); snap != nil {
		st["directory"] = map[string]any{"version": snap.Dir.Version, "expires_at": snap.Dir.ExpiresAt}
	}
	if c := s.cert(); c != nil {
		st["certificate"] = map[string]any{"not_after": c.Leaf.NotAfter, "pin": pki.Pin(c.Leaf)}
	}
	if stats, err := s.cfg.Store.Stats(); err == nil {
		st["store"] = stats
	}
	st["peer_connections"] = s.client.Conns()
	if s.cfg.Status != nil {
		st["relays"] = s.cfg.Status()
	}
	st["delivery"] = map[string]any{"mode": s.deliveryMode(), "waiting_for_poll": s.inbox.len()}
	return st, nil
}

func (s *Server) deliveryMode() string {
	if s.cfg.Callback != "" {
		return "callback"
	}
	return "poll"
}
