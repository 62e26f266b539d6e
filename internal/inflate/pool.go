package inflate

import "sync"

// Buffers of parts: a few MiB each, reused rather than left to the collector.
var (
	bytePool   sync.Pool // *[]byte
	uint16Pool sync.Pool // *[]uint16
)

// getBytes returns a buffer of n bytes (not zeroed).
func getBytes(n int) []byte {
	if p, _ := bytePool.Get().(*[]byte); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putBytes(b []byte) {
	if cap(b) >= 64<<10 {
		bytePool.Put(&b)
	}
}

func getUint16s(n int) []uint16 {
	if p, _ := uint16Pool.Get().(*[]uint16); p != nil && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]uint16, n)
}

func putUint16s(b []uint16) {
	if cap(b) >= 64<<10 {
		uint16Pool.Put(&b)
	}
}
