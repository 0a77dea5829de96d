package sdk

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestSweep: records are kept until an hour after the message's deadline;
// a message without a record that long past its deadline is not handled.
func TestSweep(t *testing.T) {
	d, err := OpenDedup(filepath.Join(t.TempDir(), "dedup.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	runs := 0
	mx := &Mux{Dedup: d}
	mx.Handle("submit", func(context.Context, *Message) (any, error) { runs++; return "ok", nil })
	now := time.Now()
	msg := func(kind Kind, deadline time.Duration) *Message {
		return &Message{ID: NewMessageID(), From: "vendor-a", Kind: kind, Service: "submit", Deadline: now.Add(deadline)}
	}
	old, recent, live := msg(KindRequest, -2*time.Hour), msg(KindNotification, -50*time.Minute), msg(KindRequest, time.Hour)
	for _, m := range []*Message{old, recent} { // handled before they were late
		if err := d.record(m, &answer{Result: []byte(`"ok"`)}); err != nil {
			t.Fatal(err)
		}
	}
	if o := mx.dispatch(t.Context(), live); !o.ack || o.dup || runs != 1 {
		t.Fatalf("dispatch = %+v after %d runs", o, runs)
	}
	if o := mx.dispatch(t.Context(), old); !o.dup || string(o.ans.Result) != `"ok"` || runs != 1 {
		t.Errorf("late message with a record = %+v, want the recorded answer", o)
	}
	n, err := d.Sweep(now)
	if err != nil || n != 1 {
		t.Errorf("Sweep = %d, %v; want 1 record removed", n, err)
	}
	for _, tt := range []struct {
		m    *Message
		want bool
	}{{old, false}, {recent, true}, {live, true}} {
		if got, err := d.Handled(tt.m.From, tt.m.ID); got != tt.want || err != nil {
			t.Errorf("Handled(deadline %v) = %v, %v; want %v", tt.m.Deadline, got, err, tt.want)
		}
	}
	// Its record swept, the late message must not be handled again.
	if o := mx.dispatch(t.Context(), old); !o.ack || o.dup || o.ans.Error == nil || o.ans.Error.Code != -32007 || runs != 1 {
		t.Errorf("late message without a record = %+v (error %v) after %d runs", o, o.ans.Error, runs)
	}
	if o := mx.dispatch(t.Context(), msg(KindNotification, -time.Hour)); !o.ack || o.ans != nil || runs != 1 {
		t.Errorf("late notification = %+v after %d runs", o, runs)
	}
	if n, err := d.Sweep(now.Add(3 * time.Hour)); err != nil || n != 2 {
		t.Errorf("Sweep later = %d, %v; want 2", n, err)
	}
}

// TestOverlappingDeliveries: a delivery of a message being handled waits
// for the first and is answered from its record; one whose context ends
// first is left for later.
func TestOverlappingDeliveries(t *testing.T) {
	d, err := OpenDedup(filepath.Join(t.TempDir(), "dedup.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	entered, release := make(chan struct{}), make(chan struct{})
	runs := 0
	mx := &Mux{Dedup: d}
	mx.Handle("submit", func(context.Context, *Message) (any, error) {
		runs++ // only ever one handler at a time for this message
		close(entered)
		<-release
		return runs, nil
	})
	m := &Message{ID: NewMessageID(), From: "vendor-a", Kind: KindRequest, Service: "submit", Deadline: time.Now().Add(time.Hour)}
	first := make(chan outcome)
	go func() { first <- mx.dispatch(context.Background(), m) }()
	<-entered

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	if o := mx.dispatch(ctx, m); o.ack || o.err == nil {
		t.Errorf("overlapping dispatch whose context ended = %+v, want not acknowledged", o)
	}
	second := make(chan outcome)
	go func() { second <- mx.dispatch(context.Background(), m) }()
	close(release)
	o1, o2 := <-first, <-second
	if !o1.ack || o1.dup || !o2.ack || !o2.dup || string(o1.ans.Result) != "1" || string(o2.ans.Result) != "1" || runs != 1 {
		t.Errorf("first %+v, second %+v, runs %d", o1, o2, runs)
	}
}
