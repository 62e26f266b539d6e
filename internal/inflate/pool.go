package inflate

import (
	"encoding/binary"
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
// used afterwards except through the result. It is on the reader's path, the one that
// bounds a stream: four entries at a time that hold no marker (most of them) are packed
// without a branch each.
func resolveInPlace(marked []uint16, win []byte) []byte {
	n := len(marked)
	if n == 0 {
		return nil
	}
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&marked[0])), 2*n)
	out := raw[:n]
	i := 0
	for ; i+4 <= n; i += 4 {
		// The high byte of each of the four entries, whichever the byte order.
		w := binary.NativeEndian.Uint64(raw[2*i:])
		if w&0xff00ff00ff00ff00 == 0 {
			if littleEndian {
				binary.LittleEndian.PutUint32(out[i:], uint32(w&0xff|w>>8&0xff00|w>>16&0xff0000|w>>24&0xff000000))
				continue
			}
			out[i], out[i+1], out[i+2], out[i+3] = byte(marked[i]), byte(marked[i+1]), byte(marked[i+2]), byte(marked[i+3])
			continue
		}
		for k := i; k < i+4; k++ {
			out[k] = resolve1(marked[k], win)
		}
	}
	for ; i < n; i++ {
		out[i] = resolve1(marked[i], win)
	}
	return out
}

func resolve1(v uint16, win []byte) byte {
	if v < 256 {
		return byte(v)
	}
	return win[len(win)-(windowSize-int(v-256))]
}

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1
