package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/kurier-net/kurier/eps/seal"
)

// SealFor seals params for a request to service of member to, so that the
// plaintext never reaches this member's endpoint server: it fetches to's
// seal key and this member's name from the endpoint server (_directory),
// encrypts the JSON encoding of params with HPKE to that key (eps/seal's
// format, unsigned, bound to sender, recipient, service, kind "request"
// and a new message id), and returns the envelope and the id it is bound
// to. Pass both to SendSealed or CallSealed, which have the endpoint
// server sign the envelope without opening it.
//
// The envelope can only be sent as that one request: another recipient,
// service, kind or id does not open. Errors: ErrUnknownMember,
// ErrNotAllowed (the directory does not let this member call the
// service), ErrSealed (to has no seal key), ErrTooLarge.
func SealFor(ctx context.Context, c *Client, to, service string, params any) (*seal.Envelope, MessageID, error) {
	dir, err := c.DirectoryOf(ctx, to)
	if err != nil {
		return nil, MessageID{}, err
	}
	m, ok := dir.Member(to)
	if !ok {
		return nil, MessageID{}, fmt.Errorf("%w: %q is not an active member of %s", ErrUnknownMember, to, dir.Network)
	}
	if !slices.Contains(m.Callable, service) {
		return nil, MessageID{}, fmt.Errorf("%w: %s may not call %s.%s", ErrNotAllowed, dir.Self, to, service)
	}
	key, err := m.sealKey()
	if err != nil {
		return nil, MessageID{}, err
	}
	pt, err := json.Marshal(params)
	if err != nil {
		return nil, MessageID{}, fmt.Errorf("sdk: seal for %s.%s: encode params: %w", to, service, err)
	}
	id := NewMessageID()
	env, err := seal.SealUnsigned(key, seal.Context{Sender: dir.Self, Recipient: to, Service: service, Kind: seal.KindRequest, MessageID: id.String()}, pt)
	switch {
	case errors.Is(err, seal.ErrTooLarge):
		return nil, MessageID{}, fmt.Errorf("%w: seal for %s.%s: %w", ErrTooLarge, to, service, err)
	case errors.Is(err, seal.ErrMalformed): // the context: an invalid service name
		return nil, MessageID{}, fmt.Errorf("sdk: seal for %s.%s: %w", to, service, err)
	case err != nil: // the key
		return nil, MessageID{}, fmt.Errorf("%w: seal for %s.%s: %w", ErrSealed, to, service, err)
	}
	return env, id, nil
}

// SendSealed sends an envelope from SealFor as the asynchronous request it
// was sealed for (see Send); the endpoint server signs it without opening
// it. env and id must come from one SealFor call for to and service.
// opts.Notification and opts.CorrelationID are refused: SealFor seals
// requests.
func (c *Client) SendSealed(ctx context.Context, to, service string, env *seal.Envelope, id MessageID, opts SendOptions) (MessageID, error) {
	if opts.Notification || !opts.CorrelationID.IsZero() {
		return MessageID{}, fmt.Errorf("%w: a sealed message is sent as the request SealFor sealed it for", ErrInvalidParams)
	}
	if env == nil || id.IsZero() {
		return MessageID{}, fmt.Errorf("%w: SendSealed needs the envelope and id from SealFor", ErrInvalidParams)
	}
	p := sendParams{To: to, Service: service, Sealed: env, MessageID: &id}
	opts.apply(&p)
	return c.send(ctx, p)
}

// CallSealed is Call with an envelope from SealFor as the params (see
// SendSealed). The answer is sealed to this member's key and opened by
// the endpoint server, as for Call, unless it passes payloads on sealed
// (eps.Config.PassSealed): the result is then {"sealed": …,
// "message_id": …, "from": …}.
func CallSealed[Res any](ctx context.Context, c *Client, to, service string, env *seal.Envelope, id MessageID) (Res, error) {
	var res Res
	if env == nil || id.IsZero() {
		return res, fmt.Errorf("%w: CallSealed needs the envelope and id from SealFor", ErrInvalidParams)
	}
	p := struct {
		To        string         `json:"to"`
		Service   string         `json:"service"`
		Sealed    *seal.Envelope `json:"sealed"`
		MessageID MessageID      `json:"message_id"`
	}{to, service, env, id}
	err := c.call(ctx, "_call", p, &res)
	return res, err
}
