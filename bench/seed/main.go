// Command seed pushes a benchmark image of random, incompressible gzip layers to a
// registry: each layer is a tar holding one file of random bytes, gzip-stored (level 0),
// so neither side can win by compression.
package main

import (
	"archive/tar"
	"compress/gzip"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	ref := flag.String("ref", "", "image reference to push, e.g. 127.0.0.1:5000/bench/big:latest")
	n := flag.Int("layers", 1, "number of layers")
	size := flag.Int64("size", 1<<20, "bytes of random content per layer")
	tmp := flag.String("tmp", os.TempDir(), "directory for the generated layer files")
	flag.Parse()
	if err := run(*ref, *n, *size, *tmp); err != nil {
		fmt.Fprintln(os.Stderr, "seed:", err)
		os.Exit(1)
	}
}

func run(ref string, n int, size int64, tmp string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(tmp, "seed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	rng := rand.New(rand.NewChaCha8([32]byte{byte(n), byte(size >> 10), byte(size >> 20)}))
	var layers []v1.Layer
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("layer-%d.tar.gz", i))
		if err := writeLayer(p, rng, size, i); err != nil {
			return err
		}
		l, err := tarball.LayerFromFile(p)
		if err != nil {
			return err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		return err
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: "amd64", RootFS: mustRootFS(img)})
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithJobs(4))
}

func mustRootFS(img v1.Image) v1.RootFS {
	cf, err := img.ConfigFile()
	if err != nil {
		panic(err)
	}
	return cf.RootFS
}

func writeLayer(path string, rng *rand.Rand, size int64, i int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewWriterLevel(f, gzip.NoCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(gz)
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("random-%d", i), Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := io.CopyN(tw, rngReader{rng}, size); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return f.Close()
}

type rngReader struct{ r *rand.Rand }

func (r rngReader) Read(p []byte) (int, error) {
	n := len(p)
	for len(p) >= 8 {
		v := r.r.Uint64()
		for k := 0; k < 8; k++ {
			p[k] = byte(v >> (8 * k))
		}
		p = p[8:]
	}
	for k := range p {
		p[k] = byte(r.r.Uint32())
	}
	return n, nil
}
