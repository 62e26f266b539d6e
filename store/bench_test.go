package store

import (
	"crypto/sha256"
	"testing"
)

// BenchmarkLayoutWriter writes a 64 MiB blob into a Layout writer in aligned 1 MiB
// blocks and commits it, with and without direct I/O, next to hashing the same blocks
// alone ("sha256"): the writer hashes in the caller while it writes, so it should run
// at about the speed of the hash.
func BenchmarkLayoutWriter(b *testing.B) {
	const size, bs = 64 << 20, 1 << 20
	data := randBytes(1, size)
	d := descOf("", data)
	block := alignedBytes(bs)
	b.Run("sha256", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			h := sha256.New()
			for off := 0; off < size; off += bs {
				copy(block, data[off:])
				h.Write(block)
			}
			h.Sum(nil)
		}
	})
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "buffered"
		}
		b.Run(name, func(b *testing.B) {
			l := openTemp(b, WithDirectIO(direct))
			ctx := testCtx(b)
			b.SetBytes(size)
			for b.Loop() {
				w, err := l.Writer(ctx, d)
				if err != nil {
					b.Fatal(err)
				}
				for off := 0; off < size; off += bs {
					copy(block, data[off:])
					if _, err := w.Write(block); err != nil {
						b.Fatal(err)
					}
				}
				if err := w.Commit(ctx, d.Size, d.Digest); err != nil {
					b.Fatal(err)
				}
				b.StopTimer() // removing a 64 MiB file is not the writer's cost
				if err := l.Delete(ctx, d.Digest); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
