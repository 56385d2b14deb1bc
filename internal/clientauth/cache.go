package clientauth

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"net/http"
	"sync"
	"time"
)

// maxCacheEntries bounds the verdict cache: at ~200 bytes an entry, 100,000
// credentials cost about 20 MB, and a flood of distinct credentials evicts
// older verdicts rather than grow the node.
const maxCacheEntries = 100000

// cacheKey identifies what the auth server is shown, apart from the
// client's address: the forwarded headers (in configured order, every
// value) and the URI. The URI is in the key because a credential may read
// one stream and not another. Fields are length-prefixed so no two inputs
// hash the same bytes; hashing keeps credentials out of the map.
type cacheKey [sha256.Size]byte

func makeKey(fwd http.Header, names []string, uri string) cacheKey {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	put := func(s string) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	for _, name := range names {
		vs := fwd[name]
		put(name)
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(vs)))])
		for _, v := range vs {
			put(v)
		}
	}
	put(uri)
	var k cacheKey
	h.Sum(k[:0])
	return k
}

// verdictCache keeps decisions for ttl. Every entry lives the same ttl, so
// insertion order is also expiry order: the front of the list is both the
// first to expire and the oldest, and eviction (expired first, then the
// oldest) is popping the front.
type verdictCache struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	m     map[cacheKey]*list.Element
	order *list.List // of *cacheEntry, oldest first
}

type cacheEntry struct {
	key     cacheKey
	dec     Decision
	expires time.Time
}

func newVerdictCache(ttl time.Duration, max int) *verdictCache {
	return &verdictCache{ttl: ttl, max: max, m: make(map[cacheKey]*list.Element), order: list.New()}
}

func (c *verdictCache) get(k cacheKey, now time.Time) (Decision, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return Decision{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.remove(el)
		return Decision{}, false
	}
	return e.dec.clone(), true
}

func (c *verdictCache) put(k cacheKey, d Decision, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[k]; ok {
		c.remove(el)
	}
	for el := c.order.Front(); el != nil; el = c.order.Front() {
		if c.order.Len() < c.max && now.Before(el.Value.(*cacheEntry).expires) {
			break
		}
		c.remove(el)
	}
	c.m[k] = c.order.PushBack(&cacheEntry{key: k, dec: d.clone(), expires: now.Add(c.ttl)})
}

func (c *verdictCache) remove(el *list.Element) {
	delete(c.m, el.Value.(*cacheEntry).key)
	c.order.Remove(el)
}

func (c *verdictCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
