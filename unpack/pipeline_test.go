//go:build linux

package unpack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// The tests of this file drive a Pipeline's tees the way the transfer does: Open, the
// blob's bytes in pieces, Close with the verdict; in orders a real transfer produces.

type pipedImage struct {
	blobs   [][]byte
	diffIDs []digest.Digest
	tees    []layers.Tee
}

// teesFor builds the image of layers and asks p for its tees, as WithLayerTees does.
func teesFor(t *testing.T, p *Pipeline, ls [][]ent, withDiffIDs bool) *pipedImage {
	t.Helper()
	img := &pipedImage{}
	img.blobs, img.diffIDs = layerBlobs(t, ls)
	for i, b := range img.blobs {
		l := manifest.Layer{Digest: digest.FromBytes(b), Size: int64(len(b)), MediaType: "application/vnd.oci.image.layer.v1.tar+gzip"}
		if withDiffIDs {
			l.DiffID = img.diffIDs[i]
		}
		img.tees = append(img.tees, p.Tee(i, l))
	}
	return img
}

// transfer is one attempt at layer i: open, then bytes written in steps.
type transfer struct {
	t    *testing.T
	img  *pipedImage
	i    int
	w    interface{ Write([]byte) (int, error) }
	off  int
	open bool
}

func (img *pipedImage) start(t *testing.T, i int) *transfer {
	t.Helper()
	w, err := img.tees[i].Open(manifest.Descriptor{Digest: digest.FromBytes(img.blobs[i]), Size: int64(len(img.blobs[i]))})
	if err != nil {
		t.Fatalf("open layer %d: %v", i, err)
	}
	return &transfer{t: t, img: img, i: i, w: w, open: true}
}

// send writes the next n bytes (all that is left when n < 0), in pieces of 7 bytes.
func (x *transfer) send(n int) *transfer {
	x.t.Helper()
	b := x.img.blobs[x.i]
	end := len(b)
	if n >= 0 {
		end = min(len(b), x.off+n)
	}
	for x.off < end {
		k := min(7, end-x.off)
		if _, err := x.w.Write(b[x.off : x.off+k]); err != nil {
			x.t.Fatalf("write layer %d: %v", x.i, err)
		}
		x.off += k
	}
	return x
}

func (x *transfer) close(err error) {
	x.t.Helper()
	if cerr := x.img.tees[x.i].Close(err); cerr != nil {
		x.t.Fatalf("close layer %d: %v", x.i, cerr)
	}
}

// openFDs lists this process's open file descriptors on files under dir (spool files,
// which have no name, show as "dir/.spool-N (deleted)").
func openFDs(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	must(t, err)
	var out []string
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, dir) {
			out = append(out, target)
		}
	}
	return out
}

// withStaging pins whether pipelines into a Rootfs stage their layers in parallel.
func withStaging(t *testing.T, on bool) {
	old := stageMinProcs
	stageMinProcs = 1 << 30
	if on {
		stageMinProcs = 0
	}
	t.Cleanup(func() { stageMinProcs = old })
}

func TestPipelineRootfsInOrderWhateverTheArrival(t *testing.T) {
	for _, staging := range []bool{false, true} {
		t.Run(fmt.Sprintf("staging %v", staging), func(t *testing.T) {
			withStaging(t, staging)
			testPipelineRootfsInOrder(t)
		})
	}
}

func testPipelineRootfsInOrder(t *testing.T) {
	e := newEnv(t)
	r, err := NewRootfs(e.root)
	must(t, err)
	defer r.Abort()
	p := r.NewPipeline(context.Background())
	img := teesFor(t, p, stackLayers(), true)
	// The top layer arrives first and whole, the middle one in two parts around the
	// base, which comes last: each is applied in order, the base while it streams.
	img.start(t, 2).send(-1).close(nil)
	mid := img.start(t, 1).send(100)
	base := img.start(t, 0).send(50)
	mid.send(-1).close(nil)
	base.send(-1).close(nil)
	res, err := p.Wait()
	must(t, err)
	must(t, r.Commit())
	for i, rr := range res {
		if rr.DiffID != img.diffIDs[i] {
			t.Errorf("layer %d: diffID %s, want %s", i, rr.DiffID, img.diffIDs[i])
		}
	}
	want := newEnv(t)
	must(t, applyAll(t, want, stackLayers()))
	if a, b := formatTree(scan(t, want.root)), formatTree(scan(t, e.root)); a != b {
		t.Fatalf("pipeline's tree differs from the layers applied in order:\nwant:\n%s\ngot:\n%s", a, b)
	}
	e.checkOutside(t)
	if fds := openFDs(t, e.base); len(fds) > 0 {
		t.Errorf("files left open: %v", fds)
	}
}

