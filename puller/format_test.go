package puller_test

import (
	"errors"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// TestFormatRefusedBeforeBlobs: an image with zstd layers cannot be stored as Docker
// schema 2 (it has no spelling for them): Pull says so before it fetches any blob, and
// names nothing; stored as served or as OCI, it pulls.
func TestFormatRefusedBeforeBlobs(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("zstd/app", "v1", pullkittest.OCI, pullkittest.Compression(manifest.Zstd), pullkittest.Layers(2, 1<<20))
	c := newClient(t)
	st := store.NewMemory()
	_, err := c.Pull(t.Context(), reg.Ref("zstd/app:v1"), st, puller.WithFormat(puller.FormatDocker))
	if !errors.Is(err, pullkit.ErrUnsupported) {
		t.Fatalf("Pull as Docker schema 2: %v, want ErrUnsupported", err)
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 0 {
		t.Errorf("%d blob requests before the format was refused", n)
	}
	if imgs, _ := st.Images(t.Context()); len(imgs) != 0 {
		t.Errorf("names after a refused pull: %v", imgs)
	}
	for _, f := range []puller.Format{puller.FormatOCI, puller.FormatAsServed} {
		if _, err := c.Pull(t.Context(), reg.Ref("zstd/app:v1"), store.NewMemory(), puller.WithFormat(f)); err != nil {
			t.Errorf("Pull as %s: %v", f, err)
		}
	}
}
