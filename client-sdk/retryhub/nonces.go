package retryhub

import (
	"container/heap"
	"encoding/hex"
	"errors"
	"sync"
	"time"

	"github.com/retryhub/retryhub/client-sdk/protocol"
)

// maxNonces bounds how many nonces an executor remembers: about 60 bytes each, so 16 MB at
// most, enough for some 870 requests a second sustained over a signature window.
const maxNonces = 1 << 18

var (
	// errReplayed: the nonce was accepted before, within the signature window.
	errReplayed = errors.New("the request's nonce was accepted before")
	// errNoncesFull: the memory holds maxNonces nonces and none has expired.
	errNoncesFull = errors.New("too many recent requests to remember another nonce")
)

// nonceMemory remembers the nonces of the executor requests accepted within the signature
// window, so that a captured request sent again is refused. A nonce is kept until its request's
// timestamp leaves the window, when no receiver would accept the request anyway. When max nonces
// are kept, expired ones make room; if none has expired a new one is refused rather than an
// older one forgotten, since forgetting would let the forgotten request be sent again.
type nonceMemory struct {
	max int

	mu      sync.Mutex
	expires map[nonceKey]int64 // Unix ms after which the nonce is forgotten
	order   nonceHeap          // the same nonces, soonest expiry first
}

type nonceKey [protocol.NonceLen / 2]byte

func newNonceMemory(maxNonces int) *nonceMemory {
	return &nonceMemory{max: maxNonces, expires: make(map[nonceKey]int64)}
}

// remember records the nonce of a request stamped s, accepted now with the given window. It
// returns errReplayed for a nonce it holds, errNoncesFull when it has no room, or the nonce's
// decoding error.
func (m *nonceMemory) remember(s protocol.Stamp, now time.Time, window time.Duration) error {
	var k nonceKey
	if n, err := hex.Decode(k[:], []byte(s.Nonce)); err != nil || n != len(k) {
		return protocol.ErrBadNonce
	}
	exp := s.Timestamp + window.Milliseconds()
	nowMs := now.UnixMilli()
	m.mu.Lock()
	defer m.mu.Unlock()
	for len(m.order) > 0 && m.order[0].expires < nowMs {
		e := heap.Pop(&m.order).(nonceEntry)
		delete(m.expires, e.key)
	}
	if _, ok := m.expires[k]; ok {
		return errReplayed
	}
	if len(m.expires) >= m.max {
		return errNoncesFull
	}
	m.expires[k] = exp
	heap.Push(&m.order, nonceEntry{key: k, expires: exp})
	return nil
}

// len returns how many nonces are remembered.
func (m *nonceMemory) len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.expires)
}

type nonceEntry struct {
	key     nonceKey
	expires int64
}

// nonceHeap is a min-heap of nonces by expiry, for container/heap.
type nonceHeap []nonceEntry

func (h nonceHeap) Len() int           { return len(h) }
func (h nonceHeap) Less(i, j int) bool { return h[i].expires < h[j].expires }
func (h nonceHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *nonceHeap) Push(x any)        { *h = append(*h, x.(nonceEntry)) }
func (h *nonceHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
