//go:build linux

package unpack

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/ztest"
)

// FuzzApplyLayer feeds arbitrary blobs to the applier, twice over the same rootfs (so the
// second pass meets what the first made: links, directories, whiteouts), and checks that
// nothing outside the root changed, that no temporary tree is left after Abort, and that
// every error keeps the contract (a *pullkit.Error naming the layer, an *EntryError, a
// sentinel). The seeds are the layers of the table tests, plain and compressed.
func FuzzApplyLayer(f *testing.F) {
	seedEnv := &env{sentinel: "/tmp/sentinel", base: "/tmp"}
	for _, c := range append(append([]treeCase(nil), escapeCases...), semanticCases...) {
		for _, l := range c.layers {
			l = append([]ent(nil), l...)
			for j := range l {
				l[j].name, l[j].link = seedEnv.expand(l[j].name), seedEnv.expand(l[j].link)
			}
			b := tarOf(f, l...)
			f.Add(b)
			if len(l)%2 == 0 {
				f.Add(ztest.Gzip(f, b))
			} else {
				f.Add(ztest.Zstd(f, b))
			}
		}
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		e := newEnv(t)
		r, err := NewRootfs(e.root)
		if err != nil {
			t.Fatal(err)
		}
		layer := digest.FromBytes(blob)
		// A tiny archive can declare a file of a terabyte of holes: the context bounds it.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for range 2 {
			if _, err = r.Apply(ctx, layer, "", bytes.NewReader(blob)); err != nil {
				checkError(t, err, layer)
				break
			}
		}
		if err == nil {
			if err := r.Commit(); err != nil {
				t.Fatalf("commit: %v", err)
			}
			e.checkOutside(t)
			return
		}
		if err := r.Abort(); err != nil {
			t.Fatalf("abort: %v", err)
		}
		if ents, _ := os.ReadDir(e.base); len(ents) != 1 {
			t.Fatalf("left behind after Abort: %v", ents)
		}
		e.checkOutside(t)
	})
}
