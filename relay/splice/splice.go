// Package splice copies between two TCP connections the way Kurier's
// proxies need: in the kernel (io.Copy between *net.TCPConn uses splice(2)
// on Linux, so bytes never enter user space) without holding a splice pipe
// while the connection is idle.
//
// io.Copy keeps its pipe pair (two descriptors and a kernel buffer) for as
// long as it blocks on an idle source. Copy instead waits until the source is
// readable without reading from it, then splices one burst under a short
// read deadline and gives the pipe back. An idle relayed connection then
// costs two sockets and no pipes.
package splice

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Copy copies src to dst until src reaches EOF (it returns nil) or an error
// occurs (it returns it; a deadline or Close from another goroutine ends it).
// After each burst of data it calls progress with the bytes moved, if
// progress is not nil. burst is how long one splice call may wait for more
// data before giving its pipe back; it must be positive. Copy does not close
// or half-close either connection, and it clears src's read deadline.
func Copy(dst, src *net.TCPConn, burst time.Duration, progress func(int64)) error {
	for {
		src.SetReadDeadline(time.Time{})
		if err := waitReadable(src); err != nil {
			return err
		}
		src.SetReadDeadline(time.Now().Add(burst))
		n, err := io.Copy(dst, src)
		if n > 0 && progress != nil {
			progress(n)
		}
		if err == nil {
			return nil
		}
		// A read deadline never strands bytes: the pipe is empty when the
		// kernel reports the source would block.
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
	}
}
