//go:build linux

package unpack

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/inflate"
	"github.com/pullkit/pullkit/internal/zstdframes"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// inflateLayer is a layer of a few hundred text files, compressed with a flush every
// few KiB so that its gzip stream has many blocks and small parts cover it.
func inflateLayer(t *testing.T) (tarball, blob []byte) {
	t.Helper()
	var ents []ent
	for d := range 6 {
		ents = append(ents, dir(fmt.Sprintf("usr/share/d%d", d)))
		for f := range 60 {
			var b strings.Builder
			for l := range 40 + f {
				fmt.Fprintf(&b, "line %d of file %d in %d: the quick brown fox %d\n", l, f, d, l*f%97)
			}
			ents = append(ents, file(fmt.Sprintf("usr/share/d%d/f%02d.txt", d, f), b.String()))
		}
	}
	ents = append(ents, symlink("usr/share/latest", "d5/f59.txt"))
	tarball = tarOf(t, ents...)
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, 6)
	for rest := tarball; len(rest) > 0; {
		k := min(3000, len(rest))
		zw.Write(rest[:k])
		zw.Flush()
		rest = rest[k:]
	}
	zw.Close()
	return tarball, buf.Bytes()
}

// withInflate pins how layers are inflated for the test, and collects what the readers
// did.
func withInflate(t *testing.T, cfg inflate.Config) *[]inflate.Stats {
	oldCfg, oldStats := inflateConfig, inflateStats
	var mu sync.Mutex
	var stats []inflate.Stats
	inflateConfig = cfg
	inflateStats = func(s inflate.Stats) { mu.Lock(); stats = append(stats, s); mu.Unlock() }
	t.Cleanup(func() { inflateConfig, inflateStats = oldCfg, oldStats })
	return &stats
}

// applyOne applies one layer blob (of mediaType, diffID want) into a fresh Rootfs, from
// a pipeline's spool or with Apply from a reader at offsets, checks the diffID it
// reports, commits, and returns the tree.
func applyOne(t *testing.T, blob []byte, want digest.Digest, mediaType string, viaPipeline bool) map[string]node {
	t.Helper()
	e := newEnv(t)
	r, err := NewRootfs(e.root)
	must(t, err)
	defer r.Abort()
	if viaPipeline {
		p := r.NewPipeline(context.Background())
		img := &pipedImage{blobs: [][]byte{blob}, diffIDs: []digest.Digest{want}}
		l := manifest.Layer{Digest: digest.FromBytes(blob), Size: int64(len(blob)), DiffID: want, MediaType: mediaType}
		img.tees = append(img.tees, p.Tee(0, l))
		img.start(t, 0).send(-1).close(nil)
		res, err := p.Wait()
		must(t, err)
		if res[0].DiffID != want {
			t.Fatalf("pipeline diffID %s, want %s", res[0].DiffID, want)
		}
	} else {
		res, err := r.Apply(context.Background(), digest.FromBytes(blob), want, bytes.NewReader(blob))
		must(t, err)
		if res.DiffID != want {
			t.Fatalf("diffID %s, want %s", res.DiffID, want)
		}
	}
	must(t, r.Commit())
	return scan(t, e.root)
}

var pinnedInflate = inflate.Config{Workers: 2, PartSize: 8 << 10, Search: 8 << 10, MinSize: 1, Patient: true}

// TestParallelInflateApply applies one layer with its gzip stream inflated in parallel
// parts (the decision pinned) and in order, from a reader at offsets and from a
// pipeline's spool, and checks that the trees and diffIDs are the same.
func TestParallelInflateApply(t *testing.T) {
	tarball, blob := inflateLayer(t)
	want := diffIDOf(tarball)
	apply := func(cfg inflate.Config, viaPipeline bool) (map[string]node, []inflate.Stats) {
		stats := withInflate(t, cfg)
		tree := applyOne(t, blob, want, manifest.MediaTypeOCILayerGzip, viaPipeline)
		return tree, *stats
	}
	serial, st := apply(inflate.Config{}, false)
	if len(st) != 1 || st[0].Parts != 0 || st[0].Ordered != int64(len(tarball)) {
		t.Fatalf("with no workers, the reader decodes the whole layer in order: %+v", st)
	}
	for _, via := range []bool{false, true} {
		got, st := apply(pinnedInflate, via)
		if len(st) != 1 || st[0].Parts == 0 {
			t.Fatalf("pipeline %v: no part was decoded speculatively: %+v", via, st)
		}
		if !reflect.DeepEqual(got, serial) {
			t.Fatalf("pipeline %v: tree differs from the serial apply:\n%s\nwant:\n%s", via, formatTree(got), formatTree(serial))
		}
	}
}

