package puller_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// countingStore counts the bytes written through its writers: what the transfer received.
type countingStore struct {
	*store.Memory
	n atomic.Int64
}

func (c *countingStore) Writer(ctx context.Context, d manifest.Descriptor) (store.Writer, error) {
	w, err := c.Memory.Writer(ctx, d)
	if err != nil {
		return nil, err
	}
	return &countingWriter{Writer: w, n: &c.n}, nil
}

type countingWriter struct {
	store.Writer
	n *atomic.Int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.Writer.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// TestEncodedBodiesAreNotDecoded (issue 22): the blob transport asks for identity and
// never lets Go decode a Content-Encoding itself. A gzip bomb served as a schema 1 layer
// (its size unknown up front) with Content-Encoding: gzip costs what it weighs on the
// wire, not its 64 MiB expansion, and fails its digest; a layer whose stored bytes are
// served with Content-Encoding: gzip (a misconfigured CDN) verifies, since those bytes
// are the blob. The work is counted in bytes, not in time.
func TestEncodedBodiesAreNotDecoded(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for range 64 {
		zw.Write(zeros)
	}
	zw.Close()

	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/old", "v1", pullkittest.Schema1, pullkittest.Layers(1, 1000))
	layer := img.Layers[0]
	rule := &pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: layer.Digest.String()},
		Fault: pullkittest.Rewrite("gzip bomb", func(_ []byte, h http.Header) []byte {
			h.Set("Content-Encoding", "gzip")
			return bomb.Bytes()
		})}
	reg.Inject(rule)
	st := &countingStore{Memory: store.NewMemory()}
	_, err := newClient(t).Pull(t.Context(), reg.Ref("team/old:v1"), st)
	if !errors.Is(err, pullkit.ErrDigestMismatch) {
		t.Fatalf("Pull of a layer served as a gzip bomb: %v, want ErrDigestMismatch", err)
	}
	attempts := int64(rule.Hits())
	if got, most := st.n.Load(), attempts*int64(bomb.Len()); attempts == 0 || got > most {
		t.Errorf("the transfer received %d bytes over %d attempts, want at most %d: the encoding was decoded", got, attempts, most)
	}
	t.Logf("bomb of %d bytes (64 MiB inflated), %d attempts, %d bytes received", bomb.Len(), attempts, st.n.Load())

	// The stored bytes served under Content-Encoding: gzip are the blob.
	reg.ClearFaults()
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob},
		Fault: pullkittest.Rewrite("encoded as gzip", func(b []byte, h http.Header) []byte {
			h.Set("Content-Encoding", "gzip")
			return b
		})})
	ok := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(2, 5000))
	pulled, err := newClient(t).Pull(t.Context(), reg.Ref("team/app:v1"), store.NewMemory())
	if err != nil {
		t.Fatalf("Pull of blobs served with Content-Encoding: gzip: %v", err)
	}
	if pulled.Layers[0].Digest != ok.Layers[0].Digest {
		t.Errorf("pulled %s, want %s", pulled.Layers[0].Digest, ok.Layers[0].Digest)
	}
}
