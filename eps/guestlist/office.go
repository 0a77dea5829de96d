package guestlist

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/eps/seal"
	"github.com/kurier-net/kurier/pki"
)

// Errors of the office side.
var (
	// ErrNotFound: no request of that id.
	ErrNotFound = errors.New("guestlist: no such request")
	// ErrNotSent: the request or notice is stored, but whether the
	// endpoint server took it is not known (it did not answer, or asked to
	// try later). Office.Resume sends it.
	ErrNotSent = errors.New("guestlist: stored but not sent yet")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("guestlist: store closed")
)

// OfficeConfig configures an Office.
type OfficeConfig struct {
	// Client is the office's endpoint server's local API. Required.
	Client *sdk.Client
	// Path is the office's own bbolt file (mode 0600) with its requests,
	// their private keys and the guest lists that arrived. Required. One
	// process at a time may open it.
	Path string
	// Deadline is how long the endpoint server tries to deliver a request
	// or notice. If zero, its default (24h).
	Deadline time.Duration
	// Updated, if not nil, is called after an incoming message changed a
	// request: a guest list arrived (DATA_RECEIVED) or was refused, or the
	// provider refused the request. It must not block for long.
	Updated func(r *Record)
	// Logger receives the office's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Office is a health office's side of guest-list requests. It is safe for
// concurrent use.
type Office struct {
	cfg OfficeConfig
	db  *bolt.DB
	log *slog.Logger

	mu   sync.Mutex // guards name
	name string     // this member's name, once looked up
}

// Record is a request as the office keeps it.
type Record struct {
	// Request is the DataRequest as sent; Request.Status is where it
	// stands now.
	Request contactdata.DataRequest `json:"request"`
	// MessageID is the id of the request message (chosen before sending:
	// resending is idempotent); the provider's answer correlates to it.
	MessageID sdk.MessageID `json:"message_id"`
	// Sent is set once the office's endpoint server has taken the request.
	Sent bool `json:"sent"`
	// Receipt is the provider's endpoint server's signed receipt for the
	// request, exactly as the endpoint server holds it, once delivered and
	// looked up (Office.WaitDelivered). Decode it with Record.RequestReceipt.
	Receipt json.RawMessage `json:"receipt,omitempty"`
	// GuestList is the provider's list, opened and checked, once the
	// status is DATA_RECEIVED.
	GuestList *contactdata.GuestList `json:"guest_list,omitempty"`
	// ReceivedAt is when it arrived, ResponseID the message that carried
	// it.
	ReceivedAt time.Time     `json:"received_at,omitzero"`
	ResponseID sdk.MessageID `json:"response_id,omitzero"`
	// Refusal is set if the provider refused the request, or the office
	// refused the list that came back; the status is then still
	// DATA_REQUESTED. A later valid list clears it.
	Refusal *Refusal `json:"refusal,omitempty"`
	// Notice is the close or abort notification to the provider.
	Notice *NoticeState `json:"notice,omitempty"`
	// Reason is the abort's reason.
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Refusal is why no guest list was accepted.
type Refusal struct {
	// Code is the JSON-RPC error code: one of the Code constants of this
	// package, or a standard one (-32602 invalid request, -32001 not a
	// health office, -32006 too large).
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Fields are the fields refused, by their JSON path (request.end,
	// guests[3].attendance.to, start).
	Fields []FieldError `json:"fields,omitempty"`
	// ByProvider is set if the provider refused; else the office refused
	// what the provider sent.
	ByProvider bool `json:"by_provider"`
}

func (r *Refusal) Error() string {
	who := "office"
	if r.ByProvider {
		who = "provider"
	}
	return fmt.Sprintf("guestlist: refused by the %s: %s (code %d)", who, r.Message, r.Code)
}

// NoticeState is a close or abort notification.
type NoticeState struct {
	Status    contactdata.Status `json:"status"`
	MessageID sdk.MessageID      `json:"message_id"`
	Sent      bool               `json:"sent"`
	Receipt   json.RawMessage    `json:"receipt,omitempty"`
}

// RequestReceipt decodes Receipt; nil if there is none yet.
func (r *Record) RequestReceipt() (*sdk.Receipt, error) { return decodeReceipt(r.Receipt) }

func decodeReceipt(raw json.RawMessage) (*sdk.Receipt, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var rc sdk.Receipt
	if err := json.Unmarshal(raw, &rc); err != nil {
		return nil, fmt.Errorf("guestlist: receipt: %w", err)
	}
	return &rc, nil
}

var (
	bucketRequests = []byte("requests") // request id → Record JSON
	bucketKeys     = []byte("keys")     // request id → private seal key
	bucketMessages = []byte("messages") // request message id → request id
)

// OpenOffice opens or creates the office's file.
func OpenOffice(cfg OfficeConfig) (*Office, error) {
	if cfg.Client == nil || cfg.Path == "" {
		return nil, errors.New("guestlist: OfficeConfig needs a Client and a Path")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := openDB(cfg.Path, bucketRequests, bucketKeys, bucketMessages)
	if err != nil {
		return nil, err
	}
	return &Office{cfg: cfg, db: db, log: log}, nil
}

func openDB(path string, buckets ...[]byte) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return nil, fmt.Errorf("guestlist: open %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("guestlist: open %s: %w", path, err)
	}
	return db, nil
}

func closedErr(err error) error {
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return err
}

// CloseStore closes the office's file. Handlers must have returned.
func (o *Office) CloseStore() error { return o.db.Close() }

// Register registers the office's handlers on mux: the providers' answers
// (responses of service guest-lists). Run one Office per endpoint server:
// it takes every answer that arrives there, and drops answers to requests
// it does not know.
func (o *Office) Register(mux *sdk.Mux) {
	mux.HandleResponse(Service, o.handleResponse)
}

// RequestOptions describe a request.
type RequestOptions struct {
	// Provider is the provider's member name. Required.
	Provider string
	// LocationID is the location's id at the provider. Required.
	LocationID string
	// Start and End are the window (converted to UTC): End after Start, at
	// most 14 days later, Start not in the future.
	Start, End time.Time
	// Reference is the office's case number, at most 64 characters.
	Reference string
}

// Request makes a DataRequest (status DATA_REQUESTED) with a seal key of
// its own, stores both, and sends the request to the provider's
// guest-lists service asynchronously. It returns once the office's
// endpoint server has stored the message; the answer arrives later
// (Register). An invalid request is a contactdata.ValidationErrors. If
// the endpoint server refuses the message for good (not allowed, unknown
// member, …) nothing is kept; if it is unknown whether it took it, the
// error matches ErrNotSent, the record is kept and Resume sends it again.
func (o *Office) Request(ctx context.Context, opts RequestOptions) (*Record, error) {
	req := contactdata.DataRequest{
		ID:          contactdata.NewRequestID(),
		LocationID:  opts.LocationID,
		Provider:    opts.Provider,
		Start:       opts.Start.UTC(),
		End:         opts.End.UTC(),
		Reference:   opts.Reference,
		RequestedAt: time.Now().UTC(),
		Status:      contactdata.StatusDataRequested,
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	key, err := pki.NewSealKey(req.ID)
	if err != nil {
		return nil, err
	}
	kb, err := key.Key.Bytes()
	if err != nil {
		return nil, err
	}
	rec := &Record{Request: req, MessageID: sdk.NewMessageID(), UpdatedAt: time.Now().UTC()}
	err = o.db.Update(func(tx *bolt.Tx) error {
		if err := putRecord(tx, rec); err != nil {
			return err
		}
		if err := tx.Bucket(bucketKeys).Put([]byte(req.ID), kb); err != nil {
			return err
		}
		return tx.Bucket(bucketMessages).Put(rec.MessageID[:], []byte(req.ID))
	})
	if err != nil {
		return nil, closedErr(err)
	}
	if err := o.sendRequest(ctx, rec, key.Public()); err != nil {
		if final(err) {
			o.forget(req.ID, rec.MessageID)
			return nil, fmt.Errorf("guestlist: request to %s: %w", req.Provider, err)
		}
		return rec, fmt.Errorf("guestlist: request %s to %s: %w: %w", req.ID, req.Provider, ErrNotSent, err)
	}
	o.log.Info("guest list requested", "request", req.ID, "provider", req.Provider, "location", req.LocationID)
	return rec, nil
}

// final reports whether the endpoint server refused a message for good.
func final(err error) bool {
	for _, e := range []error{sdk.ErrNotAllowed, sdk.ErrUnknownMember, sdk.ErrInvalidParams, sdk.ErrTooLarge, sdk.ErrSealed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (o *Office) sendOptions(id sdk.MessageID, notification bool) sdk.SendOptions {
	opts := sdk.SendOptions{MessageID: id, Notification: notification}
	if o.cfg.Deadline > 0 {
		opts.Deadline = time.Now().Add(o.cfg.Deadline)
	}
	return opts
}

// sendRequest sends rec's request under its message id and marks it sent.
func (o *Office) sendRequest(ctx context.Context, rec *Record, key pki.SealKey) error {
	req := rec.Request
	req.Status = contactdata.StatusDataRequested // as sent, whatever it is now
	_, err := o.cfg.Client.Send(ctx, req.Provider, Service, RequestMessage{Request: req, SealKey: key}, o.sendOptions(rec.MessageID, false))
	if err != nil {
		return err
	}
	return o.update(req.ID, func(r *Record) error {
		r.Sent = true
		rec.Sent = true
		return nil
	})
}

// forget removes a request that was never sent.
func (o *Office) forget(id string, msg sdk.MessageID) {
	err := o.db.Update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketRequests).Delete([]byte(id))
		tx.Bucket(bucketKeys).Delete([]byte(id))
		return tx.Bucket(bucketMessages).Delete(msg[:])
	})
	if err != nil {
		o.log.Error("removing a request that was not sent failed", "request", id, "err", err)
	}
}

func putRecord(tx *bolt.Tx, rec *Record) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRequests).Put([]byte(rec.Request.ID), v)
}

func getRecord(tx *bolt.Tx, id string) (*Record, error) {
	v := tx.Bucket(bucketRequests).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	var rec Record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("guestlist: record %s: %w", id, err)
	}
	return &rec, nil
}

