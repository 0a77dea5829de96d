package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/pki"
)

// Token is a bearer token. It redacts itself in logs and %v; write
// string(tok) where the token itself is needed.
type Token = jsonrpc.Token

// Client calls the local JSON-RPC API of this member's endpoint server.
// Set its fields before first use; after that a Client is safe for
// concurrent use and must not be copied.
type Client struct {
	// URL is the local API, e.g. "http://127.0.0.1:8321/". Required.
	URL string
	// Token, if not empty, is sent as the bearer token the endpoint server
	// requires (eps.Config.Token).
	Token Token
	// HTTPClient sends the requests. If nil, http.DefaultClient. It must
	// not time out requests sooner than the long-poll (Poller.Wait) and
	// synchronous calls (eps.Config.SyncTimeout, 30s by default) take.
	HTTPClient *http.Client

	once sync.Once
	rpc  *jsonrpc.Client
}

func (c *Client) call(ctx context.Context, method string, params, result any) error {
	c.once.Do(func() {
		c.rpc = &jsonrpc.Client{URL: c.URL, Token: c.Token, HTTPClient: c.HTTPClient, MaxResponseBytes: 64 << 20}
	})
	return rpcError(method, c.rpc.Call(ctx, method, params, result))
}

// Call calls service of member synchronously and returns its result
// decoded into a Res. params are encoded with encoding/json and must
// encode to a JSON object or array (nil sends none); the endpoint server
// seals them to member's key, and opens the answer.
//
// An error answer is an *Error matching one of the sentinels by code:
// ErrNotAllowed and ErrUnknownMember from the directory, ErrUnavailable,
// ErrTimeout, or whatever code member's software answered with. Call
// blocks until the answer arrives, the endpoint server's sync timeout
// passes, or ctx ends.
func Call[Res any](ctx context.Context, c *Client, member, service string, params any) (Res, error) {
	var res Res
	if strings.Contains(member, ".") || member == "" || service == "" {
		return res, fmt.Errorf("%w: call %q of member %q", ErrInvalidParams, service, member)
	}
	err := c.call(ctx, member+"."+service, params, &res)
	return res, err
}

// SendOptions adjust Send. The zero value sends a request that the
// endpoint server tries to deliver for its default deadline (24h).
type SendOptions struct {
	// Deadline is when delivery stops (the state becomes expired). If
	// zero, the endpoint server's default.
	Deadline time.Time
	// Notification sends a notification: the recipient's software gets it
	// but sends no answer back.
	Notification bool
	// CorrelationID, if not zero, sends a response to the request with
	// that id, which must have come from the recipient. The params are
	// the result: the endpoint server wraps them as {"result": …} (see
	// Message.Result), so do not wrap them yourself. Answers given by a
	// handler are sent by the endpoint server itself; this is for answers
	// given later.
	CorrelationID MessageID
	// MessageID, if not zero, is the id the message is sent under: the
	// software's idempotency key for requests and notifications. Sending
	// the same message with the same id again (after a lost answer or a
	// crash) returns the message already queued instead of a second one;
	// another message with a used id is refused (ErrInvalidParams). Choose
	// it with NewMessageID and store it before sending. Responses
	// (CorrelationID) get their id from the endpoint server.
	MessageID MessageID
}

type sendParams struct {
	To            string          `json:"to"`
	Service       string          `json:"service"`
	Params        json.RawMessage `json:"params,omitempty"`
	Sealed        any             `json:"sealed,omitempty"`
	MessageID     *MessageID      `json:"message_id,omitempty"`
	CorrelationID *MessageID      `json:"correlation_id,omitempty"`
	Notification  bool            `json:"notification,omitempty"`
	Deadline      *time.Time      `json:"deadline,omitempty"`
}

func (o SendOptions) apply(p *sendParams) {
	if !o.Deadline.IsZero() {
		d := o.Deadline.UTC()
		p.Deadline = &d
	}
	p.Notification = o.Notification
	if !o.MessageID.IsZero() && o.CorrelationID.IsZero() && p.MessageID == nil { // SendSealed's id stands
		id := o.MessageID
		p.MessageID = &id
	}
	if !o.CorrelationID.IsZero() {
		id := o.CorrelationID
		p.CorrelationID = &id
	}
}

// Send sends a message to service of member to asynchronously and returns
// its id once the endpoint server has stored it durably (it is then
// delivered at least once, and the recipient's endpoint server
// deduplicates). params is any value encoding/json can encode, or nil.
// The answer to a request arrives later as a KindResponse message whose
// CorrelationID is the returned id (Mux.HandleResponse); the delivery
// state is in Status.
//
// Errors: ErrQueueFull when the outbox for to is full, ErrNotAllowed,
// ErrUnknownMember, ErrTooLarge, ErrInvalidParams (for a bad deadline).
func (c *Client) Send(ctx context.Context, to, service string, params any, opts SendOptions) (MessageID, error) {
	p := sendParams{To: to, Service: service}
	if params != nil {
		b, err := json.Marshal(params)
		if err != nil {
			return MessageID{}, fmt.Errorf("sdk: send to %s.%s: encode params: %w", to, service, err)
		}
		p.Params = b
	}
	opts.apply(&p)
	return c.send(ctx, p)
}

