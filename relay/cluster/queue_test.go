package cluster

import "testing"

// TestQueueKeepsEqualLengthMessages is the memberlist queue bug newQueue
// works around: a message queued while another of the same length is in
// flight must not replace it.
func TestQueueKeepsEqualLengthMessages(t *testing.T) {
	q := newQueue(func() int { return 3 }, 4)
	q.QueueBroadcast(&broadcast{name: "x", msg: make([]byte, 10)})
	if got := len(q.GetBroadcasts(0, 100)); got != 1 {
		t.Fatalf("GetBroadcasts returned %d messages, want 1", got)
	}
	q.QueueBroadcast(&broadcast{name: "y", msg: make([]byte, 10)})
	if got := len(q.GetBroadcasts(0, 10)); got != 1 { // room for one: y
		t.Fatalf("GetBroadcasts returned %d messages, want 1", got)
	}
	if got := q.NumQueued() - 1; got != 2 {
		t.Errorf("%d messages queued, want x and y", got)
	}
	for range 10 {
		q.GetBroadcasts(0, 100)
	}
	if got := q.NumQueued(); got != 1 {
		t.Errorf("%d entries left, want only the sentinel", got)
	}
}