// update changes the record id in one transaction.
func (o *Office) update(id string, fn func(r *Record) error) error {
	err := o.db.Update(func(tx *bolt.Tx) error {
		rec, err := getRecord(tx, id)
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
		rec.UpdatedAt = time.Now().UTC()
		return putRecord(tx, rec)
	})
	return closedErr(err)
}

// Get returns the request id.
func (o *Office) Get(id string) (*Record, error) {
	var rec *Record
	err := o.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getRecord(tx, id)
		return err
	})
	return rec, closedErr(err)
}

// List returns every request, oldest first.
func (o *Office) List() ([]*Record, error) {
	var out []*Record
	err := o.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRequests).ForEach(func(k, v []byte) error {
			var rec Record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("guestlist: record %s: %w", k, err)
			}
			out = append(out, &rec)
			return nil
		})
	})
	slices.SortFunc(out, func(a, b *Record) int { return a.Request.RequestedAt.Compare(b.Request.RequestedAt) })
	return out, closedErr(err)
}

func (o *Office) key(id string) (pki.SealPrivateKey, bool, error) {
	var b []byte
	err := o.db.View(func(tx *bolt.Tx) error {
		b = append(b, tx.Bucket(bucketKeys).Get([]byte(id))...)
		return nil
	})
	if err != nil || len(b) == 0 {
		return pki.SealPrivateKey{}, false, closedErr(err)
	}
	k, err := pki.SealKEM().NewPrivateKey(b)
	if err != nil {
		return pki.SealPrivateKey{}, false, fmt.Errorf("guestlist: key of request %s: %w", id, err)
	}
	return pki.SealPrivateKey{ID: id, Key: k}, true, nil
}