func TestPipelineAppliesOnlyWhatVerified(t *testing.T) {
	for _, staging := range []bool{false, true} {
		t.Run(fmt.Sprintf("staging %v", staging), func(t *testing.T) {
			withStaging(t, staging)
			testPipelineAppliesOnlyWhatVerified(t)
		})
	}
}

func testPipelineAppliesOnlyWhatVerified(t *testing.T) {
	e := newEnv(t)
	r, err := NewRootfs(e.root)
	must(t, err)
	defer r.Abort()
	p := r.NewPipeline(context.Background())
	img := teesFor(t, p, [][]ent{{file("a", "a")}}, true)
	x := img.start(t, 0).send(-1)
	// Every byte is sent: once its applier runs, the layer must still not be applied,
	// however long it has had.
	var st state
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		p.mu.Lock()
		var running bool
		st, running = p.layers[0].state, p.layers[0].applier != nil
		p.mu.Unlock()
		if running || time.Now().After(deadline) {
			if !running {
				t.Fatalf("every byte sent: no applier a minute later (state %d)", st)
			}
			break
		}
	}
	if st == applied {
		t.Fatalf("every byte sent, not verified yet: state %d", st)
	}
	x.close(nil)
	_, err = p.Wait()
	must(t, err)
	must(t, r.Commit())
	checkTree(t, e.root, map[string]string{"/a": "f 644 a"})
}

func TestPipelineSnapshotsRetryAndReuse(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	s, err := OpenSnapshots(dir)
	must(t, err)
	p := s.NewPipeline(context.Background())
	p.maxLive = 1 // one at a time: the others wait in their spools
	img := teesFor(t, p, stackLayers(), true)
	mismatch := &pullkit.DigestMismatchError{What: "layer", Want: "sha256:1", Got: "sha256:2"}
	// Layer 1 fails half way and comes again; layer 2 arrives while layer 1 applies.
	first := img.start(t, 1).send(60)
	top := img.start(t, 2).send(-1)
	first.close(mismatch)
	top.close(nil)
	img.start(t, 1).send(-1).close(nil)
	img.start(t, 0).send(-1).close(nil)
	res, err := p.Wait()
	must(t, err)
	parent := digest.Digest("")
	for i, rr := range res {
		parent = ChainID(parent, img.diffIDs[i])
		if rr.Reused || rr.ChainID != parent || !s.Has(parent) {
			t.Errorf("layer %d: %+v, want snapshot %s made", i, rr, parent)
		}
	}
	if left := leftovers(t, dir); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	// The same image again: every snapshot is there, and nothing is read.
	p2 := s.NewPipeline(context.Background())
	img2 := teesFor(t, p2, stackLayers(), true)
	for i := range img2.blobs {
		img2.start(t, i).send(-1).close(nil)
	}
	res, err = p2.Wait()
	must(t, err)
	for i, rr := range res {
		if !rr.Reused {
			t.Errorf("second pull, layer %d: %+v, want reused", i, rr)
		}
	}
	if fds := openFDs(t, dir); len(fds) > 0 {
		t.Errorf("files left open: %v", fds)
	}
}

