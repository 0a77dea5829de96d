package cluster

import (
	"bytes"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate receives memberlist's callbacks. They run on memberlist's
// goroutines, some on its packet loop and the event callbacks with its node
// lock held: they only touch the cluster's own state, never call back into
// memberlist, and never block on the network.
type delegate struct{ c *Cluster }

var (
	_ memberlist.Delegate      = (*delegate)(nil)
	_ memberlist.EventDelegate = (*delegate)(nil)
)

// NodeMeta implements memberlist.Delegate. Nodes carry no metadata.
func (d *delegate) NodeMeta(limit int) []byte { return nil }

// NotifyMsg implements memberlist.Delegate: a gossip message or a request
// or reply sent over a stream. b is reused after the call.
func (d *delegate) NotifyMsg(b []byte) {
	c := d.c
	if !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	m, err := decode(b, c.lim)
	if err != nil {
		c.m.dropped.WithLabelValues(dropReason(err)).Inc()
		c.log.Debug("undecodable cluster message", "err", err)
		return
	}
	switch m := m.(type) {
	case routesMsg:
		c.mu.Lock()
		out := c.tab.applyDelta(m, time.Now())
		c.mu.Unlock()
		c.count(out)
		if out.fresh {
			c.queue(routesKey(m), bytes.Clone(b)) // pass it on: epidemic spread
		}
	case dirMsg:
		c.mu.Lock()
		out := c.tab.applyDir(m)
		c.mu.Unlock()
		c.count(out)
		if out.fresh {
			c.queue("d/"+m.origin, bytes.Clone(b))
			if m.version > c.ownDir() {
				c.wakeDir()
			}
		}
	case forwardMsg:
		c.serveForward(m)
	case fetchDirMsg:
		c.serveFetchDir(m)
	case pullMsg:
		c.servePull(m)
	case refusedMsg:
		c.serveRefused(m)
	case replyMsg:
		c.resolve(m)
	default: // state travels only by push/pull
		c.m.dropped.WithLabelValues("unknown_type").Inc()
	}
}

// GetBroadcasts implements memberlist.Delegate: it packs own route changes
// into messages and hands out what fits in the gossip packet.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	if !d.c.gate.enter() {
		return nil
	}
	defer d.c.gate.leave()
	d.c.flush()
	return d.c.bq.GetBroadcasts(overhead, limit)
}

// LocalState implements memberlist.Delegate: everything this relay knows,
// for a push/pull.
func (d *delegate) LocalState(join bool) []byte {
	c := d.c
	if !c.gate.enter() {
		return nil
	}
	defer c.gate.leave()
	dir := c.ownDir()
	c.mu.RLock()
	recs := c.tab.records(dir, maxState)
	c.mu.RUnlock()
	b, err := encode(stateMsg{records: recs})
	if err != nil { // cannot happen: records bounds the size
		c.log.Error("encode cluster state", "err", err)
		return nil
	}
	return b
}

// MergeRemoteState implements memberlist.Delegate: it merges what another
// relay knows, after a push/pull or a join.
func (d *delegate) MergeRemoteState(b []byte, join bool) {
	c := d.c
	if !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	m, err := decode(b, c.lim)
	if err != nil {
		c.m.dropped.WithLabelValues(dropReason(err)).Inc()
		c.log.Debug("undecodable cluster state", "err", err)
		return
	}
	st, ok := m.(stateMsg)
	if !ok {
		c.m.dropped.WithLabelValues("unknown_type").Inc()
		return
	}
	now := time.Now()
	var newest uint64
	for _, r := range st.records {
		c.mu.Lock()
		out := c.tab.applyRecord(r, now)
		c.mu.Unlock()
		c.count(out)
		if r.origin != c.cfg.Name {
			newest = max(newest, r.dir)
		}
	}
	if newest > c.ownDir() {
		c.wakeDir()
	}
}

// NotifyJoin implements memberlist.EventDelegate.
func (d *delegate) NotifyJoin(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.Name || !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	nn := *n
	c.mu.Lock()
	c.nodes[n.Name] = &nn
	c.tab.addOrigin(n.Name, time.Now())
	c.members.Store(int64(len(c.nodes) + 1))
	c.mu.Unlock()
	c.log.Info("relay joined the cluster", "peer", n.Name, "remote_addr", n.Address())
}

// NotifyLeave implements memberlist.EventDelegate: a relay that left or
// failed takes its routes with it.
func (d *delegate) NotifyLeave(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.Name || !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	c.mu.Lock()
	delete(c.nodes, n.Name)
	c.tab.dropOrigin(n.Name)
	c.members.Store(int64(len(c.nodes) + 1))
	c.mu.Unlock()
	c.failCalls(n.Name)
	c.wakeJoin() // with JoinDirectory, a relay still in the directory is sought again
	c.log.Info("relay left the cluster", "peer", n.Name, "remote_addr", n.Address())
}

// NotifyUpdate implements memberlist.EventDelegate.
func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	c := d.c
	if n.Name == c.cfg.Name || !c.gate.enter() {
		return
	}
	defer c.gate.leave()
	nn := *n
	c.mu.Lock()
	if _, ok := c.nodes[n.Name]; ok {
		c.nodes[n.Name] = &nn
	}
	c.mu.Unlock()
}

// count records what applying a remote message dropped.
func (c *Cluster) count(out outcome) {
	if out.drop != "" {
		c.m.dropped.WithLabelValues(out.drop).Inc()
	}
	if out.overLimit > 0 {
		c.m.dropped.WithLabelValues("over_limit").Add(float64(out.overLimit))
	}
}