// Resume sends what was stored but not confirmed sent: requests first,
// then close and abort notices (each provider gets them in this order).
// Resending is idempotent: a message the endpoint server already holds is
// not sent twice. Call it when the software starts.
func (o *Office) Resume(ctx context.Context) error {
	recs, err := o.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, rec := range recs {
		if rec.Sent {
			continue
		}
		k, ok, err := o.key(rec.Request.ID)
		if err != nil || !ok {
			// Aborted before it was sent: the key is gone, and the
			// provider needs no request it would have to refuse.
			if err == nil {
				err = o.update(rec.Request.ID, func(r *Record) error { r.Sent = true; return nil })
			}
			errs = append(errs, err)
			continue
		}
		errs = append(errs, o.sendRequest(ctx, rec, k.Public()))
	}
	for _, rec := range recs {
		if rec.Notice != nil && !rec.Notice.Sent {
			errs = append(errs, o.sendNotice(ctx, rec))
		}
	}
	return errors.Join(errs...)
}

// Close closes request id (DATA_RECEIVED → CLOSED: the office is done with
// it) and notifies the provider. Closing a closed request only resends the
// notice if it was not sent. The error of a transition the state machine
// does not have wraps contactdata.ErrTransition.
func (o *Office) Close(ctx context.Context, id string) (*Record, error) {
	return o.finish(ctx, id, contactdata.StatusClosed, "")
}

