//go:build linux

package proxy

import (
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// tcpInfoSupported reports whether idleFor works on this system.
const tcpInfoSupported = true

// idleFor returns how long the kernel has seen no data sent or received on c
// (TCP_INFO last_data_sent and last_data_recv), without touching the data
// path, so spliced connections stay spliced. ok is false if it cannot tell.
func idleFor(c *net.TCPConn) (idle time.Duration, ok bool) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	var gerr error
	err = raw.Control(func(fd uintptr) {
		info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if err != nil || gerr != nil {
		return 0, false
	}
	return time.Duration(min(info.Last_data_recv, info.Last_data_sent)) * time.Millisecond, true
}
