package inflate_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/pullkit/pullkit/internal/inflate"
)

// benchBlob is a gzip stream to time: INFLATE_BENCH names a file, else a tar of Go's
// sources (tens of MiB) at the default level.
func benchBlob(b *testing.B) []byte {
	if f := os.Getenv("INFLATE_BENCH"); f != "" {
		blob, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		return blob
	}
	return gz(b, treeTar(b, 64<<20), 6)
}

func benchReader(b *testing.B, cfg inflate.Config) {
	blob := benchBlob(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := inflate.NewGzip(context.Background(), bytes.NewReader(blob), int64(len(blob)), cfg)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, r)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(n)
		r.Close()
	}
}

// BenchmarkKlauspost is the serial reference: klauspost's gzip, as layers.Decompress.
func BenchmarkKlauspost(b *testing.B) {
	blob := benchBlob(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		z, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, z)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(n)
	}
}

// BenchmarkInOrder is the package's reader with no workers: its own decoder, in order.
func BenchmarkInOrder(b *testing.B) { benchReader(b, inflate.Config{}) }

// BenchmarkParallel2 decodes with two workers.
func BenchmarkParallel2(b *testing.B) { benchReader(b, inflate.Config{Workers: 2}) }
