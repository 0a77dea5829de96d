package sdk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/kurier-net/kurier/eps/jsonrpc"
	"github.com/kurier-net/kurier/pki"
)

// HandlerFunc handles a request or notification for one service. For a
// request, the result (encoded with encoding/json) or the error is the
// answer the endpoint server seals and sends back to m.From; for a
// notification both are only used to decide whether it was handled.
//
// An error is answered as a JSON-RPC error: an *Error with its code and
// message; an error wrapping a sentinel (ErrInvalidParams, ErrNotAllowed,
// …) with that code and the error's text; any other error as Internal
// error, with the detail only logged. An error wrapping ErrRetry, or any
// error once ctx has ended, is not an answer: the message stays
// unacknowledged and comes back later.
//
// ctx ends when the endpoint server gives up waiting (callback) or the
// Poller stops.
type HandlerFunc func(ctx context.Context, m *Message) (result any, err error)

// ResponseFunc handles a response to a request this member sent with
// Client.Send: m.CorrelationID is the request's id, m.Result decodes the
// answer. An error leaves the response unacknowledged (it comes back
// later) if it wraps ErrRetry; any other error is logged and the response
// dropped.
type ResponseFunc func(ctx context.Context, m *Message) error

// StatusFunc handles a delivery report on a message this member sent.
// Reports are best effort and not deduplicated; Client.Status has the
// durable state.
type StatusFunc func(ctx context.Context, r *Report) error

// Mux dispatches incoming messages to handlers by kind and service. It is
// served as a callback (Handler) or by a Poller, or both.
//
// Set Dedup and Logger before serving; register handlers before serving,
// or at any time (registration is safe for concurrent use). The zero Mux
// is ready to use.
//
// A request for a service without a handler is answered with Method not
// found; a notification or response without one is logged and dropped; a
// status report without one is ignored.
type Mux struct {
	// Dedup, if not nil, makes handling exactly once: a message (by sender
	// and id) recorded as handled is answered from the record without
	// calling its handler again, and deliveries of one message that
	// overlap wait for each other. See the package documentation.
	Dedup *Dedup
	// Logger receives the Mux's logs. If nil, logs are discarded.
	Logger *slog.Logger

	mu        sync.RWMutex // guards the handler maps and status
	handlers  map[string]HandlerFunc
	responses map[string]HandlerFunc // ResponseFuncs, as HandlerFuncs
	status    StatusFunc

	flightMu sync.Mutex               // guards flights
	flights  map[string]chan struct{} // message key → closed when its handling ends
}

// Handle registers h for requests and notifications of service. It panics
// if service is not a valid service name, h is nil, or service already has
// a handler.
func (mx *Mux) Handle(service string, h HandlerFunc) {
	mx.register(&mx.handlers, "Handle", service, h)
}

// HandleResponse registers h for responses to requests of service that
// this member sent with Client.Send. It panics as Handle does.
func (mx *Mux) HandleResponse(service string, h ResponseFunc) {
	var hf HandlerFunc
	if h != nil {
		hf = func(ctx context.Context, m *Message) (any, error) { return nil, h(ctx, m) }
	}
	mx.register(&mx.responses, "HandleResponse", service, hf)
}

// register adds h for service to *hs, for the Mux method called method.
func (mx *Mux) register(hs *map[string]HandlerFunc, method, service string, h HandlerFunc) {
	if err := pki.ValidServiceName(service); err != nil || h == nil {
		panic(fmt.Sprintf("sdk: Mux.%s(%q): invalid service name or nil handler", method, service))
	}
	mx.mu.Lock()
	defer mx.mu.Unlock()
	if _, dup := (*hs)[service]; dup {
		panic(fmt.Sprintf("sdk: Mux.%s(%q): service has a handler already", method, service))
	}
	if *hs == nil {
		*hs = map[string]HandlerFunc{}
	}
	(*hs)[service] = h
}

// HandleStatus registers h for delivery reports, replacing any earlier
// one.
func (mx *Mux) HandleStatus(h StatusFunc) {
	mx.mu.Lock()
	defer mx.mu.Unlock()
	mx.status = h
}

func (mx *Mux) logger() *slog.Logger {
	if mx.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return mx.Logger
}

func (mx *Mux) handler(m *Message) HandlerFunc {
	mx.mu.RLock()
	defer mx.mu.RUnlock()
	switch m.Kind {
	case KindRequest, KindNotification:
		return mx.handlers[m.Service]
	case KindResponse:
		return mx.responses[m.Service]
	}
	return nil
}

// outcome is what became of one delivery.
type outcome struct {
	// ack is set if the message is handled (or will never be) and is to be
	// acknowledged; else err says why not.
	ack bool
	err error
	// ans is a request's answer.
	ans *answer
	// dup is set if the answer came from the Dedup.
	dup bool
}

