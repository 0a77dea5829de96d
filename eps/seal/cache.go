package seal

import "sync"

// cache is a bounded map safe for concurrent use. When full, put evicts an
// arbitrary entry (Go's map iteration starts at a random place), which
// keeps a working set smaller than the bound entirely and costs O(1); the
// caches here hold directory keys and member certificates, whose working
// set is the network's size.
type cache[K comparable, V any] struct {
	max int

	mu sync.Mutex // guards m
	m  map[K]V
}

func newCache[K comparable, V any](max int) *cache[K, V] {
	return &cache[K, V]{max: max, m: make(map[K]V)}
}

func (c *cache[K, V]) get(k K) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[k]
	return v, ok
}

func (c *cache[K, V]) put(k K, v V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[k]; !ok && len(c.m) >= c.max {
		for old := range c.m {
			delete(c.m, old)
			break
		}
	}
	c.m[k] = v
}

func (c *cache[K, V]) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
