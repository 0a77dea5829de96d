package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"no path", Config{}},
		{"negative limit", Config{Path: filepath.Join(dir, "a.db"), Outbox: Limits{PerPeer: -1}}},
		{"negative retention", Config{Path: filepath.Join(dir, "b.db"), Retention: -time.Hour}},
		{"directory missing", Config{Path: filepath.Join(dir, "nope", "c.db")}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

func TestOpenLocked(t *testing.T) {
	s := openTest(t, Config{})
	// flock locks belong to an open file description, so a second Open in
	// the same process meets the lock as another process would.
	start := time.Now()
	s2, err := Open(Config{Path: s.cfg.Path, LockTimeout: 100 * time.Millisecond})
	if err == nil {
		s2.Close()
		t.Fatal("second Open succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v", d)
	}
	t.Log(err)
	s.Close()
	s3, err := Open(Config{Path: s.cfg.Path, SweepInterval: -1})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	s3.Close()
}

func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.db")
	s := openTest(t, Config{Path: path})
	out := newMsg("hd-1", Request)
	if err := s.Enqueue(out); err != nil {
		t.Fatal(err)
	}
	in := newMsg("vendor-a", Notification)
	r, _, err := s.Receive(in, receipt("a"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openTest(t, Config{Path: path})
	got, ok, err := s.Next("hd-1")
	if err != nil || !ok || got.ID != out.ID || string(got.Sealed) != string(out.Sealed) || got.State != Queued {
		t.Errorf("Next after reopen = %+v, %v, %v", got, ok, err)
	}
	r2, dup, err := s.Receive(in, receipt("b"))
	if err != nil || !dup || string(r2) != string(r) {
		t.Errorf("Receive after reopen = %q, %v, %v; want %q, true", r2, dup, err, r)
	}
	st, err := s.Stats()
	if err != nil || st != (Stats{1, int64(len(out.Sealed)), 1, int64(len(in.Sealed))}) {
		t.Errorf("Stats = %+v, %v", st, err)
	}
	checkInvariants(t, s)
}

func TestClosed(t *testing.T) {
	s := openTest(t, Config{})
	m := newMsg("hd-1", Request)
	if err := s.Enqueue(m); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	calls := map[string]error{}
	calls["Enqueue"] = s.Enqueue(newMsg("hd-1", Request))
	_, calls["Get"] = s.Get(m.ID)
	_, _, calls["Receive"] = s.Receive(newMsg("hd-1", Request), receipt("x"))
	_, calls["Pending"] = s.Pending(10)
	calls["MarkDelivered"] = s.MarkDelivered(m.ID, []byte("r"))
	_, calls["Sweep"] = s.Sweep()
	_, calls["Stats"] = s.Stats()
	for name, err := range calls {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

// TestCloseRacesWriters closes the store under writers: each write either
// succeeds and is durable, or fails with ErrClosed.
func TestCloseRacesWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eps.db")
	s := openTest(t, Config{Path: path})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stored []ID
	some := make(chan struct{}) // closed once 20 writes succeeded
	for i := range 8 {
		wg.Go(func() {
			for range 50 {
				m := newMsg(fmt.Sprintf("hd-%d", i), Notification)
				err := s.Enqueue(m)
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				stored = append(stored, m.ID)
				if len(stored) == 20 {
					close(some)
				}
				mu.Unlock()
			}
		})
	}
	<-some // then close in the middle of the writes
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	s = openTest(t, Config{Path: path})
	for _, id := range stored {
		if _, err := s.Get(id); err != nil {
			t.Errorf("acknowledged Enqueue lost: %v", err)
		}
	}
	checkInvariants(t, s)
}

// TestCommitIsolation: in one group commit, an operation that fails after
// writing rolls back alone; one rejected before writing costs nothing; a
// panic is an error; the rest commit.
func TestCommitIsolation(t *testing.T) {
	s := openTest(t, Config{})
	errBoom := errors.New("boom")
	var wg sync.WaitGroup
	results := make([]error, 60)
	for i := range results {
		wg.Go(func() {
			results[i] = s.write(0, func(tx *bolt.Tx) error {
				key := fmt.Appendf(nil, "test.%d", i)
				switch i % 4 {
				case 1:
					return reject(errBoom)
				case 2:
					tx.Bucket(bMeta).Put(key, []byte("x"))
					return errBoom
				case 3:
					tx.Bucket(bMeta).Put(key, []byte("x"))
					panic("broken operation")
				}
				return tx.Bucket(bMeta).Put(key, []byte("x"))
			})
		})
	}
	wg.Wait()
	s.db.View(func(tx *bolt.Tx) error {
		for i, err := range results {
			stored := tx.Bucket(bMeta).Get(fmt.Appendf(nil, "test.%d", i)) != nil
			switch i % 4 {
			case 0:
				if err != nil || !stored {
					t.Errorf("op %d: %v, stored %v; want nil, true", i, err, stored)
				}
			case 1, 2:
				if !errors.Is(err, errBoom) || stored {
					t.Errorf("op %d: %v, stored %v; want boom, false", i, err, stored)
				}
				if _, ok := errors.AsType[unchanged](err); ok {
					t.Errorf("op %d: unchanged marker leaked to the caller", i)
				}
			case 3:
				if err == nil || stored {
					t.Errorf("op %d: %v, stored %v; want panic error, false", i, err, stored)
				}
			}
		}
		return nil
	})
}

func TestStoppedAfterFailedCommit(t *testing.T) {
	s := openTest(t, Config{})
	errIO := errors.New("input/output error")
	s.stopped.Store(&errIO)
	err := s.Enqueue(newMsg("hd-1", Request))
	if !errors.Is(err, ErrStopped) || !errors.Is(err, errIO) {
		t.Errorf("Enqueue after failed commit: %v, want ErrStopped wrapping the cause", err)
	}
	if _, err := s.Stats(); err != nil {
		t.Errorf("reads after failed commit: %v", err)
	}
}

func TestID(t *testing.T) {
	id := NewID()
	got, err := ParseID(id.String())
	if err != nil || got != id {
		t.Errorf("ParseID(%s) = %s, %v", id, got, err)
	}
	for _, s := range []string{"", "00", id.String() + "0", "0123456789ABCDEF0123456789abcdef", "0123456789abcdef0123456789abcdeg"} {
		if _, err := ParseID(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseID(%q): %v, want ErrInvalid", s, err)
		}
	}
	for k := Request; k <= Notification; k++ {
		if got, err := ParseKind(k.String()); got != k || err != nil {
			t.Errorf("ParseKind(%q) = %v, %v", k, got, err)
		}
	}
}

func TestTruncateText(t *testing.T) {
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"abcdef", 3, "abc"},
		{"aäb", 2, "a"}, // ä is two bytes; don't split it
		{"aäb", 3, "aä"},
	} {
		if got := truncateText(tt.in, tt.n); got != tt.want {
			t.Errorf("truncateText(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// FuzzDecode: decoders of records read from the file never panic, and
// what the encoders write decodes to the same thing.
func FuzzDecode(f *testing.F) {
	m := newMsg("hd-1", Response)
	f.Add(encodeMessage(&m, true))
	f.Add((&outState{state: Delivering, seq: 7, attempts: 3, peer: "hd-1", lastError: "x", receipt: []byte("r")}).encode())
	f.Add((&inState{flags: inAcked, seq: 9, receipt: []byte("r"), answer: []byte("a")}).encode())
	f.Add((&peerRec{nextSeq: 3, count: 2, bytes: 100, hasDue: true, dueAt: time.Unix(1, 0)}).encode())
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMessage(ID{1}, b, true); err == nil {
			if got, err := decodeMessage(ID{1}, encodeMessage(&m, true), true); err != nil || got.Peer != m.Peer || string(got.Sealed) != string(m.Sealed) || !got.Deadline.Equal(m.Deadline) {
				t.Errorf("message round trip: %+v, %v; want %+v", got, err, m)
			}
		}
		if st, err := decodeOutState(b); err == nil {
			if got, err := decodeOutState(st.encode()); err != nil || got.seq != st.seq || got.peer != st.peer || string(got.receipt) != string(st.receipt) {
				t.Errorf("outbox state round trip: %+v, %v; want %+v", got, err, st)
			}
		}
		if st, err := decodeInState(b); err == nil {
			if got, err := decodeInState(st.encode()); err != nil || got.seq != st.seq || got.digest != st.digest || string(got.answer) != string(st.answer) {
				t.Errorf("inbox state round trip: %+v, %v; want %+v", got, err, st)
			}
		}
		decodePeer(b, "p")
		splitInKey(b)
	})
}
