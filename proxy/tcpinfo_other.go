//go:build !linux

package proxy

import (
	"net"
	"time"
)

// tcpInfoSupported reports whether idleFor works on this system. Elsewhere
// than Linux relayed connections are bounded by MaxAge (and Linger after a
// half-close) only.
const tcpInfoSupported = false

func idleFor(*net.TCPConn) (time.Duration, bool) { return 0, false }
