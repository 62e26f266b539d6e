package inflate

import (
	"sync/atomic"
	"unsafe"
)

// Buffers of parts (a few MiB each) are reused through small free lists rather than
// sync.Pool, whose contents the collector sees as live between cycles: with buffers this
// large that made the heap grow far past what the parts in flight hold. A list keeps a
// few buffers; the rest are left to the collector.
var (
	freeBytes   = make(chan []byte, 1)
	freeUint16s = make(chan []uint16, 1)
	// partOut is the output of the last part decoded (in this process): a new part's
	// buffers start at that size and a tenth more, so that they rarely grow.
	partOut atomic.Int64
)

// getBytes returns a buffer of n bytes (not zeroed).
func getBytes(n int) []byte {
	select {
	case b := <-freeBytes:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]byte, n)
}

func putBytes(b []byte) {
	if cap(b) < 64<<10 {
		return
	}
	select {
	case freeBytes <- b[:0]:
	default:
	}
}

func getUint16s(n int) []uint16 {
	select {
	case b := <-freeUint16s:
		if cap(b) >= n {
			return b[:n]
		}
	default:
	}
	return make([]uint16, n)
}

func putUint16s(b []uint16) {
	if cap(b) < 64<<10 {
		return
	}
	select {
	case freeUint16s <- b[:0]:
	default:
	}
}

// resolveInPlace turns marked, entry by entry, into bytes written over its own memory
// (byte i lands at offset i, before entry i's offset 2i, so nothing is overwritten before
// it is read), markers taken from win, and returns that byte view. marked must not be
// used afterwards except through the result.
func resolveInPlace(marked []uint16, win []byte) []byte {
	if len(marked) == 0 {
		return nil
	}
	out := unsafe.Slice((*byte)(unsafe.Pointer(&marked[0])), len(marked))
	for i, v := range marked {
		if v < 256 {
			out[i] = byte(v)
		} else {
			out[i] = win[len(win)-(windowSize-int(v-256))]
		}
	}
	return out
}