// dispatch handles one message: from the Dedup's record, or by its
// handler.
func (mx *Mux) dispatch(ctx context.Context, m *Message) outcome {
	log := mx.logger().With("peer", m.From, "service", m.Service, "message_id", m.ID.String(), "kind", string(m.Kind))
	if m.Kind == KindStatus {
		return mx.dispatchStatus(ctx, m, log)
	}
	h := mx.handler(m)
	if h == nil {
		if m.Kind == KindRequest {
			return outcome{ack: true, ans: &answer{Error: &jsonrpc.Error{
				Code: jsonrpc.CodeMethodNotFound, Message: fmt.Sprintf("no handler for service %q", m.Service),
			}}}
		}
		log.Warn("no handler; message dropped")
		return outcome{ack: true}
	}

	var hs *handling
	if d := mx.Dedup; d != nil {
		leave, err := mx.enter(ctx, string(doneKey(m.From, m.ID)))
		if err != nil {
			return outcome{err: err}
		}
		defer leave()
		rec, ok, err := d.lookup(m.From, m.ID)
		if err != nil {
			log.Error("dedup lookup failed; message left for later", "err", err)
			return outcome{err: err}
		}
		if ok {
			log.Debug("message handled before; answered from the dedup record")
			return outcome{ack: true, ans: rec.Answer, dup: true}
		}
		if late(m, time.Now()) {
			// Its record, if it was handled, may have been swept: it must
			// not be handled (again). The endpoint server drops such
			// messages in callback mode; _poll still hands them out.
			log.Warn("message long past its deadline and not in the dedup file; dropped unhandled", "deadline", m.Deadline)
			var a *answer
			if m.Kind == KindRequest {
				a = &answer{Error: &jsonrpc.Error{Code: jsonrpc.CodeExpired, Message: "the deadline passed long before the message could be handled"}}
			}
			return outcome{ack: true, ans: a}
		}
		hs = &handling{d: d, m: m}
		ctx = context.WithValue(ctx, handlingKey{}, hs)
	}

	res, herr := mx.run(ctx, h, m, log)
	if hs != nil {
		if ok, a := hs.recorded(); ok { // Dedup.Update recorded it with the effects
			return outcome{ack: true, ans: a}
		}
	}
	if herr != nil && (errors.Is(herr, ErrRetry) || ctx.Err() != nil) {
		log.Debug("message left for later", "err", herr)
		return outcome{err: herr}
	}
	var a *answer
	switch {
	case m.Kind != KindRequest:
		if herr != nil {
			log.Warn("handler failed; message dropped (return sdk.ErrRetry to have it again)", "err", herr)
		}
	case herr != nil:
		e, internal := errorObject(herr)
		if internal {
			log.Warn("handler failed; answered with Internal error", "err", herr)
		}
		a = &answer{Error: e}
	default:
		var err error
		if a, err = resultAnswer(res); err != nil {
			log.Warn("handler result cannot be encoded; answered with Internal error", "err", err)
			a = &answer{Error: jsonrpc.NewError(jsonrpc.CodeInternalError, nil)}
		}
	}
	if hs != nil {
		// If recording fails the answer still goes out: once the endpoint
		// server has it, it does not deliver the message again.
		if err := hs.d.record(m, a); err != nil {
			log.Error("recording a handled message in the dedup file failed", "err", err)
		}
	}
	return outcome{ack: true, ans: a}
}

func (mx *Mux) dispatchStatus(ctx context.Context, m *Message, log *slog.Logger) outcome {
	mx.mu.RLock()
	h := mx.status
	mx.mu.RUnlock()
	if h == nil {
		return outcome{ack: true}
	}
	r, err := m.Report()
	if err != nil {
		log.Warn("malformed status report dropped", "err", err)
		return outcome{ack: true}
	}
	if err := h(ctx, r); err != nil {
		log.Debug("status handler failed", "err", err)
		return outcome{err: err}
	}
	return outcome{ack: true}
}

// run calls h; a panic becomes an error.
func (mx *Mux) run(ctx context.Context, h HandlerFunc, m *Message, log *slog.Logger) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			err = fmt.Errorf("sdk: handler for %s panicked: %v", m.Service, p)
		}
	}()
	return h(ctx, m)
}

// enter waits until no other delivery of the message key is being
// handled, and marks this one as being handled until leave is called.
func (mx *Mux) enter(ctx context.Context, key string) (leave func(), err error) {
	for {
		mx.flightMu.Lock()
		ch, busy := mx.flights[key]
		if !busy {
			ch = make(chan struct{})
			if mx.flights == nil {
				mx.flights = map[string]chan struct{}{}
			}
			mx.flights[key] = ch
			mx.flightMu.Unlock()
			return func() {
				mx.flightMu.Lock()
				delete(mx.flights, key)
				mx.flightMu.Unlock()
				close(ch)
			}, nil
		}
		mx.flightMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