func (c *Client) send(ctx context.Context, p sendParams) (MessageID, error) {
	var res struct {
		MessageID MessageID `json:"message_id"`
	}
	if err := c.call(ctx, "_send", p, &res); err != nil {
		return MessageID{}, err
	}
	if res.MessageID.IsZero() {
		return MessageID{}, fmt.Errorf("sdk: _send: %w: no message id", jsonrpc.ErrBadResponse)
	}
	return res.MessageID, nil
}

// Status returns the delivery state of a message this member sent with
// Send, with the recipient's receipt once delivered. A message the
// endpoint server no longer knows (never sent, or purged after its
// retention) is an error matching ErrInvalidParams.
func (c *Client) Status(ctx context.Context, id MessageID) (*Delivery, error) {
	var d Delivery
	if err := c.call(ctx, "_message", map[string]any{"message_id": id}, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Wait polls Status until the message's state is final and returns it.
// It blocks until then or until ctx ends. The state may be final without
// success: see Delivery.Err.
func (c *Client) Wait(ctx context.Context, id MessageID) (*Delivery, error) {
	delay := 20 * time.Millisecond
	for {
		d, err := c.Status(ctx, id)
		if err != nil || d.State.Final() {
			return d, err
		}
		if !sleep(ctx, delay) {
			return d, ctx.Err()
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// Directory returns the directory: the active members, their services,
// the services this member may call and their seal keys.
func (c *Client) Directory(ctx context.Context) (*Directory, error) {
	return c.DirectoryOf(ctx, "")
}

// DirectoryOf returns the directory as Directory does, but with only
// member's entry in Members, or none if member is not an active member:
// for a handler that needs the caller's entry, much less to fetch than
// every member's seal keys. An empty member lists every member.
func (c *Client) DirectoryOf(ctx context.Context, member string) (*Directory, error) {
	var p any
	if member != "" {
		p = map[string]string{"member": member}
	}
	var d Directory
	if err := c.call(ctx, "_directory", p, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// Ping checks that the endpoint server answers and returns who it is.
func (c *Client) Ping(ctx context.Context) (*Pong, error) {
	var p Pong
	if err := c.call(ctx, "_ping", nil, &p); err != nil {
		return nil, err
	}
	if _, err := pki.ParseID(p.Member); err != nil {
		return nil, fmt.Errorf("sdk: _ping: %w: member %q", jsonrpc.ErrBadResponse, p.Member)
	}
	return &p, nil
}

// PollOptions adjust Poll.
type PollOptions struct {
	// Max is the most messages returned; if zero, 10 (the endpoint server
	// caps it at 100).
	Max int
	// Wait is how long the endpoint server holds the request open if no
	// message is waiting (long-poll); whole seconds, at most 30. Zero
	// returns at once.
	Wait time.Duration
	// Lease is how long a returned message stays hidden from other polls
	// before it is offered again unless acknowledged; whole seconds. If
	// zero, the endpoint server's default (60s).
	Lease time.Duration
}

func seconds(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return int(min(math.Ceil(d.Seconds()), 3600))
}

// Poll fetches incoming messages (_poll): requests, responses and
// notifications stored in the inbox, synchronous requests whose callers
// wait, and status reports. Each except a status report must be
// acknowledged with Ack, or it is offered again after the lease. Most
// software uses a Poller instead.
func (c *Client) Poll(ctx context.Context, opts PollOptions) ([]*Message, error) {
	p := map[string]int{"max": opts.Max, "wait": seconds(opts.Wait)}
	if l := seconds(opts.Lease); l > 0 {
		p["lease"] = l
	}
	var res struct {
		Messages []item `json:"messages"`
	}
	if err := c.call(ctx, "_poll", p, &res); err != nil {
		return nil, err
	}
	out := make([]*Message, 0, len(res.Messages))
	var bad []error
	for i := range res.Messages {
		m, err := res.Messages[i].message()
		if err != nil {
			bad = append(bad, fmt.Errorf("message %s: %w", res.Messages[i].MessageID, err))
			continue
		}
		out = append(out, m)
	}
	if len(bad) > 0 {
		return out, fmt.Errorf("sdk: _poll: %w: %w", jsonrpc.ErrBadResponse, errors.Join(bad...))
	}
	return out, nil
}

// Ack acknowledges a polled message: the endpoint server marks it done
// and, for a request, sends the answer back: result if err is nil, else
// err as a JSON-RPC error (see Mux for how errors map to codes). Status
// reports need no Ack. Acknowledging twice is harmless; the first answer
// stands.
func (c *Client) Ack(ctx context.Context, m *Message, result any, err error) error {
	var a *answer
	if err != nil {
		e, _ := errorObject(err)
		a = &answer{Error: e}
	} else {
		var aerr error
		if a, aerr = resultAnswer(result); aerr != nil {
			return aerr
		}
	}
	return c.ack(ctx, m, a)
}

func (c *Client) ack(ctx context.Context, m *Message, a *answer) error {
	p := struct {
		MessageID MessageID       `json:"message_id"`
		From      string          `json:"from"`
		Result    json.RawMessage `json:"result,omitempty"`
		Error     *jsonrpc.Error  `json:"error,omitempty"`
	}{MessageID: m.ID, From: m.From}
	if a != nil && m.Kind == KindRequest {
		p.Result, p.Error = a.Result, a.Error
	}
	return c.call(ctx, "_ack", p, nil)
}