// Abort withdraws request id (DATA_REQUESTED or DATA_RECEIVED → ABORTED),
// deletes its private key, so that an answer still on its way can no
// longer be opened, and notifies the provider with reason (at most 500
// characters, no personal data; it is sent to the provider).
func (o *Office) Abort(ctx context.Context, id, reason string) (*Record, error) {
	if !utf8.ValidString(reason) || utf8.RuneCountInString(reason) > maxReason {
		return nil, fmt.Errorf("guestlist: abort %s: reason must be valid UTF-8 of at most %d characters", id, maxReason)
	}
	return o.finish(ctx, id, contactdata.StatusAborted, reason)
}

func (o *Office) finish(ctx context.Context, id string, to contactdata.Status, reason string) (*Record, error) {
	var rec *Record
	err := o.db.Update(func(tx *bolt.Tx) error {
		var err error
		if rec, err = getRecord(tx, id); err != nil {
			return err
		}
		if rec.Request.Status == to {
			return nil // idempotent; a notice not sent yet is sent below
		}
		if err := contactdata.Transition(rec.Request.Status, to); err != nil {
			return fmt.Errorf("guestlist: request %s: %w", id, err)
		}
		rec.Request.Status = to
		rec.Reason = reason
		rec.Notice = &NoticeState{Status: to, MessageID: sdk.NewMessageID()}
		rec.UpdatedAt = time.Now().UTC()
		if to == contactdata.StatusAborted {
			if err := tx.Bucket(bucketKeys).Delete([]byte(id)); err != nil {
				return err
			}
		}
		return putRecord(tx, rec)
	})
	if err != nil {
		return nil, closedErr(err)
	}
	o.log.Info("guest-list request "+string(to), "request", id, "provider", rec.Request.Provider)
	if rec.Notice != nil && !rec.Notice.Sent {
		if err := o.sendNotice(ctx, rec); err != nil {
			return rec, fmt.Errorf("guestlist: notice for %s: %w: %w", id, ErrNotSent, err)
		}
	}
	return rec, nil
}

// sendNotice sends rec's close or abort notice and marks it sent.
func (o *Office) sendNotice(ctx context.Context, rec *Record) error {
	n := Notice{DataRequestID: rec.Request.ID, Status: rec.Notice.Status, Reason: rec.Reason}
	if _, err := o.cfg.Client.Send(ctx, rec.Request.Provider, Service, n, o.sendOptions(rec.Notice.MessageID, true)); err != nil {
		return err
	}
	return o.update(rec.Request.ID, func(r *Record) error {
		if r.Notice != nil && r.Notice.MessageID == rec.Notice.MessageID {
			r.Notice.Sent = true
		}
		rec.Notice.Sent = true
		return nil
	})
}

// WaitDelivered waits until the request, and the close or abort notice if
// one was sent, are delivered or finally not, and stores the provider's
// signed receipts on the record. A delivery that failed or expired is an
// error.
func (o *Office) WaitDelivered(ctx context.Context, id string) (*Record, error) {
	rec, err := o.Get(id)
	if err != nil {
		return nil, err
	}
	if !rec.Sent {
		return rec, fmt.Errorf("guestlist: request %s: %w", id, ErrNotSent)
	}
	d, err := o.cfg.Client.Wait(ctx, rec.MessageID)
	if err != nil {
		return rec, err
	}
	if err := d.Err(); err != nil {
		return rec, err
	}
	var notice *sdk.Delivery
	if rec.Notice != nil && rec.Notice.Sent {
		if notice, err = o.cfg.Client.Wait(ctx, rec.Notice.MessageID); err != nil {
			return rec, err
		}
		if err := notice.Err(); err != nil {
			return rec, err
		}
	}
	err = o.update(id, func(r *Record) error {
		if d.Receipt != nil {
			r.Receipt = d.Receipt.Raw
		}
		if notice != nil && notice.Receipt != nil && r.Notice != nil && r.Notice.MessageID == notice.ID {
			r.Notice.Receipt = notice.Receipt.Raw
		}
		rec = r
		return nil
	})
	return rec, err
}

