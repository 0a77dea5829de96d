package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The crash test runs the store in a child process (this test binary,
// re-executed) that writes as fast as it can from several goroutines and
// reports every operation that returned success on stdout. The parent
// kills it with SIGKILL at a random moment, reopens the file and checks
// that everything reported survived and that the invariants hold.
const (
	envCrashPath = "KURIER_STORE_CRASH_PATH" // set in the child: the store file
	envCrashRun  = "KURIER_STORE_CRASH_RUN"  // set in the child: the run number
	crashWorkers = 8
	crashKills   = 30
)

func TestCrash(t *testing.T) {
	if path := os.Getenv(envCrashPath); path != "" {
		run, _ := strconv.Atoi(os.Getenv(envCrashRun))
		crashChild(path, uint32(run))
		return
	}
	path := filepath.Join(t.TempDir(), "eps.db")
	acked := newCrashLog()
	start := time.Now()
	var unreported, tombstones int
	runs := 0
	for run := range crashKills {
		if time.Since(start) > 25*time.Second {
			t.Logf("stopping after %d kills: time budget spent", run)
			break
		}
		lines, stderr := crashOnce(t, path, run, time.Duration(1+rand.IntN(60))*time.Millisecond)
		got := parseCrashLog(t, lines)
		acked.add(got)
		u, tombs := verifyAfterCrash(t, path, run, acked)
		unreported += u
		tombstones = tombs
		if t.Failed() {
			t.Fatalf("after kill %d (child stderr: %s)", run, stderr)
		}
		runs++
	}
	t.Logf("%d kills in %v: %d enqueued, %d delivered, %d received, %d acked with a response, %d acked; "+
		"%d enqueues found committed although the kill came before they were reported; "+
		"%d received messages were recognised by their tombstone",
		runs, time.Since(start).Round(time.Millisecond), len(acked.enqueued), len(acked.delivered),
		len(acked.received), len(acked.answered), len(acked.acked), unreported, tombstones)
}

// crashOnce starts a child on path, kills it after delay from its first
// line, and returns its complete stdout lines.
func crashOnce(t *testing.T, path string, run int, delay time.Duration) ([]string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$", "-test.count=1")
	cmd.Env = append(os.Environ(), envCrashPath+"="+path, envCrashRun+"="+strconv.Itoa(run))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	var lines []string
	var wg sync.WaitGroup
	wg.Go(func() {
		r := bufio.NewReader(out)
		first := true
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return // EOF: a torn last line, if any, is dropped
			}
			if first {
				close(ready)
				first = false
				continue
			}
			lines = append(lines, strings.TrimSuffix(line, "\n"))
		}
	})
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		wg.Wait()
		cmd.Wait()
		t.Fatalf("child not ready: %s", stderr.String())
	}
	time.Sleep(delay) // the random moment of the kill
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	err = cmd.Wait()
	if ee, ok := errors.AsType[*exec.ExitError](err); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child ended with %v, not by the kill: %s", err, stderr.String())
	}
	return lines, stderr.String()
}

type inRef struct {
	peer string
	id   ID
}

type crashLog struct {
	enqueued  []ID             // in the order reported
	seen      map[ID]bool      // the same, as a set
	delivered map[ID]bool      //
	received  map[inRef]string // → receipt
	answered  map[inRef]ID     // → response
	acked     map[inRef]bool   //
	order     map[string][]ID  // enqueued per worker and recipient, in order
}

func newCrashLog() *crashLog {
	return &crashLog{seen: map[ID]bool{}, delivered: map[ID]bool{}, received: map[inRef]string{},
		answered: map[inRef]ID{}, acked: map[inRef]bool{}, order: map[string][]ID{}}
}

func (l *crashLog) add(o *crashLog) {
	l.enqueued = append(l.enqueued, o.enqueued...)
	for _, id := range o.enqueued {
		l.seen[id] = true
	}
	for k := range o.delivered {
		l.delivered[k] = true
	}
	for k, v := range o.received {
		l.received[k] = v
	}
	for k, v := range o.answered {
		l.answered[k] = v
	}
	for k := range o.acked {
		l.acked[k] = true
	}
	for k, v := range o.order {
		l.order[k] = append(l.order[k], v...)
	}
}

