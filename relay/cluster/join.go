package cluster

import (
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/kurier-net/kurier/pki"
)

const (
	// joinRetryMin and joinRetryMax bound the wait between join attempts
	// while some relay to join is not a member: it starts at the first and
	// doubles up to the second.
	joinRetryMin = 500 * time.Millisecond
	joinRetryMax = 30 * time.Second
)

// Start joins the cluster in the background and returns at once; it never
// waits for the network. It joins the relays in Config.Join until one of
// them answered and, with Config.JoinDirectory, every relay the directory
// names that is not a member: those of the directory the Verifier holds now
// and of each newer one, and those that leave or fail later. While some are
// missing it retries, 0.5s after the first failure and doubling up to 30s;
// a new directory version retries at once. SetLocal must be called first.
// Start may be called once; the attempts end with Shutdown.
func (c *Cluster) Start() error {
	if c.getLocal() == nil {
		return errors.New("cluster: SetLocal must be called before Start")
	}
	if !c.started.CompareAndSwap(false, true) {
		return errors.New("cluster: Start called twice")
	}
	if !c.goTracked(c.joinLoop) {
		return ErrClosed
	}
	return nil
}

// joinLoop is Start's goroutine.
func (c *Cluster) joinLoop() {
	v := c.cfg.Verifier
	var (
		retry  <-chan time.Time // fires when the next attempt is due; nil if none is
		delay  time.Duration    // the last wait between attempts; 0 after a success
		warned bool             // a failure while alone was logged at Warn
	)
	attempt := true
	for {
		changed := v.Changed()
		if attempt {
			attempt, retry = false, nil
			if addrs := c.joinTargets(); len(addrs) > 0 {
				if c.tryJoin(addrs, &warned) {
					delay = 0
				} else {
					delay = min(max(2*delay, joinRetryMin), joinRetryMax)
					retry = time.After(delay)
				}
			}
		}
		select {
		case <-c.done:
			return
		case <-changed: // a new directory version may name other relays
			attempt, delay = true, 0
		case <-c.joinWake: // a member left; the backoff, if running, stands
			attempt = retry == nil
		case <-retry:
			attempt = true
		}
	}
}

// tryJoin joins addrs and reports whether no relay is left to join. warned
// is set when a failure while alone is logged at Warn, so that the retries
// log at Debug, and cleared once this relay has company.
func (c *Cluster) tryJoin(addrs []string, warned *bool) bool {
	alone := c.members.Load() == 1
	n, err := c.ml.Load().Join(addrs)
	switch {
	case n > 0 && alone:
		c.log.Info("joined cluster", "members", c.members.Load())
	case err != nil && alone && !*warned:
		*warned = true
		c.log.Warn("could not join the relay cluster yet; serving alone and retrying", "remote_addr", strings.Join(addrs, ","), "err", err)
	case err != nil:
		c.log.Debug("relays to join did not answer", "remote_addr", strings.Join(addrs, ","), "err", err)
	}
	if c.members.Load() > 1 {
		*warned = false
	}
	return len(c.joinTargets()) == 0
}

// joinTargets returns the addresses to join now: Config.Join while this
// relay is alone, and with Config.JoinDirectory the gossip endpoints of the
// relays in the directory that are not members.
func (c *Cluster) joinTargets() []string {
	alone := c.members.Load() == 1
	var out []string
	if alone {
		out = append(out, c.cfg.Join...)
	}
	if !c.cfg.JoinDirectory {
		return out
	}
	snap := c.cfg.Verifier.Current()
	if snap == nil {
		return out
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, m := range snap.Dir.Members {
		if m.Role != pki.RoleRelay || m.Suspended || m.Relay == nil || m.Relay.Gossip == "" || m.Name == c.cfg.Name {
			continue
		}
		if _, ok := c.nodes[m.Name]; ok {
			continue
		}
		if !slices.Contains(out, m.Relay.Gossip) {
			out = append(out, m.Relay.Gossip)
		}
	}
	return out
}

// wakeJoin tells the join loop that a member left.
func (c *Cluster) wakeJoin() {
	select {
	case c.joinWake <- struct{}{}:
	default:
	}
}
