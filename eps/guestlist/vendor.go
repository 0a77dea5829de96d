package guestlist

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/kurier-net/kurier/eps/contactdata"
	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/eps/sdk"
	"github.com/kurier-net/kurier/pki"
)

// ErrUnknownLocation, returned (wrapped) by VendorConfig.Guests, refuses a
// request for a location that is not the provider's (CodeUnknownLocation).
var ErrUnknownLocation = errors.New("guestlist: not a location of this provider")

// VendorConfig configures a Vendor.
type VendorConfig struct {
	// Client is the provider's endpoint server's local API. Required.
	Client *sdk.Client
	// Path is the provider's bbolt file of requests it answered (mode
	// 0600). It holds no guest data: only the requests, the sealed
	// answers (which only the requesting office can open) and receipts.
	// Required. One process at a time may open it.
	Path string
	// HasLocation reports whether the location is one of the provider's.
	// If nil, every location is, and Guests refuses unknown ones by
	// returning ErrUnknownLocation.
	HasLocation func(ctx context.Context, locationID string) (bool, error)
	// Guests returns the guests of r.Request.LocationID whose stay
	// overlaps the window from r.Request.Start to r.Request.End. Required.
	// It is called once per request (a repeated request is answered with
	// the stored answer). Its error is answered as sdk.Mux answers a
	// handler's; ErrUnknownLocation as CodeUnknownLocation, and one
	// wrapping sdk.ErrRetry leaves the request for later.
	Guests func(ctx context.Context, r *Incoming) ([]contactdata.Guest, error)
	// Notified, if not nil, is called when the office closes (CLOSED) or
	// aborts (ABORTED) a request; r.Status and r.Reason say which and
	// why. It is called at least once per notice: an error leaves the
	// notice for later.
	Notified func(ctx context.Context, r *VendorRecord) error
	// MaxGuestListSize bounds a guest list's JSON, in bytes. If zero,
	// MaxGuestListSize; more than that is refused too.
	MaxGuestListSize int
	// Logger receives the vendor's logs. If nil, logs are discarded.
	Logger *slog.Logger
}

// Incoming is a request as Guests sees it.
type Incoming struct {
	// Office is the requesting health office: the verified sender.
	Office  string
	Request contactdata.DataRequest
}

// VendorRecord is a request as the provider keeps it.
type VendorRecord struct {
	Office  string                  `json:"office"`
	Request contactdata.DataRequest `json:"request"`
	// Status is where the request stands for the provider:
	// DATA_RECEIVED once the guest list is sent, then CLOSED or ABORTED as
	// the office notifies.
	Status contactdata.Status `json:"status"`
	Reason string             `json:"reason,omitempty"`
	// Digest identifies the request message (request and key); the same
	// id with another digest is a conflict.
	Digest []byte `json:"digest"`
	// Answer is the sealed answer, kept to answer a repeated request
	// alike. It is dropped when the request is closed or aborted.
	Answer *Answer `json:"answer,omitempty"`
	Guests int     `json:"guests"`
	// RequestMessageID is the message that asked; ResponseID the one that
	// answered, and Receipt the office's endpoint server's signed receipt
	// for it, once looked up (Vendor.WaitDelivered).
	RequestMessageID sdk.MessageID   `json:"request_message_id"`
	ResponseID       sdk.MessageID   `json:"response_id,omitzero"`
	Receipt          json.RawMessage `json:"receipt,omitempty"`
	UpdatedAt        time.Time       `json:"updated_at"`
}

// ResponseReceipt decodes Receipt; nil if there is none yet.
func (r *VendorRecord) ResponseReceipt() (*sdk.Receipt, error) { return decodeReceipt(r.Receipt) }

// Vendor is a provider's side of guest-list requests. It is safe for
// concurrent use.
type Vendor struct {
	cfg VendorConfig
	db  *bolt.DB
	log *slog.Logger

	mu    sync.Mutex // guards locks
	locks map[string]chan struct{}
}

