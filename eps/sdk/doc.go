// Package sdk is the Go SDK for the software of health offices and app
// vendors that talks to its member's Kurier endpoint server (eps): it calls
// other members' services, sends messages, and handles the messages other
// members send, exactly once.
//
// # Calling other members
//
// A Client speaks the endpoint server's local JSON-RPC API:
//
//	c := &sdk.Client{URL: "http://127.0.0.1:8321/", Token: sdk.Token(token)}
//	guests, err := sdk.Call[[]Guest](ctx, c, "vendor-a", "guest-lists", Query{Location: "Café Rot"})
//
// Call is synchronous. Send stores a message durably in the endpoint
// server's outbox and returns its id; the endpoint server delivers it with
// retries until the recipient's signed receipt arrives (Status, Wait) or
// the deadline passes. The recipient's answer comes back later as a
// response (Mux.HandleResponse).
//
// Errors the endpoint server or the other side answer with are *Error
// values that match sentinels with errors.Is: ErrNotAllowed,
// ErrUnknownMember, ErrUnavailable, ErrTimeout, ErrQueueFull, ErrTooLarge,
// ErrExpired, ErrSealed, and the JSON-RPC ErrMethodNotFound,
// ErrInvalidParams and ErrInternal.
//
// # Handling messages
//
// A Mux maps services to handlers. The endpoint server hands it messages
// either by callback, serving Mux.Handler as eps.Config.Callback, or by
// long-poll, running a Poller. Either way the sender (Message.From) is
// what the endpoint server says, the verified TLS peer that sent the
// message; a payload field cannot claim to be someone else, because the
// SDK never reads identity from payloads. A callback handler refuses
// requests without the endpoint server's bearer token
// (eps.Config.CallbackToken), so nothing else on the machine can pose as
// the endpoint server.
//
// A request's handler returns the answer, which the endpoint server seals
// and sends back; notifications, responses and status reports have their
// own handlers. A handler that returns ErrRetry leaves the message with
// the endpoint server, which delivers it again later.
//
// # Exactly once
//
// The endpoint server stores every received message before it receipts
// it, deduplicates deliveries from other members by (sender, id), and
// marks a message done only when local software has acknowledged it (a
// callback answered with 2xx, or _ack). It therefore hands a message to
// local software at least once: again after a callback failed or timed
// out, after a poll lease ran out, after the endpoint server restarted
// between the software's answer and its acknowledgement, or when the
// software crashed in between. Each delivery carries the same message id.
//
// Software that must not handle a message twice gives its Mux a Dedup, a
// bbolt file of its own (OpenDedup). Before calling a handler the Mux
// looks up (sender, id): a message recorded as handled is acknowledged
// again with the recorded answer, and the handler is not called. After
// the handler returns, the Mux records "handled, with this answer" and
// only then answers the endpoint server. Deliveries of one message that
// overlap (a retry while the first attempt still runs) wait for each
// other. Records are kept until an hour after the message's deadline. The
// endpoint server does not deliver a message past its deadline by
// callback, but _poll still hands it out; so that a swept record cannot
// let a message be handled twice, a Mux with a Dedup does not handle a
// message without a record more than half an hour past its deadline: it
// acknowledges it unhandled (a request with an Expired error).
//
// That leaves one window: the software crashes after the handler's effects
// happened but before the record was written. The message comes back, no
// record is found, and the handler runs again. Software for which that
// matters keeps its effects in the Dedup's file and writes them with
// Dedup.Update from the handler: the effects and the record commit in one
// bbolt transaction, so either both happened or neither did, and a
// message's effects in that file happen exactly once:
//
//	mux.Handle("submit", func(ctx context.Context, m *sdk.Message) (any, error) {
//		var s Submission
//		if err := m.Decode(&s); err != nil {
//			return nil, err // answered with Invalid params
//		}
//		// Slow work (validation, lookups) here, outside the transaction.
//		return dedup.Update(ctx, func(tx *bbolt.Tx) (any, error) {
//			b, err := tx.CreateBucketIfNotExists([]byte("cases"))
//			if err != nil {
//				return nil, err
//			}
//			n, _ := b.NextSequence()
//			return Case{Number: n}, b.Put(key(n), encode(s))
//		})
//	})
//
// Effects outside the file (a call to another system) cannot join the
// transaction; make them idempotent by passing the message id along (for
// example as an idempotency key), or do them after Update, accepting that
// a crash may then skip them.
//
// Without a Dedup the Mux is at least once: a message may reach its handler
// more than once.
//
// # Sealing in the software
//
// Software that does not want its endpoint server to see payloads at all
// seals them itself: SealFor fetches the recipient's public seal key from
// the endpoint server's directory and seals the params to it; SendSealed
// and CallSealed hand the envelope over, and the endpoint server signs it
// without being able to open it. The recipient's endpoint server opens it,
// or, with eps.Config.PassSealed, hands it on sealed, and the recipient's
// software opens it with Message.Open and the seal key it keeps. Answers
// are sealed to the member's key and so opened by its endpoint server,
// unless that passes payloads on sealed too.
package sdk