// TestPipelineStages checks the stage timings a pipeline reports: one EventUnpacked per
// layer, naming it, with its uncompressed size, no stage negative, and the results
// carrying the same figures.
func TestPipelineStages(t *testing.T) {
	e := newEnv(t)
	r, err := NewRootfs(e.root)
	must(t, err)
	defer r.Abort()
	p := r.NewPipeline(context.Background())
	var mu sync.Mutex
	var events []pullkit.Event
	p.Progress(func(ev pullkit.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })
	img := teesFor(t, p, [][]ent{{dir("a"), file("a/x", "one")}, {file("a/y", strings.Repeat("two", 1000))}}, true)
	for i := range img.blobs {
		img.start(t, i).send(-1).close(nil)
	}
	res, err := p.Wait()
	must(t, err)
	if len(events) != 2 {
		t.Fatalf("%d events, want one per layer: %+v", len(events), events)
	}
	for i, ev := range events {
		tarball := tarLen(t, img, i)
		if ev.Kind != pullkit.EventUnpacked || ev.What != "layer" || ev.Digest != digest.FromBytes(img.blobs[i]) || ev.Done != tarball {
			t.Errorf("event %d: %+v, want EventUnpacked of layer %d, %d bytes", i, ev, i, tarball)
		}
		s := ev.Stages
		if s.Fetch < 0 || s.Inflate < 0 || s.Tar < 0 || s.Write < 0 || s.Wait < 0 {
			t.Errorf("event %d: a negative stage: %+v", i, s)
		}
		if res[i].Stages != s || res[i].Size != tarball {
			t.Errorf("result %d: %+v / %d, event %+v", i, res[i].Stages, res[i].Size, ev)
		}
	}
}

// tarLen is the uncompressed size of layer i of img.
func tarLen(t *testing.T, img *pipedImage, i int) int64 {
	rc, _, err := layers.Decompress(bytes.NewReader(img.blobs[i]))
	must(t, err)
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	must(t, err)
	return n
}

// withZstd pins how zstd layers read at offsets are decoded, and collects what the
// readers did.
func withZstd(t *testing.T, cfg zstdframes.Config) *[]zstdframes.Stats {
	oldCfg, oldStats := zstdConfig, zstdStats
	var mu sync.Mutex
	var stats []zstdframes.Stats
	zstdConfig = cfg
	zstdStats = func(s zstdframes.Stats) { mu.Lock(); stats = append(stats, s); mu.Unlock() }
	t.Cleanup(func() { zstdConfig, zstdStats = oldCfg, oldStats })
	return &stats
}

// framedZstd is tarball as a zstd stream of many frames that state their size (as
// zstd:chunked and seekable zstd write them), with a skippable frame between them.
func framedZstd(t *testing.T, tarball []byte) []byte {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	must(t, err)
	defer e.Close()
	var out []byte
	for i := 0; i < len(tarball); i += 5000 {
		out = e.EncodeAll(tarball[i:min(len(tarball), i+5000)], out)
		if i == 5000 {
			out = append(out, 0x5e, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 'T', 'O', 'C')
		}
	}
	return out
}

// TestParallelZstdApply applies a zstd layer of many frames with its frames decoded in
// runs at once (the decision pinned) and serially, from a reader at offsets and from a
// pipeline's spool, and checks that the trees and diffIDs are the same.
func TestParallelZstdApply(t *testing.T) {
	tarball, _ := inflateLayer(t)
	blob := framedZstd(t, tarball)
	want := diffIDOf(tarball)
	apply := func(viaPipeline bool) map[string]node {
		return applyOne(t, blob, want, manifest.MediaTypeOCILayerZstd, viaPipeline)
	}
	old := useInflate
	useInflate = false
	serial := apply(false)
	useInflate = old
	for _, via := range []bool{false, true} {
		stats := withZstd(t, zstdframes.Config{Workers: 1, RunSize: 16 << 10})
		got := apply(via)
		if len(*stats) != 1 || (*stats)[0].Runs < 2 || (*stats)[0].Rest {
			t.Fatalf("pipeline %v: frames not decoded in runs: %+v", via, *stats)
		}
		if !reflect.DeepEqual(got, serial) {
			t.Fatalf("pipeline %v: tree differs from the serial apply:\n%s\nwant:\n%s", via, formatTree(got), formatTree(serial))
		}
	}
}
