//go:build linux

package unpack_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/unpack"
)

// layer is what an engine has for each layer of an image: the blob (here in memory; in
// an engine a reader from the store, or from the transfer while it downloads) with its
// digest, and the diffID from the image config.
type layer struct {
	blob   []byte
	digest digest.Digest
	diffID digest.Digest
}

// makeLayer builds a gzip layer from name/content pairs ("" content: a directory).
func makeLayer(files ...string) layer {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for i := 0; i < len(files); i += 2 {
		h := &tar.Header{Name: files[i], Mode: 0o644, Size: int64(len(files[i+1])), ModTime: time.Unix(1e9, 0), Typeflag: tar.TypeReg}
		if strings.HasSuffix(files[i], "/") {
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			log.Fatal(err)
		}
		tw.Write([]byte(files[i+1]))
	}
	tw.Close()
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	zw.Write(raw.Bytes())
	zw.Close()
	return layer{blob: blob.Bytes(), digest: digest.FromBytes(blob.Bytes()), diffID: digest.FromBytes(raw.Bytes())}
}

func list(root string) {
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			rel, _ := filepath.Rel(root, p)
			fmt.Println(" ", rel)
		}
		return nil
	})
}

// An engine that wants one directory (a build tool, a scanner, a VM image) applies the
// layers in order, base first, and commits: the directory appears only once every layer
// applied and verified.
func ExampleRootfs() {
	base := makeLayer("etc/", "", "etc/motd", "hello\n", "etc/os-release", "ID=demo\n")
	app := makeLayer("etc/.wh.motd", "", "app/", "", "app/run", "#!/bin/sh\n")

	dir, err := os.MkdirTemp("", "unpack-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	r, err := unpack.NewRootfs(filepath.Join(dir, "rootfs"))
	if err != nil {
		log.Fatal(err)
	}
	defer r.Abort() // removes the temporary tree unless committed
	for _, l := range []layer{base, app} {
		// The reader must return io.EOF only once the blob's digest has verified.
		res, err := r.Apply(ctx, l.digest, l.diffID, bytes.NewReader(l.blob))
		if err != nil {
			log.Fatal(err) // names the layer and the entry; errors.Is works with pullkit's sentinels
		}
		fmt.Println("applied", res.Entries, "entries, diffID verified:", res.DiffID == l.diffID)
	}
	if err := r.Commit(); err != nil {
		log.Fatal(err)
	}
	list(filepath.Join(dir, "rootfs"))
	// Output:
	// applied 3 entries, diffID verified: true
	// applied 3 entries, diffID verified: true
	//   app
	//   app/run
	//   etc
	//   etc/os-release
}

// An engine that runs containers keeps one snapshot per layer, named by chain ID, and
// mounts them as overlay lowerdirs; a base shared by two images is unpacked once. Layers
// may be applied concurrently, as their blobs arrive.
func ExampleSnapshots() {
	base := makeLayer("etc/", "", "etc/motd", "hello\n")
	web := makeLayer("etc/.wh.motd", "", "srv/", "", "srv/index.html", "<h1>hi</h1>\n")
	db := makeLayer("var/", "", "var/db", "data\n")

	dir, err := os.MkdirTemp("", "unpack-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	ctx := context.Background()
	s, err := unpack.OpenSnapshots(filepath.Join(dir, "snapshots"))
	if err != nil {
		log.Fatal(err)
	}
	for _, image := range [][]layer{{base, web}, {base, db}} {
		var parent digest.Digest
		var lower []string
		for _, l := range image {
			chain := unpack.ChainID(parent, l.diffID)
			if s.Has(chain) {
				// Already unpacked: no need to download the blob at all.
				fmt.Println("reused", chain.Encoded()[:12])
			} else {
				res, err := s.Apply(ctx, parent, l.digest, l.diffID, bytes.NewReader(l.blob))
				if err != nil {
					log.Fatal(err)
				}
				fmt.Println("unpacked", res.ChainID.Encoded()[:12])
			}
			lower = append([]string{s.Path(chain)}, lower...)
			parent = chain
		}
		// mount -t overlay overlay -o lowerdir=<top>:...:<base>[,upperdir=...,workdir=...] <target>
		fmt.Println("lowerdirs:", len(lower))
	}
	// Output:
	// unpacked 7970dde43bad
	// unpacked 105fe2fc16f5
	// lowerdirs: 2
	// reused 7970dde43bad
	// unpacked 3e4e1feafd83
	// lowerdirs: 2
}
