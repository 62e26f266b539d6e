package inflate

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Buffers of parts (a few MiB each) are reused through small free lists rather than
// sync.Pool, whose contents the collector sees as live between cycles: with buffers this
// large that made the heap grow far past what the parts in flight hold. A list keeps two
// buffers (one part being decoded, one waiting for the reader), so that a part rarely
// allocates, and zeroes, new ones; the rest are left to the collector. A part's
// compressed input has a list of its own: its size never changes.
var (
	freeIn      = make(freeList[byte], 2)
	freeBytes   = make(freeList[byte], 2)
	freeUint16s = make(freeList[uint16], 2)
	// partOut is the output of the last part decoded (in this process): a new part's
	// buffers start at that size and a tenth more, so that they rarely grow.
	partOut atomic.Int64
)

type freeList[E byte | uint16] chan []E

// get returns a buffer of n entries (not zeroed).
func (f freeList[E]) get(n int) []E {
	select {
	case b := <-f:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]E, n)
}

// put offers b for reuse; small buffers are not worth keeping.
func (f freeList[E]) put(b []E) {
	if cap(b) < 32<<10 {
		return
	}
	select {
	case f <- b[:0]:
	default:
	}
}

// resolveInPlace turns marked, entry by entry, into bytes written over its own memory
// (byte i lands at offset i, before entry i's offset 2i, so nothing is overwritten before
// it is read), markers taken from win, and returns that byte view. marked must not be
// used afterwards except through the result. It is on the reader's path, the one that
// bounds a stream: eight entries at a time that hold no marker (most of them) are packed
// without a branch each, and the others are looked up in a table that maps a literal to
// itself and a marker to its window byte, without a branch either.
func resolveInPlace(marked []uint16, win []byte) []byte {
	n := len(marked)
	if n == 0 {
		return nil
	}
	t := tables.Get().(*resolveTable)
	defer tables.Put(t)
	copy(t[256+windowSize-len(win):], win)
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&marked[0])), 2*n)
	out := raw[:n]
	i := 0
	for ; i+8 <= n; i += 8 {
		// The high byte of each of the eight entries, whichever the byte order.
		w0 := binary.NativeEndian.Uint64(raw[2*i:])
		w1 := binary.NativeEndian.Uint64(raw[2*i+8:])
		if (w0|w1)&0xff00ff00ff00ff00 == 0 && littleEndian {
			binary.LittleEndian.PutUint32(out[i:], uint32(w0&0xff|w0>>8&0xff00|w0>>16&0xff0000|w0>>24&0xff000000))
			binary.LittleEndian.PutUint32(out[i+4:], uint32(w1&0xff|w1>>8&0xff00|w1>>16&0xff0000|w1>>24&0xff000000))
			continue
		}
		m := marked[i : i+8 : i+8]
		o := out[i : i+8 : i+8]
		o[0], o[1], o[2], o[3] = t[m[0]], t[m[1]], t[m[2]], t[m[3]]
		o[4], o[5], o[6], o[7] = t[m[4]], t[m[5]], t[m[6]], t[m[7]]
	}
	for ; i < n; i++ {
		out[i] = t[marked[i]]
	}
	return out
}

// resolveTable maps an entry of a speculative part to its byte: a literal to itself, a
// marker (256 + its index in the 32 KiB window) to the window's byte there.
type resolveTable [1 << 16]byte

var tables = sync.Pool{New: func() any {
	t := new(resolveTable)
	for v := range 256 {
		t[v] = byte(v)
	}
	return t
}}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1
