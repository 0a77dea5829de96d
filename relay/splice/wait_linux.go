package splice

import (
	"net"
	"syscall"
)

// waitReadable blocks until c has data, EOF or an error to report, without
// consuming anything. It honours c's read deadline.
func waitReadable(c *net.TCPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var b [1]byte
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		_, _, e := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if e == syscall.EAGAIN || e == syscall.EWOULDBLOCK {
			return false // not yet: let the poller wait
		}
		if e == syscall.EINTR {
			return false
		}
		werr = nil // data, EOF (0 bytes) or an error the next read reports
		return true
	})
	if err != nil {
		return err
	}
	return werr
}
