package cluster

import (
	"crypto/tls"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/kurier-net/kurier/pki"
	"github.com/kurier-net/kurier/pki/pkitest"
)

// relayMember is the directory entry of relay c publishing gossip.
func relayMember(c *tls.Certificate, gossip string) pki.Member {
	m := pkitest.Member(c, "Relay")
	m.Relay.Gossip = gossip
	return m
}

// TestStartJoinsDirectory starts two relays the way a first start does:
// no directory yet, no Config.Join. Each serves alone until a directory
// naming the other's gossip endpoint arrives, and then they are one
// cluster.
func TestStartJoinsDirectory(t *testing.T) {
	checkGoroutines(t)
	ca := pkitest.NewCA(t, testNet, time.Now())
	c1, c2 := ca.Issue(t, pki.RoleRelay, "r1"), ca.Issue(t, pki.RoleRelay, "r2")
	key := newKey(t)
	var nodes []*testNode
	for _, name := range []string{"r1", "r2"} {
		n := newNode(t, Config{Name: name, SecretKey: key, Verifier: ca.Verifier(t, nil), JoinDirectory: true})
		if err := n.Start(); err != nil {
			t.Fatalf("%s: Start: %v", name, err)
		}
		nodes = append(nodes, n)
	}
	a, b := nodes[0], nodes[1]
	if err := a.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	if len(a.Members()) != 1 || len(b.Members()) != 1 {
		t.Fatalf("members %v and %v with no directory, want each alone", a.Members(), b.Members())
	}

	signed := ca.Sign(t, ca.Directory(relayMember(c1, a.Addr()), relayMember(c2, b.Addr())))
	for _, n := range nodes {
		if _, err := n.v.Update(signed); err != nil {
			t.Fatal(err)
		}
	}
	waitMembers(t, 2, a, b)

	// One relay leaves and comes back; the other still has it in its
	// directory and the returning one joins by it too.
	shutdown(t, b.Cluster)
	waitMembers(t, 1, a)
	_, port, _ := net.SplitHostPort(b.Addr())
	p, _ := strconv.Atoi(port)
	b2 := newNode(t, Config{Name: "r2", SecretKey: key, Verifier: ca.Verifier(t, nil), BindPort: p, JoinDirectory: true})
	if err := b2.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := b2.v.Update(signed); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, 2, a, b2)
}

// TestStartRetries names a relay in the directory before it listens: the
// first attempts fail, and a retry joins it once it is up.
func TestStartRetries(t *testing.T) {
	checkGoroutines(t)
	ca := pkitest.NewCA(t, testNet, time.Now())
	c1, c2 := ca.Issue(t, pki.RoleRelay, "r1"), ca.Issue(t, pki.RoleRelay, "r2")
	key := newKey(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	laterAddr := ln.Addr().String()
	ln.Close() // r2 binds it later; until then joins are refused

	tap := newLogTap(testLogger(t).Handler())
	a := newNode(t, Config{Name: "r1", SecretKey: key, Verifier: ca.Verifier(t, nil), JoinDirectory: true, Logger: slog.New(tap)})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	signed := ca.Sign(t, ca.Directory(relayMember(c1, a.Addr()), relayMember(c2, laterAddr)))
	if _, err := a.v.Update(signed); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "r1 to report that it could not join", func() bool { return tap.count("could not join") > 0 })

	_, port, _ := net.SplitHostPort(laterAddr)
	p, _ := strconv.Atoi(port)
	// r2 has no directory and no Config.Join: only r1's retry brings them
	// together.
	b := newNode(t, Config{Name: "r2", SecretKey: key, Verifier: ca.Verifier(t, nil), BindPort: p})
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, 2, a, b)
	if n := tap.count("could not join"); n != 1 {
		t.Errorf("%d warnings that r1 could not join, want 1 (retries log at Debug)", n)
	}
}

// TestStartStaticJoin checks that Config.Join alone still works through
// Start, and that Start with nothing to join starts a cluster of one.
func TestStartStaticJoin(t *testing.T) {
	checkGoroutines(t)
	env := newTestEnv(t, 1)
	key := newKey(t)
	a := newNode(t, Config{Name: "r1", SecretKey: key, Verifier: env.verifier(t, 1)})
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	b := newNode(t, Config{Name: "r2", SecretKey: key, Verifier: env.verifier(t, 1)}, a)
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	waitMembers(t, 2, a, b)
}
