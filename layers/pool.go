package layers

import (
	"sync"
	"unsafe"
)

// directAlign is the alignment O_DIRECT needs of memory, offsets and lengths.
const directAlign = 4096

// bufPool recycles blocks of one size. Its blocks are aligned in memory, so that a store
// may write them with O_DIRECT.
type bufPool struct {
	size int
	p    sync.Pool
}

var (
	poolsMu sync.Mutex
	pools   = map[int]*bufPool{}
)

// getBufPool returns the process-wide pool of blocks of the given size.
func getBufPool(size int) *bufPool {
	poolsMu.Lock()
	defer poolsMu.Unlock()
	p := pools[size]
	if p == nil {
		p = &bufPool{size: size}
		pools[size] = p
	}
	return p
}

func (p *bufPool) get() []byte {
	if b, ok := p.p.Get().(*[]byte); ok {
		return *b
	}
	return alignedBytes(p.size)
}

func (p *bufPool) put(b []byte) {
	if cap(b) != p.size {
		return
	}
	b = b[:cap(b)]
	p.p.Put(&b)
}

// alignedBytes returns n bytes starting at a multiple of directAlign in memory.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1))
	return b[off : off+n : off+n]
}

// blocks is one Fetch's free list over the process-wide pool: a sync.Pool may drop its
// blocks at any collection (and does so often under the race detector), which would
// make the heap churn through the transfer instead of staying at its working set. What
// the free list holds goes back to the pool when the Fetch ends.
type blocks struct {
	pool *bufPool
	mu   sync.Mutex
	free [][]byte
}

// maxFree bounds a free list (its blocks are memory the transfer keeps in reserve).
const maxFree = 48

func (b *blocks) get() []byte {
	b.mu.Lock()
	if n := len(b.free); n > 0 {
		blk := b.free[n-1]
		b.free = b.free[:n-1]
		b.mu.Unlock()
		return blk
	}
	b.mu.Unlock()
	return b.pool.get()
}

func (b *blocks) put(blk []byte) {
	if cap(blk) != b.pool.size {
		return
	}
	b.mu.Lock()
	if len(b.free) < maxFree {
		b.free = append(b.free, blk[:cap(blk)])
		b.mu.Unlock()
		return
	}
	b.mu.Unlock()
	b.pool.put(blk)
}

// release returns the free list to the pool.
func (b *blocks) release() {
	b.mu.Lock()
	for _, blk := range b.free {
		b.pool.put(blk)
	}
	b.free = nil
	b.mu.Unlock()
}