func parseCrashLog(t *testing.T, lines []string) *crashLog {
	t.Helper()
	l := newCrashLog()
	id := func(s string) ID {
		v, err := ParseID(s)
		if err != nil {
			t.Fatalf("child wrote %q: %v", s, err)
		}
		return v
	}
	for _, line := range lines {
		f := strings.Fields(line)
		switch {
		case len(f) == 4 && f[0] == "E": // E worker peer id
			l.enqueued = append(l.enqueued, id(f[3]))
			l.order[f[1]+"/"+f[2]] = append(l.order[f[1]+"/"+f[2]], id(f[3]))
		case len(f) == 2 && f[0] == "D":
			l.delivered[id(f[1])] = true
		case len(f) == 4 && f[0] == "R":
			l.received[inRef{f[1], id(f[2])}] = f[3]
		case len(f) == 4 && f[0] == "A":
			l.answered[inRef{f[1], id(f[2])}] = id(f[3])
		case len(f) == 3 && f[0] == "K":
			l.acked[inRef{f[1], id(f[2])}] = true
		default:
			t.Fatalf("child wrote %q", line)
		}
	}
	return l
}

// verifyAfterCrash reopens the store after a kill and checks everything
// the children reported so far. It returns how many outbox messages of
// this run are stored that the child did not report (committed, then
// killed before the report), and how many received messages are
// remembered by their tombstone only.
func verifyAfterCrash(t *testing.T, path string, run int, l *crashLog) (unreported, tombstones int) {
	t.Helper()
	s, err := Open(Config{Path: path, LockTimeout: 5 * time.Second, SweepInterval: -1})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	checkInvariants(t, s)

	for _, id := range l.enqueued {
		if _, err := s.Get(id); err != nil {
			t.Errorf("Enqueue %s returned nil, but after the kill: %v", id, err)
		}
	}
	for id := range l.delivered {
		if o, err := s.Get(id); err != nil || o.State != Delivered || len(o.Receipt) == 0 {
			t.Errorf("MarkDelivered %s returned nil, but after the kill: %v, %v", id, o.State, err)
		}
	}
	for key, ids := range l.order {
		var last uint64
		for i, id := range ids {
			o, err := s.Get(id)
			if err != nil {
				continue // reported above
			}
			if i > 0 && o.Seq <= last {
				t.Errorf("%s: %s has seq %d after %d: acceptance order lost", key, id, o.Seq, last)
			}
			last = o.Seq
		}
	}
	for ref, r := range l.received {
		got, dup, err := s.Receive(Message{ID: ref.id, Kind: Request, Peer: ref.peer, Service: "contacts",
			Deadline: time.Now().Add(time.Hour), Sealed: crashSealed(ref.id)}, func() ([]byte, error) {
			return nil, errors.New("receipt asked for a message already received")
		})
		if err != nil || !dup || string(got) != r {
			t.Errorf("Receive %s/%s returned %q, but after the kill a retry gets %q, dup %v, %v", ref.peer, ref.id, r, got, dup, err)
		}
		if in, err := s.Received(ref.peer, ref.id); err == nil && in.Tombstone {
			tombstones++
		}
	}
	for ref, resp := range l.answered {
		in, err := s.Received(ref.peer, ref.id)
		if err != nil || !in.Acked || in.ResponseID != resp {
			t.Errorf("AckAndEnqueue %s/%s → %s returned nil, but after the kill: acked %v, response %s, %v", ref.peer, ref.id, resp, in.Acked, in.ResponseID, err)
		}
		if _, err := s.Get(resp); err != nil {
			t.Errorf("AckAndEnqueue %s/%s → %s returned nil, but the response: %v", ref.peer, ref.id, resp, err)
		}
	}
	for ref := range l.acked {
		if in, err := s.Received(ref.peer, ref.id); err != nil || !in.Acked {
			t.Errorf("Ack %s/%s returned nil, but after the kill: acked %v, %v", ref.peer, ref.id, in.Acked, err)
		}
	}
	// Operations that committed but whose report the kill cut off: they
	// show the kills land in the middle of operations.
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bOutMsg).ForEach(func(k, v []byte) error {
			m, err := decodeMessage(ID(k), v, false)
			if err == nil && m.Kind == Notification && !l.seen[ID(k)] && binary.BigEndian.Uint32(k) == uint32(run)+1 {
				unreported++
			}
			return nil
		})
	})
	return unreported, tombstones
}

