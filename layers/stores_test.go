package layers

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/store"
)

// TestRealStores runs the transfer's paths into the module's two stores: inline, one
// stream, a split stream (whose parked bytes go to the layout's own scratch file), and a
// resume whose taps are given back the bytes an earlier writer left.
func TestRealStores(t *testing.T) {
	small := randomBytes(t, 100<<10)
	large := randomBytes(t, 12<<20+5)
	split := randomBytes(t, 24<<20)
	layer := ztest.Gzip(t, randomBytes(t, 3<<20))
	for name, open := range map[string]func(t *testing.T) store.Store{
		"layout": func(t *testing.T) store.Store {
			l, err := store.OpenLayout(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		"memory": func(t *testing.T) store.Store { return store.NewMemory() },
	} {
		t.Run(name, func(t *testing.T) {
			st := open(t)
			f := newFetcher(small, large, split, layer)
			f.latency = time.Millisecond
			slow := newFetcher(split)
			slow.rate, slow.latency = 8<<20, 2*time.Millisecond
			if _, err := Fetch(context.Background(), f, st, []Blob{{Desc: desc(small)}, {Desc: desc(large)}}); err != nil {
				t.Fatal(err)
			}
			if _, err := Fetch(context.Background(), slow, st, []Blob{{Desc: desc(split)}}); err != nil {
				t.Fatal(err)
			}
			// An interrupted layer, then its resume with the diffID asked for.
			ctx, cancel := context.WithCancel(context.Background())
			cut := newFetcher(layer)
			cut.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
				return &cutBody{ReadCloser: body, left: int64(len(layer) / 2)}, nil
			}
			cut.rate = 32 << 20
			go func() {
				time.Sleep(200 * time.Millisecond)
				cancel()
			}()
			_, _ = Fetch(ctx, cut, st, []Blob{{Desc: desc(layer)}}, WithRetry(fastRetry()))
			res, err := Fetch(context.Background(), f, st, []Blob{{Desc: desc(layer), DiffID: true}})
			if err != nil {
				t.Fatal(err)
			}
			if want := uncompressedDigest(t, layer); res[0].DiffID != want {
				t.Errorf("diffID after resume %s, want %s", res[0].DiffID, want)
			}
			for _, b := range [][]byte{small, large, split, layer} {
				got, err := store.ReadBlob(context.Background(), st, digest.FromBytes(b), 64<<20)
				if err != nil || !bytes.Equal(got, b) {
					t.Errorf("blob of %d bytes: %v", len(b), err)
				}
			}
			var ranged int
			for _, r := range slow.requests() {
				if r.length >= 0 {
					ranged++
				}
			}
			if ranged == 0 {
				t.Errorf("the capped blob was not split")
			}
		})
	}
}
