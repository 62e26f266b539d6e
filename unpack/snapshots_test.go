//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/ztest"
)

// stackLayers is an image whose layers need every whiteout form: a whiteout of a file and
// of a directory, an opaque directory, a directory made again after its whiteout, a file
// and its whiteout in one layer, and a hard link within a layer.
func stackLayers() [][]ent {
	return [][]ent{
		{
			dir("etc"), file("etc/a", "a"), file("etc/b", "b"),
			dir("d"), file("d/x", "x"), dir("o"), file("o/old", "old"), dir("o/sub"), file("o/sub/s", "s"),
			file("f", "f"), dir("gone"), file("gone/g", "g"), symlink("lib", "usr/lib"), dir("usr"), dir("usr/lib"),
			file("usr/lib/libc.so", "elf"), hardlink("usr/lib/libc.so.6", "usr/lib/libc.so"),
		},
		{
			whiteout("etc/a"), dir("o"), opaque("o"), file("o/new", "new"), whiteout("f"), file("f2", "f2"),
			whiteout("d"), dir("d"), file("d/y", "y"), whiteout("gone"),
			{name: "dev", typ: tar.TypeDir, mode: 0o755}, {name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		},
		{
			file("g", "g"), whiteout("g"), whiteout("h"), file("h", "h"), file("etc/b", "b2"), dir("o"), file("o/third", "3"),
		},
	}
}

func layerBlobs(t *testing.T, layers [][]ent) (blobs [][]byte, diffIDs []digest.Digest) {
	for i, l := range layers {
		b := tarOf(t, l...)
		diffIDs = append(diffIDs, diffIDOf(b))
		if i%2 == 0 {
			b = ztest.Gzip(t, b)
		} else {
			b = ztest.Zstd(t, b)
		}
		blobs = append(blobs, b)
	}
	return blobs, diffIDs
}

func TestSnapshotsOverlayForm(t *testing.T) {
	requireRoot(t)
	for _, form := range []string{"trusted", "user", "user xattr whiteouts"} {
		t.Run(form, func(t *testing.T) {
			ns, xw, _ := strings.Cut(form, " ")
			opts := []Option{WithOverlayXattrs(ns)}
			if xw != "" {
				opts = append(opts, withXattrWhiteouts())
			}
			base := t.TempDir()
			s, err := OpenSnapshots(filepath.Join(base, "snapshots"), opts...)
			must(t, err)
			blobs, diffIDs := layerBlobs(t, stackLayers())
			var chain []digest.Digest
			parent := digest.Digest("")
			for i, b := range blobs {
				res, err := s.Apply(context.Background(), parent, digest.FromBytes(b), diffIDs[i], bytes.NewReader(b))
				if err != nil {
					t.Fatalf("layer %d: %v", i, err)
				}
				if res.Reused || res.DiffID != diffIDs[i] || res.ChainID != ChainID(parent, diffIDs[i]) {
					t.Fatalf("layer %d: result %+v", i, res)
				}
				parent = res.ChainID
				chain = append(chain, parent)
			}
			opq := ns + `.overlay.opaque="y"`
			got := scan(t, s.Path(chain[1]))
			want := map[string]string{
				"/etc/a": "whiteout", "/f": "whiteout", "/gone": "whiteout",
				"/o": "dir " + opq, "/d": "dir " + opq, "/dev/null": "char",
				"/o/new": "file", "/d/y": "file", "/f2": "file",
			}
			if xw != "" {
				// Whiteouts are empty files with the attribute, in directories marked to
				// be searched for them.
				xwh := ns + `.overlay.whiteout="y"`
				want = map[string]string{
					"/etc/a": "file " + xwh, "/f": "file " + xwh, "/gone": "file " + xwh,
					"/o": "dir " + opq, "/d": "dir " + opq, "/dev/null": "char",
					"/o/new": "file", "/d/y": "file", "/f2": "file",
				}
				if got["/etc"].Xattrs != ns+`.overlay.opaque="x"` || got["/"].Xattrs != ns+`.overlay.opaque="x"` {
					t.Errorf("directories holding whiteouts not marked: %v, %v", got["/etc"], got["/"])
				}
			}
			for p, w := range want {
				typ, attr, _ := strings.Cut(w, " ")
				if got[p].Type != typ || (attr != "" && got[p].Xattrs != attr) {
					t.Errorf("layer 2 %s: %v, want %s", p, got[p], w)
				}
			}
			if len(got) != len(want)+3 { // "/", "/etc", "/dev"
				t.Errorf("layer 2 snapshot:\n%s", formatTree(got))
			}
			top := scan(t, s.Path(chain[2]))
			if _, ok := top["/g"]; !ok || top["/g"].Type != "file" || top["/h"].Type != "file" {
				t.Errorf("layer 3: a file and its whiteout in one layer:\n%s", formatTree(top))
			}
			if top["/o"].Xattrs != "" {
				t.Errorf("layer 3 /o is opaque")
			}

			// Mounted, the snapshots must show what the flattened rootfs holds.
			e := newEnv(t)
			must(t, applyAll(t, e, stackLayers()))
			merged := mountOverlay(t, s, chain, ns)
			if merged == "" {
				return
			}
			want2, got2 := scan(t, e.root), scan(t, merged)
			if a, b := formatTree(want2), formatTree(got2); a != b {
				t.Fatalf("mounted snapshots differ from the rootfs:\nrootfs:\n%s\noverlay:\n%s", a, b)
			}
		})
	}
}

// mountOverlay mounts the snapshots of chain read-only and returns the mount point, or ""
// (having skipped) when overlayfs cannot be mounted here.
func mountOverlay(t *testing.T, s *Snapshots, chain []digest.Digest, ns string) string {
	t.Helper()
	var lower []string
	for i := len(chain) - 1; i >= 0; i-- {
		lower = append(lower, s.Path(chain[i]))
	}
	mnt := t.TempDir()
	opts := "lowerdir=" + strings.Join(lower, ":")
	if ns == "user" {
		opts += ",userxattr"
	}
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, opts); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount overlay %s: %v", opts, err)
		}
		t.Skipf("cannot mount overlayfs here: %v", err)
		return ""
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt
}

