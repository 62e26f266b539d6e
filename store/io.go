package store

import (
	"os"
	"sync/atomic"
	"unsafe"
)

const (
	// directAlign is the alignment O_DIRECT needs of memory, file offsets and lengths
	// (the largest logical block size in common use).
	directAlign = 4096
	// cachedPiece is the largest write made through the page cache: large writes get
	// large folios, whose high-order pages a virtual machine may have handed back to its
	// host, so that every page faults in the host first; small pieces avoid that at the
	// price of a few more system calls.
	cachedPiece = 32 << 10
	// inlineMax is the size under which Write writes in the calling goroutine: for a
	// small piece, handing it to the writer goroutine costs more than it saves.
	inlineMax = 64 << 10
	// smallBlob is the size under which a blob of known size is written to an unnamed
	// file (O_TMPFILE), linked to its name once verified.
	smallBlob = 1 << 20
	// hashBuf is the size of the buffer a prefix or a whole blob is re-hashed through.
	hashBuf = 1 << 20
)

// directBytes counts the bytes written with O_DIRECT by this process (for tests).
var directBytes atomic.Int64

// alignedBytes returns n bytes starting at a multiple of directAlign in memory, as
// O_DIRECT needs.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (directAlign - 1))
	return b[off : off+n : off+n]
}

// isAligned reports whether p and off are fit for an O_DIRECT write.
func isAligned(p []byte, off int64) bool {
	return len(p) > 0 && len(p)%directAlign == 0 && off%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign == 0
}

// writeCached writes b at off through the page cache, in pieces of cachedPiece.
func writeCached(f *os.File, b []byte, off int64) error {
	for len(b) > 0 {
		k := min(len(b), cachedPiece)
		if _, err := f.WriteAt(b[:k], off); err != nil {
			return err
		}
		b, off = b[k:], off+int64(k)
	}
	return nil
}
