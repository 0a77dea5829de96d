package cluster

import (
	"testing"
	"time"
)

func TestDbgDir(t *testing.T) {
	env := newTestEnv(t, 3)
	key := newKey(t)
	a := startNode(t, "ra", key, env.verifier(t, 1))
	b := startNode(t, "rb", key, env.verifier(t, 1), a)
	c := startNode(t, "rc", key, env.verifier(t, 0), a)
	waitMembers(t, 3, a, b, c)
	waitFor(t, "c v1", func() bool { return c.ownDir() == 1 })
	if _, err := a.v.Update(env.dirs[1]); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		time.Sleep(200 * time.Millisecond)
		b.mu.RLock()
		o := b.tab.origins["ra"]
		t.Logf("drops b=%v a=%v c=%v", b.count("relay_cluster_messages_dropped_total"), a.count("relay_cluster_messages_dropped_total"), c.count("relay_cluster_messages_dropped_total"))
		t.Logf("b: ra dir=%d own=%d queued a=%d b=%d seen=%d", o.dir, b.ownDir(), a.bq.NumQueued(), b.bq.NumQueued(), a.dirSeen.Load())
		b.mu.RUnlock()
	}
}
