//go:build linux

package puller_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/unpack"
)

// TestDropBlobsThenSkip is the disk policy of issue 20: a pull into snapshots that
// drops each layer blob once it is applied keeps the manifest and config (the image is
// named), and a later pull of an image with the same layers downloads none of them: the
// snapshots are there.
func TestDropBlobsThenSkip(t *testing.T) {
	ctx := context.Background()
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(3, 64<<10), pullkittest.Seed(20))
	reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(3, 64<<10), pullkittest.Seed(20))
	dir := t.TempDir()
	st, err := store.OpenLayout(filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := unpack.OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := puller.New()
	if err != nil {
		t.Fatal(err)
	}
	pull := func(tag string) []unpack.Result {
		t.Helper()
		pipe := snaps.NewPipeline(ctx)
		pipe.DropBlobs(st)
		if _, err := c.Pull(ctx, reg.Ref("team/app:"+tag), st, puller.WithLayerTees(pipe.Tee), puller.WithSkipLayers(pipe.Skip)); err != nil {
			pipe.Abort(err)
			t.Fatalf("pull %s: %v", tag, err)
		}
		res, err := pipe.Wait()
		if err != nil {
			t.Fatalf("unpack %s: %v", tag, err)
		}
		return res
	}
	has := func(d digest.Digest) bool {
		ra, err := st.ReaderAt(ctx, d)
		if err == nil {
			ra.Close()
			return true
		}
		if !errors.Is(err, pullkit.ErrNotFound) {
			t.Fatalf("open %s: %v", d, err)
		}
		return false
	}

	for i, r := range pull("v1") {
		if r.Reused || !snaps.Has(r.ChainID) {
			t.Errorf("v1 layer %d: %+v, want a new snapshot", i, r)
		}
	}
	for i, l := range img.Layers {
		if has(l.Digest) {
			t.Errorf("layer %d's blob %s is still in the store", i, l.Digest)
		}
	}
	if !has(img.Config.Digest) || !has(img.Digest) {
		t.Errorf("the manifest or the config went with the layers")
	}
	if _, err := st.Image(ctx, reg.Ref("team/app:v1")); err != nil {
		t.Errorf("the image is not named after its layers were dropped: %v", err)
	}

	reg.ResetRequests()
	for i, r := range pull("v2") {
		if !r.Reused {
			t.Errorf("v2 layer %d: %+v, want its snapshot reused", i, r)
		}
	}
	for _, q := range reg.Requests() {
		for _, l := range img.Layers {
			if q.Ref == l.Digest.String() {
				t.Errorf("the second pull asked for layer %s (%s %s), whose snapshot is there", l.Digest, q.Method, q.Path)
			}
		}
	}
	if _, err := st.Image(ctx, reg.Ref("team/app:v2")); err != nil {
		t.Errorf("v2 not named: %v", err)
	}
	if _, err := st.GC(ctx); err != nil {
		t.Errorf("GC of a layout whose layers were dropped: %v", err)
	}
	if _, err := st.Image(ctx, reg.Ref("team/app:v1")); err != nil {
		t.Errorf("GC lost the name: %v", err)
	}
}
