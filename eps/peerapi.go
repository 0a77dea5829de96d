package eps

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps/peer"
	"github.com/kurier-net/kurier/eps/store"
	"github.com/kurier-net/kurier/pki"
)

func newPeerRequest(body []byte) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, peerPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return req, nil
}

var errTooLarge = errors.New("eps: body too large")

// readLimited reads r to its end and refuses more than limit bytes
// (errTooLarge).
//
// hint is the body's announced length (Content-Length, or -1): the buffer
// is sized for it at once instead of growing from 512 bytes by doubling,
// which was a sixth of the bytes an EPS allocated per call. A wrong hint
// costs only growth.
func readLimited(r io.Reader, limit, hint int64) ([]byte, error) {
	size := int64(512)
	if hint >= 0 && hint < limit {
		size = hint + 1 // room to read EOF without growing
	}
	b := make([]byte, 0, size)
	lr := io.LimitReader(r, limit+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(b)) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

func peerRefuse(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// servePeer answers one message from another member. The caller is the
// verified TLS peer; nothing in the message can claim otherwise.
func (s *Server) servePeer(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != peerPath {
		peerRefuse(w, http.StatusNotFound, "no such endpoint")
		return
	}
	if r.Method != http.MethodPost {
		peerRefuse(w, http.StatusMethodNotAllowed, "POST only")
		return
	}
	caller, err := peer.Caller(r)
	if err != nil {
		peerRefuse(w, http.StatusForbidden, "no verified caller")
		return
	}
	result := "error"
	defer func() { s.m.peerIn.WithLabelValues(result).Inc() }()
	release, ok := s.limits.acquire(r.Context(), caller.Name, time.Now())
	if !ok {
		result = "rate_limited"
		peerRefuse(w, http.StatusTooManyRequests, "too many requests from "+caller.Name)
		return
	}
	defer release()
	body, err := readLimited(r.Body, s.cfg.MaxBody+64<<10, r.ContentLength)
	if err != nil {
		result = "too_large"
		peerRefuse(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	m, kind, err := decodeWire(body)
	if err != nil {
		result = "bad_request"
		peerRefuse(w, http.StatusBadRequest, err.Error())
		return
	}
	if !time.Now().Before(m.Deadline) {
		result = "bad_request"
		peerRefuse(w, http.StatusBadRequest, "message deadline has passed")
		return
	}
	snap := s.cfg.Trust.Directory.Current()
	if snap == nil {
		peerRefuse(w, http.StatusServiceUnavailable, "no directory")
		return
	}
	switch kind {
	case store.Request, store.Notification:
		if !snap.Allowed(caller, s.self.Name, m.Service) {
			result = "forbidden"
			peerRefuse(w, http.StatusForbidden, fmt.Sprintf("%s may not call %s.%s", caller.Name, s.self.Name, m.Service))
			return
		}
	case store.Response:
		// A response must answer a request this server sent to this peer.
		o, err := s.cfg.Store.FindRequest(caller.Name, *m.CorrelationID)
		if err != nil || o.Service != m.Service {
			result = "unsolicited"
			peerRefuse(w, http.StatusConflict, "response to no request sent to "+caller.Name)
			return
		}
	}
	// Refuse forgeries before storing anything: the payload must be signed
	// by the TLS peer itself, with a key the directory pins.
	signer, err := s.verify.Verify(m.Sealed, sealContext(caller.Name, s.self.Name, m))
	if err != nil {
		result = "bad_signature"
		peerRefuse(w, http.StatusForbidden, "payload signature: "+err.Error())
		return
	}
	if m.Sync {
		result = s.serveSync(w, r.Context(), caller, signer, m)
		return
	}
	result = s.receive(w, caller, m, kind)
}

// receive stores an asynchronous message and answers with the receipt.
func (s *Server) receive(w http.ResponseWriter, caller pki.ID, m *wireMessage, kind store.Kind) string {
	sealed, err := json.Marshal(m.Sealed)
	if err != nil {
		peerRefuse(w, http.StatusBadRequest, err.Error())
		return "bad_request"
	}
	digest, err := envelopeDigest(m.Sealed)
	if err != nil {
		peerRefuse(w, http.StatusBadRequest, err.Error())
		return "bad_request"
	}
	sm := store.Message{ID: m.ID, Kind: kind, Peer: caller.Name, Service: m.Service, Deadline: m.Deadline, Sealed: sealed}
	if m.CorrelationID != nil {
		sm.CorrelationID = *m.CorrelationID
	}
	receipt, dup, err := s.storeReceived(sm, digest)
	switch {
	case errors.Is(err, store.ErrInboxFull):
		peerRefuse(w, http.StatusTooManyRequests, "inbox full")
		return "inbox_full"
	case errors.Is(err, store.ErrConflict):
		peerRefuse(w, http.StatusConflict, "message id reused with other content")
		return "bad_request"
	case errors.Is(err, store.ErrExpired), errors.Is(err, store.ErrInvalid), errors.Is(err, store.ErrTooLarge):
		peerRefuse(w, http.StatusBadRequest, err.Error())
		return "bad_request"
	case err != nil:
		s.log.Error("storing a received message failed", "peer", caller.String(), "err", err)
		peerRefuse(w, http.StatusServiceUnavailable, "store unavailable")
		return "error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	w.Write(receipt)
	if dup {
		return "duplicate"
	}
	s.kick(s.kickIn)
	return "ok"
}

// storeReceived stores a received message (from sm.Peer, whose envelope has
// digest) in the inbox, signing this member's receipt for it, and returns
// the receipt; see store.Receive.
func (s *Server) storeReceived(sm store.Message, digest []byte) ([]byte, bool, error) {
	return s.cfg.Store.Receive(sm, func() ([]byte, error) {
		return signReceipt(&Receipt{MessageID: sm.ID, From: sm.Peer, To: s.self.Name, ReceivedAt: time.Now().UTC(), Digest: digest}, s.cert())
	})
}

// serveSync hands a synchronous request to local software and answers with
// its response, sealed to the caller.
func (s *Server) serveSync(w http.ResponseWriter, ctx context.Context, caller, signer pki.ID, m *wireMessage) string {
	payload, err := s.openVerified(caller, signer, m)
	if err != nil {
		peerRefuse(w, http.StatusBadRequest, err.Error())
		return "bad_signature"
	}
	ctx, cancel := context.WithDeadline(ctx, m.Deadline)
	defer cancel()
	item := s.itemFor(caller.Name, m, payload)
	answer, err := s.deliverSync(ctx, item)
	if err != nil {
		if ctx.Err() != nil {
			peerRefuse(w, http.StatusGatewayTimeout, "local software did not answer in time")
			return "timeout"
		}
		peerRefuse(w, http.StatusServiceUnavailable, "local software unavailable: "+err.Error())
		return "error"
	}
	resp, err := s.response(caller.Name, m, answer, m.Deadline)
	if err != nil {
		peerRefuse(w, http.StatusInternalServerError, err.Error())
		return "error"
	}
	b, err := resp.marshal()
	if err != nil {
		peerRefuse(w, http.StatusInternalServerError, err.Error())
		return "error"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
	return "ok"
}

// response seals answer ({"result":…} or {"error":…}) to the requester as
// the response to req.
func (s *Server) response(to string, req *wireMessage, answer []byte, deadline time.Time) (*wireMessage, error) {
	return s.responseID(to, req, answer, deadline, store.ID{})
}

// responseID is response with the response's message id chosen by the
// caller (local software's idempotency key); zero means a new one.
func (s *Server) responseID(to string, req *wireMessage, answer []byte, deadline time.Time, id store.ID) (*wireMessage, error) {
	if id.IsZero() {
		id = store.NewID()
	}
	m, _, err := s.memberEntry(to)
	if err != nil {
		return nil, err
	}
	key, err := sealKeyOf(m)
	if err != nil {
		return nil, err
	}
	corr := req.ID
	resp := &wireMessage{ID: id, Kind: "response", Service: req.Service, CorrelationID: &corr, Deadline: deadline.UTC()}
	env, err := s.sealer.Seal(key, sealContext(s.self.Name, to, resp), answer, s.cert())
	if err != nil {
		return nil, err
	}
	resp.Sealed = env
	return resp, nil
}

// peerLimits bounds, per calling member, the requests handled at once and
// their rate (a token bucket). A request over the concurrency bound waits
// for a slot for at most peerSlotWait; one over the rate is refused at once.
// Its map holds only members seen recently.
type peerLimits struct {
	max  int
	rate float64

	mu   sync.Mutex // guards byID
	byID map[string]*peerLimit
}

type peerLimit struct {
	slots  chan struct{}
	tokens float64
	last   time.Time
}

const peerSlotWait = 5 * time.Second

func newPeerLimits(max int, rate float64) *peerLimits {
	return &peerLimits{max: max, rate: rate, byID: map[string]*peerLimit{}}
}

// acquire admits one request from name, or refuses it. release must be
// called when an admitted request ends.
func (l *peerLimits) acquire(ctx context.Context, name string, now time.Time) (release func(), ok bool) {
	l.mu.Lock()
	pl := l.byID[name]
	if pl == nil {
		if len(l.byID) > 10000 { // forget idle entries rather than grow
			for k, v := range l.byID {
				if len(v.slots) == 0 {
					delete(l.byID, k)
				}
			}
		}
		pl = &peerLimit{slots: make(chan struct{}, l.max), tokens: l.rate, last: now}
		l.byID[name] = pl
	}
	pl.tokens = math.Min(l.rate, pl.tokens+now.Sub(pl.last).Seconds()*l.rate)
	pl.last = now
	if pl.tokens < 1 {
		l.mu.Unlock()
		return nil, false
	}
	pl.tokens--
	l.mu.Unlock()
	t := time.NewTimer(peerSlotWait)
	defer t.Stop()
	select {
	case pl.slots <- struct{}{}:
		return func() { <-pl.slots }, true
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, false
}