// crashSealed is the envelope of the child's messages: derived from the
// id, so that the parent can deliver them again.
func crashSealed(id ID) []byte {
	return bytes.Repeat(id[:], 8)
}

// crashID packs run, worker, iteration and kind into an id, so ids never
// repeat across runs.
func crashID(run uint32, worker, i int, kind byte) ID {
	var id ID
	binary.BigEndian.PutUint32(id[0:], run+1)
	binary.BigEndian.PutUint16(id[4:], uint16(worker))
	binary.BigEndian.PutUint64(id[6:], uint64(i))
	id[14] = kind
	id[15] = 1
	return id
}

// crashChild is the child: it never returns; it is killed.
func crashChild(path string, run uint32) {
	s, err := Open(Config{
		Path:          path,
		LockTimeout:   5 * time.Second,
		Retention:     time.Millisecond, // trim acked records to tombstones at once
		SweepInterval: 3 * time.Millisecond,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	emit := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		io.WriteString(os.Stdout, fmt.Sprintf(format, args...)+"\n") // one write per line
	}
	die := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		os.Exit(3)
	}
	emit("ready")
	for w := range crashWorkers {
		go func() {
			for i := 0; ; i++ {
				peer := fmt.Sprintf("hd-%d", i%3)
				deadline := time.Now().Add(time.Hour)

				// Outbox: enqueue one, deliver or retry the head of another.
				m := Message{ID: crashID(run, w, i, 0), Kind: Notification, Peer: peer, Service: "contacts", Deadline: deadline}
				m.Sealed = crashSealed(m.ID)
				switch err := s.Enqueue(m); {
				case err == nil:
					emit("E %d %s %s", w, peer, m.ID)
				case !errors.Is(err, ErrQueueFull):
					die("enqueue: %v", err)
				}
				if head, ok, err := s.Next(fmt.Sprintf("hd-%d", (i+w)%3)); err != nil {
					die("next: %v", err)
				} else if ok && i%4 == 3 {
					if err := s.MarkAttempt(head.ID, errors.New("connection refused"), time.Now().Add(time.Second)); err != nil && !errors.Is(err, ErrNotPending) {
						die("mark attempt: %v", err)
					}
				} else if ok {
					switch err := s.MarkDelivered(head.ID, []byte("receipt:"+head.ID.String())); {
					case err == nil:
						emit("D %s", head.ID)
					case !errors.Is(err, ErrNotPending): // another worker finished it
						die("mark delivered: %v", err)
					}
				}

				// Inbox: receive one, twice; acknowledge it.
				sender := fmt.Sprintf("vendor-%d", w%2)
				in := Message{ID: crashID(run, w, i, 1), Kind: Request, Peer: sender, Service: "contacts", Deadline: deadline}
				in.Sealed = crashSealed(in.ID)
				r, dup, err := s.Receive(in, func() ([]byte, error) {
					return fmt.Appendf(nil, "receipt:%s:%d", in.ID, rand.Uint64()), nil
				})
				if errors.Is(err, ErrInboxFull) {
					continue
				}
				if err != nil || dup {
					die("receive: %v, dup %v", err, dup)
				}
				emit("R %s %s %s", sender, in.ID, r)
				if r2, dup, err := s.Receive(in, func() ([]byte, error) { return []byte("second receipt"), nil }); err != nil || !dup || string(r2) != string(r) {
					die("receive again: %q, %v, %v; want %q", r2, dup, err, r)
				}
				if i%2 == 0 {
					resp := Message{ID: crashID(run, w, i, 2), Kind: Response, Peer: sender, Service: "contacts",
						CorrelationID: in.ID, Deadline: deadline}
					resp.Sealed = crashSealed(resp.ID)
					switch err := s.AckAndEnqueue(sender, in.ID, resp); {
					case err == nil:
						emit("A %s %s %s", sender, in.ID, resp.ID)
					case !errors.Is(err, ErrQueueFull):
						die("ack and enqueue: %v", err)
					}
				} else {
					if err := s.Ack(sender, in.ID, []byte("ok")); err != nil {
						die("ack: %v", err)
					}
					emit("K %s %s", sender, in.ID)
				}
			}
		}()
	}
	select {} // until killed
}