func TestPipelineFailures(t *testing.T) {
	for _, staging := range []bool{false, true} {
		t.Run(fmt.Sprintf("staging %v", staging), func(t *testing.T) {
			withStaging(t, staging)
			testPipelineRootfsFailures(t)
		})
	}
	t.Run("an attempt a rootfs began to apply in order cannot start over", func(t *testing.T) {
		withStaging(t, false)
		e := newEnv(t)
		r, err := NewRootfs(e.root)
		must(t, err)
		defer r.Abort()
		p := r.NewPipeline(context.Background())
		img := teesFor(t, p, stackLayers()[:1], true)
		img.start(t, 0).send(300).close(errors.New("digest mismatch"))
		if w, err := img.tees[0].Open(manifest.Descriptor{}); err == nil {
			_, _ = w.Write(img.blobs[0])
			_ = img.tees[0].Close(nil)
		}
		if _, err := p.Wait(); err == nil {
			t.Fatal("Wait: nil, want an error (the tree holds half a layer)")
		}
	})
	t.Run("an attempt a rootfs began to stage starts over", func(t *testing.T) {
		withStaging(t, true)
		e := newEnv(t)
		r, err := NewRootfs(e.root)
		must(t, err)
		defer r.Abort()
		p := r.NewPipeline(context.Background())
		img := teesFor(t, p, stackLayers()[:1], true)
		img.start(t, 0).send(300).close(errors.New("digest mismatch"))
		img.start(t, 0).send(-1).close(nil)
		_, err = p.Wait()
		must(t, err)
		must(t, r.Commit())
		want := newEnv(t)
		must(t, applyAll(t, want, stackLayers()[:1]))
		if a, b := formatTree(scan(t, want.root)), formatTree(scan(t, e.root)); a != b {
			t.Fatalf("tree after a retried layer:\n%s\nwant:\n%s", b, a)
		}
		e.checkOutside(t)
	})
	t.Run("cancelled", func(t *testing.T) {
		s, err := OpenSnapshots(filepath.Join(t.TempDir(), "s"))
		must(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		p := s.NewPipeline(ctx)
		img := teesFor(t, p, stackLayers(), true)
		x := img.start(t, 0).send(100)
		cancel()
		deadline := time.Now().Add(30 * time.Second) // catches a hang
		for {
			if _, err := x.w.Write([]byte("more")); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("writes go on 30 s after the context was cancelled")
			}
			time.Sleep(5 * time.Millisecond)
		}
		_ = img.tees[0].Close(context.Canceled)
		if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
			t.Fatalf("Wait: %v, want context.Canceled", err)
		}
	})
}

// testPipelineRootfsFailures: a failed layer stops the pipeline, and Abort stops it while
// layers stream.
func testPipelineRootfsFailures(t *testing.T) {
	t.Run("a layer that does not apply stops the rest", func(t *testing.T) {
		e := newEnv(t)
		r, err := NewRootfs(e.root)
		must(t, err)
		defer r.Abort()
		p := r.NewPipeline(context.Background())
		img := teesFor(t, p, [][]ent{{file("a", "a")}, {file("b", "b")}}, true)
		img.blobs[0] = ztest.Gzip(t, []byte(strings.Repeat("not a tar ", 100)))
		img.start(t, 0).send(-1).close(nil)
		// The failure stops what comes next: a tee refuses to open, or its writes fail.
		deadline := time.Now().Add(time.Minute) // catches a hang
		for {
			w, err := img.tees[1].Open(manifest.Descriptor{})
			if err == nil {
				_, err = w.Write([]byte("x"))
				_ = img.tees[1].Close(errors.New("stopped"))
			}
			if err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the tees go on after a layer failed")
			}
			time.Sleep(10 * time.Millisecond)
		}
		if _, err := p.Wait(); !errors.Is(err, pullkit.ErrInvalid) {
			t.Fatalf("Wait: %v, want the layer's error", err)
		}
	})
	t.Run("abort while a layer streams", func(t *testing.T) {
		e := newEnv(t)
		r, err := NewRootfs(e.root)
		must(t, err)
		p := r.NewPipeline(context.Background())
		img := teesFor(t, p, stackLayers(), true)
		img.start(t, 0).send(100)
		img.start(t, 1).send(-1)
		done := make(chan struct{})
		go func() {
			p.Abort(context.Canceled)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second): // catches a hang
			t.Fatal("Abort did not return within 30 s")
		}
		must(t, r.Abort())
		if _, err := os.Stat(e.root); !os.IsNotExist(err) {
			t.Fatalf("root: %v", err)
		}
		if fds := openFDs(t, e.base); len(fds) > 0 {
			t.Errorf("files left open: %v", fds)
		}
	})
}
