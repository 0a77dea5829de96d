//go:build !linux

package splice

import "net"

// waitReadable is a no-op where io.Copy does not splice: there is no pipe to
// give back, and the burst loop still works.
func waitReadable(*net.TCPConn) error { return nil }