var bucketAnswered = []byte("answered") // office \x00 request id → VendorRecord

// OpenVendor opens or creates the provider's file.
func OpenVendor(cfg VendorConfig) (*Vendor, error) {
	if cfg.Client == nil || cfg.Path == "" || cfg.Guests == nil {
		return nil, errors.New("guestlist: VendorConfig needs a Client, a Path and Guests")
	}
	if cfg.MaxGuestListSize <= 0 || cfg.MaxGuestListSize > MaxGuestListSize {
		cfg.MaxGuestListSize = MaxGuestListSize
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := openDB(cfg.Path, bucketAnswered)
	if err != nil {
		return nil, err
	}
	return &Vendor{cfg: cfg, db: db, log: log, locks: map[string]chan struct{}{}}, nil
}

// CloseStore closes the provider's file. Handlers must have returned.
func (v *Vendor) CloseStore() error { return v.db.Close() }

// Register registers the guest-lists service on mux.
func (v *Vendor) Register(mux *sdk.Mux) { mux.Handle(Service, v.Handle) }

func vendorKey(office, id string) []byte { return append(append([]byte(office), 0), id...) }

// Get returns the record of office's request id.
func (v *Vendor) Get(office, id string) (*VendorRecord, error) {
	var rec *VendorRecord
	err := v.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = getVendorRecord(tx, office, id)
		return err
	})
	return rec, closedErr(err)
}

func getVendorRecord(tx *bolt.Tx, office, id string) (*VendorRecord, error) {
	b := tx.Bucket(bucketAnswered).Get(vendorKey(office, id))
	if b == nil {
		return nil, fmt.Errorf("%w: %q from %s", ErrNotFound, id, office)
	}
	var rec VendorRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("guestlist: record %s from %s: %w", id, office, err)
	}
	return &rec, nil
}

func (v *Vendor) put(rec *VendorRecord) error {
	rec.UpdatedAt = time.Now().UTC()
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return closedErr(v.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketAnswered).Put(vendorKey(rec.Office, rec.Request.ID), b)
	}))
}

