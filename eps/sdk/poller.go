package sdk

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Poller fetches incoming messages from the endpoint server by long-poll
// (_poll), dispatches them to a Mux and acknowledges them (_ack) with the
// answer: the alternative to a callback for software that cannot accept
// connections. Set its fields, then call Run.
type Poller struct {
	// Client is the endpoint server's local API. Required.
	Client *Client
	// Mux handles the messages. Required.
	Mux *Mux
	// Wait is how long one _poll waits for a message; whole seconds, at
	// most 30. If zero, 25s.
	Wait time.Duration
	// Concurrency bounds the messages handled at once. If zero, 4. With
	// more than one, messages may be handled out of arrival order.
	Concurrency int
	// Lease is how long a fetched message stays hidden from other polls
	// before the endpoint server offers it again unless acknowledged. If
	// zero, the endpoint server's default (60s). A handler that may take
	// longer should have a longer lease; with a Dedup an overlapping
	// delivery only waits, without one it is handled again.
	Lease time.Duration
	// Logger receives the Poller's logs. If nil, the Mux's Logger.
	Logger *slog.Logger
}

// ackTimeout bounds an acknowledgement, which is sent even while the
// Poller stops.
const ackTimeout = 30 * time.Second

// Run polls, handles and acknowledges until ctx ends, then waits for the
// handlers in progress (whose context has ended too) and returns nil. If
// the local API refuses the Client (ErrNotAllowed: wrong token) Run
// returns that error; other failures are logged and retried with backoff.
// Run blocks; call it once at a time per Poller.
func (p *Poller) Run(ctx context.Context) error {
	if p.Client == nil || p.Mux == nil {
		return errors.New("sdk: Poller needs a Client and a Mux")
	}
	conc := p.Concurrency
	if conc <= 0 {
		conc = 4
	}
	wait := p.Wait
	if wait <= 0 {
		wait = 25 * time.Second
	}
	log := p.Logger
	if log == nil {
		log = p.Mux.logger()
	}
	slots := make(chan struct{}, conc)
	release := func(n int) {
		for range n {
			<-slots
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var delay time.Duration
	for {
		select { // at least one free slot before asking for messages
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		n := 1
	more:
		for n < conc {
			select {
			case slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		msgs, err := p.Client.Poll(ctx, PollOptions{Max: n, Wait: wait, Lease: p.Lease})
		if err != nil && len(msgs) == 0 {
			release(n)
			switch {
			case ctx.Err() != nil:
				return nil
			case errors.Is(err, ErrNotAllowed):
				return err
			}
			delay = min(max(2*delay, 100*time.Millisecond), 5*time.Second)
			log.Warn("polling the endpoint server failed; retrying", "err", err, "retry_in", delay)
			if !sleep(ctx, delay+rand.N(delay/4)) {
				return nil
			}
			continue
		}
		if err != nil {
			log.Warn("the endpoint server returned malformed messages; they come back after the lease", "err", err)
		}
		delay = 0
		for i, m := range msgs {
			if i >= n { // more than asked for: wait for a slot
				select {
				case slots <- struct{}{}:
				case <-ctx.Done():
					return nil // unacknowledged: they come back after the lease
				}
			}
			wg.Go(func() {
				defer release(1)
				p.handle(ctx, m, log)
			})
		}
		release(n - min(n, len(msgs)))
	}
}

// handle dispatches one message and acknowledges it.
func (p *Poller) handle(ctx context.Context, m *Message, log *slog.Logger) {
	o := p.Mux.dispatch(ctx, m)
	if !o.ack || m.Kind == KindStatus { // status reports are not acknowledged
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ackTimeout)
	defer cancel()
	if err := p.Client.ack(actx, m, o.ans); err != nil {
		// A sync request whose caller gave up cannot be acknowledged; an
		// async one comes back after the lease, and is answered from the
		// Dedup if there is one.
		log.Warn("acknowledging a message failed", "peer", m.From, "message_id", m.ID.String(), "sync", m.Sync, "err", err)
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
