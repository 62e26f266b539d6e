// Command mkimage builds an image from directory trees of this machine and pushes it to
// a registry, for the unpack benchmark (bench/unpack.sh): each layer is a tar of real
// files (regular files, directories, symbolic and hard links, with their modes, owners
// and times), gzip-compressed at the default level as docker build does, so the
// benchmark unpacks what real images hold rather than one file of random bytes.
//
//	mkimage -ref 127.0.0.1:5000/bench/app:latest -cache DIR \
//	    -layer 'base=/usr/share,!/usr/share/package-lists' \
//	    -layer 'go=/usr/local/go' \
//	    -layer 'top=/usr/lib/git-core,-/usr/share/doc'
//
// A layer is NAME=ITEM[,ITEM...]: a host path (a directory or file, stored under its own
// name in the image, parents included), "!PATH" to leave PATH out, "-PATH" to write a
// whiteout that removes PATH from the layers below. Layers are built once into
// CACHE/NAME.tar.gz (rebuilt when their spec changes) and reused by name, so two images
// that name the same layer share its blob: the shared base of the benchmark.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

type layers []string

func (l *layers) String() string     { return strings.Join(*l, " ") }
func (l *layers) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	ref := flag.String("ref", "", "image reference to push, e.g. 127.0.0.1:5000/bench/app:latest")
	cache := flag.String("cache", os.TempDir(), "directory the layer files are built in and reused from")
	var specs layers
	flag.Var(&specs, "layer", "a layer, base first: NAME=PATH[,!EXCLUDED][,-WHITEOUT]... (repeat)")
	flag.Parse()
	if *ref == "" || len(specs) == 0 {
		fmt.Fprintln(os.Stderr, "usage: mkimage -ref REF -cache DIR -layer NAME=PATH,... [-layer ...]")
		os.Exit(2)
	}
	if err := run(*ref, *cache, specs); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ref, cache string, specs []string) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	var ls []v1.Layer
	var hist []v1.History
	for _, s := range specs {
		nm, items, ok := strings.Cut(s, "=")
		if !ok || nm == "" || items == "" {
			return fmt.Errorf("layer %q: want NAME=PATH[,PATH]", s)
		}
		p, err := build(cache, nm, strings.Split(items, ","))
		if err != nil {
			return fmt.Errorf("layer %s: %w", nm, err)
		}
		l, err := tarball.LayerFromFile(p)
		if err != nil {
			return err
		}
		ls = append(ls, l)
		hist = append(hist, v1.History{CreatedBy: "mkimage " + s, Created: v1.Time{Time: time.Unix(0, 0).UTC()}})
	}
	img, err := mutate.AppendLayers(empty.Image, ls...)
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{
		OS: "linux", Architecture: "amd64", RootFS: cf.RootFS, History: hist,
		Config: v1.Config{Env: []string{"PATH=/usr/local/go/bin:/usr/bin:/bin"}},
	})
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithJobs(4))
}

// build writes the layer NAME from items into cache, unless the file there was built
// from the same items.
func build(cache, nm string, items []string) (string, error) {
	sum := sha256.Sum256([]byte(strings.Join(items, "\x00")))
	key := hex.EncodeToString(sum[:8])
	p := filepath.Join(cache, nm+".tar.gz")
	stamp := p + ".spec"
	if b, err := os.ReadFile(stamp); err == nil && string(b) == key {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	var roots, excl, whiteouts []string
	for _, it := range items {
		switch {
		case strings.HasPrefix(it, "!"):
			excl = append(excl, filepath.Clean(it[1:]))
		case strings.HasPrefix(it, "-"):
			whiteouts = append(whiteouts, filepath.Clean(it[1:]))
		default:
			roots = append(roots, filepath.Clean(it))
		}
	}
	start := time.Now()
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp)
	gz := gzip.NewWriter(f) // the default level, as docker build and buildkit write
	w := &writer{tw: tar.NewWriter(gz), dirs: map[string]bool{}, links: map[[2]uint64]string{}}
	for _, root := range roots {
		if err := w.tree(root, excl); err != nil {
			return "", err
		}
	}
	for _, wo := range whiteouts {
		if err := w.parents(path.Dir(strings.TrimPrefix(wo, "/"))); err != nil {
			return "", err
		}
		n := path.Join(path.Dir(strings.TrimPrefix(wo, "/")), ".wh."+path.Base(wo))
		if err := w.tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: time.Unix(0, 0)}); err != nil {
			return "", err
		}
	}
	if err := w.tw.Close(); err != nil {
		return "", err
	}
	if err := gz.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, p); err != nil {
		return "", err
	}
	st, _ := os.Stat(p)
	fmt.Fprintf(os.Stderr, "mkimage: layer %s: %d entries, %d MB uncompressed, %d MB gzip, in %s\n",
		nm, w.entries, w.bytes>>20, st.Size()>>20, time.Since(start).Round(time.Second))
	return p, os.WriteFile(stamp, []byte(key), 0o644)
}

type writer struct {
	tw      *tar.Writer
	dirs    map[string]bool      // directories written
	links   map[[2]uint64]string // (dev, inode) of files with more than one link -> first name
	entries int
	bytes   int64
}

// parents writes the directories above name (relative) that are not written yet, with
// the host's metadata.
func (w *writer) parents(dir string) error {
	if dir == "." || dir == "" || w.dirs[dir] {
		return nil
	}
	if err := w.parents(path.Dir(dir)); err != nil {
		return err
	}
	fi, err := os.Lstat("/" + dir)
	if err != nil {
		return err
	}
	return w.entry("/"+dir, dir, fi)
}

func (w *writer) tree(root string, excl []string) error {
	if err := w.parents(path.Dir(strings.TrimPrefix(root, "/"))); err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, x := range excl {
			if p == x {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return w.entry(p, strings.TrimPrefix(p, "/"), fi)
	})
}

// entry writes the host file p as name.
func (w *writer) entry(p, name string, fi fs.FileInfo) error {
	m := fi.Mode()
	if m&(fs.ModeSocket|fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe) != 0 {
		return nil // none in the trees the benchmark uses; not worth the privileges
	}
	var link string
	if m&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(p); err != nil {
			return err
		}
	}
	hdr, err := tar.FileInfoHeader(fi, link)
	if err != nil {
		return err
	}
	hdr.Name = name
	hdr.Uname, hdr.Gname = "", ""
	hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
	hdr.ModTime = hdr.ModTime.Truncate(time.Second)
	hdr.Format = tar.FormatPAX
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && m.IsRegular() && st.Nlink > 1 {
		k := [2]uint64{uint64(st.Dev), uint64(st.Ino)} // Dev is an int32 on darwin
		if first, ok := w.links[k]; ok {
			hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		} else {
			w.links[k] = name
		}
	}
	if m.IsDir() {
		hdr.Name += "/"
		w.dirs[name] = true
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	w.entries++
	if hdr.Typeflag != tar.TypeReg || hdr.Size == 0 {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w.tw, io.LimitReader(f, hdr.Size))
	if err == nil && n < hdr.Size {
		err = fmt.Errorf("%s: shrank while read", p)
	}
	w.bytes += n
	return err
}
