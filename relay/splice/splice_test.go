package splice

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

func pipes(t *testing.T) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc/self/fd")
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

func fds(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

// TestCopy moves data in bursts with idle gaps between them, ends at EOF,
// and reports every byte.
func TestCopy(t *testing.T) {
	client, in := pair(t)  // client writes into in
	out, server := pair(t) // Copy writes out; server reads
	var moved atomic.Int64
	done := make(chan error, 1)
	go func() { done <- Copy(out, in, 20*time.Millisecond, func(n int64) { moved.Add(n) }) }()

	var want bytes.Buffer
	for i := range 5 {
		chunk := make([]byte, 100_000*(i+1))
		rand.Read(chunk)
		want.Write(chunk)
		if _, err := client.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // idle longer than a burst
	}
	client.CloseWrite()
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(server); got <- b }()
	if err := <-done; err != nil {
		t.Fatalf("Copy = %v, want nil at EOF", err)
	}
	out.CloseWrite()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("copied %d bytes, want %d identical", len(b), want.Len())
	}
	if moved.Load() != int64(want.Len()) {
		t.Errorf("progress reported %d bytes, want %d", moved.Load(), want.Len())
	}
}

// TestIdleHoldsNoPipe: while the source is idle, Copy holds no pipe (on
// Linux a blocked io.Copy would hold two descriptors for one).
func TestIdleHoldsNoPipe(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Log("splice pipes exist only on Linux; checking the copy only")
	}
	_, in := pair(t)
	out, _ := pair(t)
	base, basePipes := fds(t), pipes(t)
	done := make(chan error, 1)
	go func() { done <- Copy(out, in, 10*time.Millisecond, nil) }()
	time.Sleep(100 * time.Millisecond) // several bursts' worth of idleness
	// Go keeps spare splice pipes in a pool, so count against the baseline.
	if n, p := fds(t), pipes(t); n > base || p > basePipes {
		t.Errorf("idle Copy holds %d extra descriptors (%d extra pipe ends)", n-base, p-basePipes)
	}
	in.Close()
	if err := <-done; err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Copy after the source was closed = %v, want net.ErrClosed", err)
	}
}