// countingReader fails the test if it is read.
type countingReader struct{ n int }

func (c *countingReader) Read(p []byte) (int, error) { c.n++; return 0, errors.New("read") }

func TestSnapshotsReuse(t *testing.T) {
	s, err := OpenSnapshots(filepath.Join(t.TempDir(), "s"))
	must(t, err)
	blobs, diffIDs := layerBlobs(t, stackLayers())
	ctx := context.Background()
	res, err := s.Apply(ctx, "", digest.FromBytes(blobs[0]), diffIDs[0], bytes.NewReader(blobs[0]))
	if err != nil || res.Reused {
		t.Fatalf("first apply: %+v %v", res, err)
	}
	if !s.Has(diffIDs[0]) {
		t.Fatal("Has is false after Apply")
	}
	var cr countingReader
	res, err = s.Apply(ctx, "", digest.FromBytes(blobs[0]), diffIDs[0], &cr)
	if err != nil || !res.Reused || cr.n != 0 || res.ChainID != diffIDs[0] {
		t.Fatalf("second apply: %+v %v, %d reads", res, err, cr.n)
	}
	// Without a diffID the layer is read, and its snapshot found there once it verifies.
	res, err = s.Apply(ctx, "", digest.FromBytes(blobs[0]), "", bytes.NewReader(blobs[0]))
	if err != nil || !res.Reused || res.ChainID != diffIDs[0] {
		t.Fatalf("apply without diffID: %+v %v", res, err)
	}
	// A second Snapshots on the same directory sees it too.
	s2, err := OpenSnapshots(s.dir)
	must(t, err)
	if res, err := s2.Apply(ctx, "", digest.FromBytes(blobs[0]), diffIDs[0], &cr); err != nil || !res.Reused {
		t.Fatalf("other Snapshots: %+v %v", res, err)
	}
	if left := leftovers(t, s.dir); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func leftovers(t *testing.T, dir string) []string {
	ents, err := os.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestSnapshotsConcurrent applies the layers of an image at once, in any order, and one
// layer many times at once: each is unpacked once.
func TestSnapshotsConcurrent(t *testing.T) {
	s, err := OpenSnapshots(filepath.Join(t.TempDir(), "s"))
	must(t, err)
	blobs, diffIDs := layerBlobs(t, stackLayers())
	ctx := context.Background()
	parents := []digest.Digest{""}
	for i := range diffIDs[:len(diffIDs)-1] {
		parents = append(parents, ChainID(parents[i], diffIDs[i]))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	fresh := map[digest.Digest]int{}
	for round := range 3 {
		for i := len(blobs) - 1; i >= 0; i-- {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := s.Apply(ctx, parents[i], digest.FromBytes(blobs[i]), diffIDs[i], bytes.NewReader(blobs[i]))
				if err != nil {
					t.Errorf("round %d layer %d: %v", round, i, err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				if !res.Reused {
					fresh[res.ChainID]++
				}
			}()
		}
	}
	wg.Wait()
	if len(fresh) != len(blobs) {
		t.Fatalf("unpacked %v", fresh)
	}
	for c, n := range fresh {
		if n != 1 || !s.Has(c) {
			t.Errorf("%s unpacked %d times", c, n)
		}
	}
	if left := leftovers(t, s.dir); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func TestSnapshotsFailures(t *testing.T) {
	s, err := OpenSnapshots(filepath.Join(t.TempDir(), "s"))
	must(t, err)
	ctx := context.Background()
	good := tarOf(t, file("a", "1"))
	cases := []struct {
		name   string
		parent digest.Digest
		blob   []byte
		diffID digest.Digest
		is     error
	}{
		{"diffID mismatch", "", good, digest.FromString("x"), pullkit.ErrDigestMismatch},
		{"hard link to a lower layer", "", tarOf(t, hardlink("h", "etc/passwd")), "", pullkit.ErrUnsupported},
		{"escape", "", tarOf(t, symlink("s", "../.."), hardlink("h", "s")), "", pullkit.ErrInvalid},
		{"bad parent", "sha256:nope", good, "", pullkit.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			layer := digest.FromString(c.name)
			_, err := s.Apply(ctx, c.parent, layer, c.diffID, bytes.NewReader(c.blob))
			if !errors.Is(err, c.is) {
				t.Fatalf("error %v, want %v", err, c.is)
			}
			checkError(t, err, layer)
			t.Log(err)
		})
	}
	if left := leftovers(t, s.dir); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if ents, _ := os.ReadDir(filepath.Join(s.dir, "sha256")); len(ents) > 0 {
		t.Fatalf("snapshots made by failed layers: %v", ents)
	}
}

func TestChainID(t *testing.T) {
	a, b := digest.FromString("a"), digest.FromString("b")
	if ChainID("", a) != a {
		t.Error("a base layer's chain ID is its diffID")
	}
	if got, want := ChainID(a, b), digest.FromString(fmt.Sprintf("%s %s", a, b)); got != want {
		t.Errorf("ChainID(a, b) = %s, want %s", got, want)
	}
}

func TestOptionsRefuseBadValues(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "x")
	bad := []Option{
		WithOverlayXattrs("security"),
		WithIDMap([]IDMap{{0, 1000, 0}}, []IDMap{{0, 1000, 1}}),
		WithIDMap([]IDMap{{0, 1000, 10}, {5, 2000, 10}}, []IDMap{{0, 1000, 1}}),
		WithIDMap([]IDMap{{4294967295, 1000, 2}}, []IDMap{{0, 1000, 1}}),
		WithIDMap(nil, []IDMap{{0, 1000, 1}}),
		nil,
	}
	for i, o := range bad {
		if _, err := OpenSnapshots(dir, o); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("option %d: OpenSnapshots: %v", i, err)
		}
		if _, err := NewRootfs(dir, o); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("option %d: NewRootfs: %v", i, err)
		}
	}
	if _, err := NewRootfs(dir, WithOverlayXattrs("user")); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("NewRootfs took a snapshot option: %v", err)
	}
	must(t, os.Mkdir(dir, 0o755))
	if _, err := NewRootfs(dir); !errors.Is(err, pullkit.ErrAlreadyExists) {
		t.Errorf("NewRootfs over an existing directory: %v", err)
	}
}