// handleResponse takes a provider's answer: it opens the guest list with
// the request's key, checks it against the request and stores it
// (DATA_RECEIVED), or records the refusal. Nothing in the answer can
// change another request: it is found by the id of the request message it
// answers, and must come from that request's provider.
func (o *Office) handleResponse(ctx context.Context, m *sdk.Message) error {
	var rec *Record
	err := o.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketMessages).Get(m.CorrelationID[:])
		if id == nil {
			return nil
		}
		var err error
		rec, err = getRecord(tx, string(id))
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrRetry, closedErr(err))
	}
	if rec == nil {
		o.log.Warn("answer to no request of ours; dropped", "peer", m.From, "correlation_id", m.CorrelationID.String())
		return nil
	}
	id := rec.Request.ID
	log := o.log.With("request", id, "peer", m.From, "message_id", m.ID.String())
	if m.From != rec.Request.Provider {
		log.Warn("answer from another member than the request's provider; dropped")
		return nil
	}
	if rec.Request.Status != contactdata.StatusDataRequested {
		log.Info("answer to a request that is " + string(rec.Request.Status) + "; dropped")
		return nil
	}

	self, err := o.self(ctx)
	if err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	}
	list, refusal := o.open(m, rec, self, log)
	if err := o.update(id, func(r *Record) error {
		if r.Request.Status != contactdata.StatusDataRequested {
			return errDone // aborted meanwhile
		}
		if refusal != nil {
			r.Refusal = refusal
			rec = r
			return nil
		}
		if err := contactdata.Transition(r.Request.Status, contactdata.StatusDataReceived); err != nil {
			return err
		}
		r.Request.Status = contactdata.StatusDataReceived
		r.GuestList, r.ReceivedAt, r.ResponseID, r.Refusal = list, time.Now().UTC(), m.ID, nil
		rec = r
		return nil
	}); err != nil {
		if errors.Is(err, errDone) {
			log.Info("request withdrawn while its answer was opened; answer dropped")
			return nil
		}
		return fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	}
	if list != nil {
		// The key has done its work: without it, nothing sealed to this
		// request opens again.
		if err := o.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Delete([]byte(id)) }); err != nil {
			log.Error("deleting the request's key failed", "err", err)
		}
		log.Info("guest list received", "guests", len(list.Guests))
	} else {
		log.Warn("no guest list accepted", "refusal", refusal.Error())
	}
	if o.cfg.Updated != nil {
		o.cfg.Updated(rec)
	}
	return nil
}

var errDone = errors.New("guestlist: request no longer waits for an answer")

// open reads a provider's answer: the guest list, checked against rec's
// request, or why there is none.
func (o *Office) open(m *sdk.Message, rec *Record, self string, log *slog.Logger) (*contactdata.GuestList, *Refusal) {
	var ans Answer
	if err := m.Result(&ans); err != nil {
		if e, ok := errors.AsType[*sdk.Error](err); ok {
			return nil, refusalOf(e, true)
		}
		return nil, &Refusal{Code: CodeInvalidGuestList, Message: "the answer is not a guest-list answer: " + err.Error()}
	}
	id := rec.Request.ID
	switch {
	case ans.DataRequestID != id:
		return nil, refusalOf(fieldError(CodeInvalidGuestList, "data_request_id", "must be the id of the request"), false)
	case ans.GuestList == nil:
		return nil, refusalOf(fieldError(CodeInvalidGuestList, "guest_list", "is required"), false)
	}
	key, ok, err := o.key(id)
	if err != nil || !ok {
		log.Error("the request's key is missing", "err", err)
		return nil, &Refusal{Code: CodeInvalidGuestList, Message: "the request's key is missing"}
	}
	pt, err := seal.Open(ans.GuestList, ListContext(self, id), []pki.SealPrivateKey{key})
	if err != nil {
		return nil, refusalOf(fieldError(CodeInvalidGuestList, "guest_list", "must be sealed to the request's key for this office"), false)
	}
	var list contactdata.GuestList
	if err := contactdata.Decode(pt, &list); err != nil {
		return nil, refusalOf(validationError(CodeInvalidGuestList, "", err), false)
	}
	if err := list.ValidateFor(&rec.Request); err != nil {
		return nil, refusalOf(validationError(CodeInvalidGuestList, "", err), false)
	}
	return &list, nil
}

// self returns this member's name, from the endpoint server.
func (o *Office) self(ctx context.Context) (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.name != "" {
		return o.name, nil
	}
	name, err := memberName(ctx, o.cfg.Client)
	if err != nil {
		return "", err
	}
	o.name = name
	return name, nil
}

// memberName asks the endpoint server whose it is.
func memberName(ctx context.Context, c *sdk.Client) (string, error) {
	p, err := c.Ping(ctx)
	if err != nil {
		return "", err
	}
	id, err := pki.ParseID(p.Member)
	if err != nil {
		return "", err
	}
	return id.Name, nil
}
