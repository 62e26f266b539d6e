package layers

import (
	"bytes"
	"context"
	"errors"
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
			slow.holdUntilRanged(2 << 20)
			if _, err := Fetch(context.Background(), f, st, []Blob{{Desc: desc(small)}, {Desc: desc(large)}}); err != nil {
				t.Fatal(err)
			}
			// Split (pinned: the decision is TestStreamsLimit's), so that bytes beyond
			// the window are parked in the store's scratch file.
			if _, err := Fetch(context.Background(), slow, st, []Blob{{Desc: desc(split)}}, withJudgement(judgeAlways)); err != nil {
				t.Fatal(err)
			}
			// An interrupted layer (its body breaks half way, and the registry then
			// fails every request; one attempt), then its resume with the diffID asked
			// for.
			cut := newFetcher(layer)
			cut.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
				if r.n > 1 {
					body.Close()
					return nil, errors.New("connection refused (test)")
				}
				return &cutBody{ReadCloser: body, left: int64(len(layer) / 2)}, nil
			}
			once := fastRetry()
			once.Attempts = 1
			if _, err := Fetch(context.Background(), cut, st, []Blob{{Desc: desc(layer)}}, WithRetry(once), withJudgement(judgeNever)); err == nil {
				t.Fatal("a layer whose body always breaks half way was fetched")
			}
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