// lock serialises the handling of one office's request id (a repeated
// delivery waits for the first).
func (v *Vendor) lock(ctx context.Context, key string) (unlock func(), err error) {
	for {
		v.mu.Lock()
		ch, busy := v.locks[key]
		if !busy {
			ch = make(chan struct{})
			v.locks[key] = ch
			v.mu.Unlock()
			return func() {
				v.mu.Lock()
				delete(v.locks, key)
				v.mu.Unlock()
				close(ch)
			}, nil
		}
		v.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Handle is the handler of the guest-lists service: requests (kind
// request) and the office's close and abort notices (kind notification).
func (v *Vendor) Handle(ctx context.Context, m *sdk.Message) (any, error) {
	switch m.Kind {
	case sdk.KindRequest:
		return v.handleRequest(ctx, m)
	case sdk.KindNotification:
		return nil, v.handleNotice(ctx, m)
	}
	return nil, nil
}

func (v *Vendor) handleRequest(ctx context.Context, m *sdk.Message) (any, error) {
	log := v.log.With("peer", m.From, "message_id", m.ID.String())
	dir, err := v.cfg.Client.DirectoryOf(ctx, m.From)
	if err != nil {
		return nil, fmt.Errorf("%w: directory: %w", sdk.ErrRetry, err)
	}
	if caller, ok := dir.Member(m.From); !ok || caller.Role != pki.RoleHealthOffice {
		log.Warn("guest-list request from a member that is not a health office; refused")
		return nil, fmt.Errorf("%w: %s is not a health office", sdk.ErrNotAllowed, m.From)
	}
	rm, err := decodeRequest(m.Params)
	if err != nil {
		log.Info("guest-list request refused", "err", err)
		return nil, err
	}
	req := &rm.Request
	if req.Provider != dir.Self {
		return nil, fieldError(jsonrpc.CodeInvalidParams, "request.provider", "must be this provider ("+dir.Self+")")
	}
	log = log.With("request", req.ID, "location", req.LocationID)
	canon, err := json.Marshal(rm)
	if err != nil {
		return nil, err
	}
	digest := sha256.Sum256(canon)

	unlock, err := v.lock(ctx, string(vendorKey(m.From, req.ID)))
	if err != nil {
		return nil, err
	}
	defer unlock()
	rec, err := v.Get(m.From, req.ID)
	switch {
	case errors.Is(err, ErrNotFound):
		rec = nil
	case err != nil:
		return nil, fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	case rec.Status == contactdata.StatusClosed || rec.Status == contactdata.StatusAborted:
		return nil, sdk.NewError(CodeWithdrawn, fmt.Sprintf("request %s was %s by the office", req.ID, rec.Status), nil)
	case !bytes.Equal(rec.Digest, digest[:]):
		return nil, sdk.NewError(CodeConflict, fmt.Sprintf("request id %s was used before for another request", req.ID), nil)
	case rec.Answer != nil:
		log.Info("repeated guest-list request; answered as before")
		return v.respond(ctx, m, rec, log)
	}

	if v.cfg.HasLocation != nil {
		ok, err := v.cfg.HasLocation(ctx, req.LocationID)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, unknownLocation(req.LocationID, dir.Self)
		}
	}
	guests, err := v.cfg.Guests(ctx, &Incoming{Office: m.From, Request: *req})
	if errors.Is(err, ErrUnknownLocation) {
		return nil, unknownLocation(req.LocationID, dir.Self)
	}
	if err != nil {
		return nil, err
	}
	list := &contactdata.GuestList{
		DataRequestID: req.ID, Provider: dir.Self, LocationID: req.LocationID,
		Start: req.Start, End: req.End, Guests: guests,
	}
	if err := list.ValidateFor(req); err != nil {
		// A bug in the provider's software: the office learns which fields
		// (rules never quote values), and so does the provider's log.
		log.Error("the guest list made for a request is not valid; refused", "err", err)
		return nil, validationError(CodeInvalidGuestList, "", err)
	}
	pt, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	if len(pt) > v.cfg.MaxGuestListSize {
		log.Error("the guest list is too large to send", "bytes", len(pt), "guests", len(guests))
		return nil, fieldError(jsonrpc.CodeTooLarge, "guests", fmt.Sprintf("must encode to at most %d bytes (the list has %d guests in %d bytes); ask for a shorter window", v.cfg.MaxGuestListSize, len(guests), len(pt)))
	}
	env, err := SealList(rm.SealKey, m.From, list)
	if err != nil {
		return nil, err
	}
	rec = &VendorRecord{
		Office: m.From, Request: *req, Status: contactdata.StatusDataReceived, Digest: digest[:],
		Answer: &Answer{DataRequestID: req.ID, GuestList: env}, Guests: len(guests), RequestMessageID: m.ID,
	}
	if err := v.put(rec); err != nil {
		return nil, fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	}
	log.Info("guest list sealed for the request", "guests", len(guests))
	return v.respond(ctx, m, rec, log)
}

func unknownLocation(id, self string) error {
	return sdk.NewError(CodeUnknownLocation, fmt.Sprintf("request.location_id: %q is not a location of %s", id, self),
		[]FieldError{{"request.location_id", "must be a location of the provider"}})
}

// respond sends rec's answer to m as a response of its own (so that the
// provider gets the office's receipt for it) and returns it as the
// handler's answer too: whichever reaches the endpoint server first
// stands, the other changes nothing. A synchronous request is answered by
// the return value alone.
func (v *Vendor) respond(ctx context.Context, m *sdk.Message, rec *VendorRecord, log *slog.Logger) (any, error) {
	if m.Sync {
		return rec.Answer, nil
	}
	id, err := v.cfg.Client.Send(ctx, m.From, Service, rec.Answer, sdk.SendOptions{CorrelationID: m.ID})
	switch {
	case errors.Is(err, sdk.ErrInvalidParams):
		// Already answered: a delivery repeated after the response went
		// out (its id is then unknown here).
		log.Info("request already answered", "err", err)
	case err != nil:
		return nil, fmt.Errorf("%w: send the answer: %w", sdk.ErrRetry, err)
	default:
		rec.RequestMessageID, rec.ResponseID = m.ID, id
		if err := v.put(rec); err != nil {
			log.Error("recording the response id failed", "err", err)
		}
	}
	return rec.Answer, nil
}

func (v *Vendor) handleNotice(ctx context.Context, m *sdk.Message) error {
	log := v.log.With("peer", m.From, "message_id", m.ID.String())
	var n Notice
	if err := sdk.DecodeStrict(m.Params, &n); err != nil {
		log.Warn("malformed guest-list notice dropped", "err", err)
		return nil
	}
	if n.Status != contactdata.StatusClosed && n.Status != contactdata.StatusAborted ||
		!utf8.ValidString(n.Reason) || utf8.RuneCountInString(n.Reason) > maxReason || n.DataRequestID == "" {
		log.Warn("malformed guest-list notice dropped", "status", string(n.Status))
		return nil
	}
	log = log.With("request", n.DataRequestID, "status", string(n.Status))
	unlock, err := v.lock(ctx, string(vendorKey(m.From, n.DataRequestID)))
	if err != nil {
		return err
	}
	defer unlock()
	rec, err := v.Get(m.From, n.DataRequestID)
	switch {
	case errors.Is(err, ErrNotFound):
		if n.Status != contactdata.StatusAborted {
			log.Warn("notice about a request not answered here; dropped")
			return nil
		}
		// Aborted before it was answered (or refused): remember it, so
		// that the request, should it still come, is refused.
		rec = &VendorRecord{Office: m.From, Request: contactdata.DataRequest{ID: n.DataRequestID}, Status: contactdata.StatusDataRequested, RequestMessageID: m.ID}
	case err != nil:
		return fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	case rec.Status == n.Status:
		return nil // a repeated notice
	}
	if err := contactdata.Transition(rec.Status, n.Status); err != nil {
		log.Warn("notice does not fit the request's status; dropped", "err", err)
		return nil
	}
	rec.Status, rec.Reason, rec.Answer = n.Status, n.Reason, nil
	if v.cfg.Notified != nil {
		if err := v.cfg.Notified(ctx, rec); err != nil {
			return fmt.Errorf("%w: %w", sdk.ErrRetry, err)
		}
	}
	if err := v.put(rec); err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrRetry, err)
	}
	log.Info("guest-list request " + string(n.Status) + " by the office")
	return nil
}

// WaitDelivered waits until the response to office's request id is
// delivered, or finally not, and stores the office's signed receipt on
// the record. A delivery that failed or expired is an error.
func (v *Vendor) WaitDelivered(ctx context.Context, office, id string) (*VendorRecord, error) {
	rec, err := v.Get(office, id)
	if err != nil {
		return nil, err
	}
	if rec.ResponseID.IsZero() {
		return rec, fmt.Errorf("guestlist: request %s from %s: no response id known", id, office)
	}
	d, err := v.cfg.Client.Wait(ctx, rec.ResponseID)
	if err != nil {
		return rec, err
	}
	if err := d.Err(); err != nil {
		return rec, err
	}
	unlock, err := v.lock(ctx, string(vendorKey(office, id)))
	if err != nil {
		return rec, err
	}
	defer unlock()
	if rec, err = v.Get(office, id); err != nil {
		return nil, err
	}
	if d.Receipt != nil {
		rec.Receipt = d.Receipt.Raw
		err = v.put(rec)
	}
	return rec, err
}
