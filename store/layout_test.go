package store

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

func TestOpenLayoutCreatesAndReopens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{LayoutFile, IndexFile, filepath.Join(BlobsDir, "sha256"), IngestDir, StateDir} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, LayoutFile))
	var lf struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &lf); err != nil || lf.Version != LayoutVersion {
		t.Errorf("oci-layout %s", b)
	}
	if idx := rawIndex(t, dir); idx["schemaVersion"] != 2.0 || idx["mediaType"] != manifest.MediaTypeOCIIndex {
		t.Errorf("index.json %v", idx)
	}
	// A path through a symbolic link is the same directory, with the same state.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLayout(link)
	if err != nil {
		t.Fatal(err)
	}
	if l2.st != l.st || l2.Dir() != l.Dir() {
		t.Error("two Layouts of one directory do not share their state")
	}
	if other := openTemp(t); other.st == l.st {
		t.Error("Layouts of different directories share their state")
	}
}

func TestOpenLayoutRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
	}{
		{"layout version 2", LayoutFile, `{"imageLayoutVersion":"2.0.0"}`},
		{"layout not JSON", LayoutFile, `nope`},
		{"index not JSON", IndexFile, `{`},
		{"index null", IndexFile, `null`},
		{"manifests not a list", IndexFile, `{"schemaVersion":2,"manifests":{}}`},
		{"a directory of something else", "notes.txt", `hello`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := OpenLayout(dir)
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("error %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name %s", err, dir)
			}
			if tc.file == "notes.txt" {
				if left := entries(t, dir); !slices.Equal(left, []string{"notes.txt"}) {
					t.Errorf("OpenLayout wrote into a directory it refused: %v", left)
				}
			}
		})
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := OpenLayout(f); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("OpenLayout of a file: %v, want ErrInvalid", err)
	}
	// A layout with only an index.json (as some tools leave one) is completed.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, IndexFile), []byte(`{"schemaVersion":2,"manifests":[]}`), 0o644)
	if _, err := OpenLayout(dir); err != nil {
		t.Errorf("OpenLayout of a directory with only index.json: %v", err)
	}
}

func TestPath(t *testing.T) {
	l := openTemp(t)
	for _, d := range []digest.Digest{"sha256:../../etc/passwd", "sha256:", "foo:bar", "", digest.Digest("sha256:" + strings.Repeat("A", 64)),
		digest.Digest("sha256:" + strings.Repeat("a", 63) + "/")} {
		if p := l.Path(d); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", d, p)
		}
	}
	d := digest.FromString("x")
	if want := filepath.Join(l.Dir(), "blobs", "sha256", d.Encoded()); l.Path(d) != want {
		t.Errorf("Path = %s, want %s", l.Path(d), want)
	}
	d512 := digest.SHA512.FromString("x")
	if want := filepath.Join(l.Dir(), "blobs", "sha512", d512.Encoded()); l.Path(d512) != want {
		t.Errorf("Path = %s, want %s", l.Path(d512), want)
	}
}

// A sha512 blob gets its own directory, created on its first commit.
func TestSHA512Blob(t *testing.T) {
	l := openTemp(t)
	ctx := testCtx(t)
	b := randBytes(5, 3000)
	d := manifest.Descriptor{Digest: digest.SHA512.FromBytes(b), Size: int64(len(b))}
	if err := WriteBlob(ctx, l, d, b); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadBlob(ctx, l, d.Digest, 1<<20); err != nil || string(got) != string(b) {
		t.Fatalf("ReadBlob: %v", err)
	}
	if _, err := os.Stat(l.Path(d.Digest)); err != nil {
		t.Fatal(err)
	}
}

// fixtureLayout extracts one of testdata/'s image-layout archives into a new
// directory and opens it.
func fixtureLayout(t *testing.T, archive string) *Layout {
	t.Helper()
	dir := t.TempDir()
	untar(t, filepath.Join("..", "testdata", archive), dir)
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// rawEntries returns index.json's entries re-encoded one by one (Go's encoding sorts
// keys, so equal entries encode equally).
func rawEntries(t *testing.T, dir string) []string {
	t.Helper()
	ms, _ := rawIndex(t, dir)["manifests"].([]any)
	var out []string
	for _, m := range ms {
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	return out
}

// The index of a layout that ctr export wrote (a manifest list named by both
// annotations, the containerd one a full reference and the OCI one a bare tag) is
// read, named by both, and kept through PutImage; GC keeps the image whole.
func TestCtrExportLayout(t *testing.T) {
	l := fixtureLayout(t, "oci-layout/hello-world-ctr-export.tar")
	ctx := testCtx(t)
	const full = "docker.io/library/hello-world:latest"
	list := digest.Digest("sha256:faa03e786c97f07ef34423fccceeec2398ec8a5759259f94d99078f264e9d7af")
	imgs, err := l.Images(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != full || imgs[0].Target.Digest != list {
		t.Fatalf("Images = %+v, want %s -> %s", imgs, full, list)
	}
	for _, name := range []string{full, "latest"} {
		if img, err := l.Image(ctx, name); err != nil || img.Target.Digest != list {
			t.Errorf("Image(%s) = %+v, %v", name, img, err)
		}
	}
	before := rawEntries(t, l.Dir())
	amd64 := manifest.Descriptor{MediaType: manifest.MediaTypeDockerSchema2, Size: 525,
		Digest:   "sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4",
		Platform: &platforms.Platform{OS: "linux", Architecture: "amd64"}}
	const mine = "registry.example/hello:amd64"
	if err := l.PutImage(ctx, Image{Name: mine, Target: amd64}); err != nil {
		t.Fatal(err)
	}
	after := rawEntries(t, l.Dir())
	if len(after) != 2 || after[0] != before[0] {
		t.Errorf("entries after PutImage:\n%v\nwant the original first:\n%v", after, before)
	}
	if got := imageNamesOf(t, l); !slices.Equal(got, []string{full, mine}) {
		t.Errorf("Images = %v", got)
	}
	res, err := l.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Blobs) != 0 {
		t.Errorf("GC removed %v from a complete image (its list's other children are absent)", res.Blobs)
	}
	if cr, err := l.Check(ctx, false); err != nil || cr.Checked != 4 || len(cr.Damaged) != 0 {
		t.Errorf("Check = %+v, %v; want 4 blobs, none damaged", cr, err)
	}
	// Deleting the tag "latest" removes the entry that carries it.
	if err := l.DeleteImage(ctx, "latest"); err != nil {
		t.Fatal(err)
	}
	if got := imageNamesOf(t, l); !slices.Equal(got, []string{mine}) {
		t.Errorf("Images after deleting latest = %v", got)
	}
	res, err = l.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{list}; !slices.Equal(res.Blobs, want) {
		t.Errorf("GC removed %v, want only the list %v", res.Blobs, want)
	}
}

func imageNamesOf(t *testing.T, s Store) []string {
	t.Helper()
	imgs, err := s.Images(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, img := range imgs {
		names = append(names, img.Name)
	}
	return names
}

// Docker 25's docker save writes "manifests": null; the layout opens, and PutImage
// turns it into a list.
func TestDocker25SaveLayout(t *testing.T) {
	l := fixtureLayout(t, "docker-archive/hello-world-docker25-save.tar")
	ctx := testCtx(t)
	if imgs, err := l.Images(ctx); err != nil || len(imgs) != 0 {
		t.Fatalf("Images = %v, %v; want none", imgs, err)
	}
	target := manifest.Descriptor{MediaType: manifest.MediaTypeOCIManifest, Size: 447,
		Digest: "sha256:411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe"}
	if err := l.PutImage(ctx, Image{Name: "docker.io/library/hello-world:latest", Target: target}); err != nil {
		t.Fatal(err)
	}
	if got := rawEntries(t, l.Dir()); len(got) != 1 {
		t.Errorf("entries %v", got)
	}
	// The named image keeps its manifest, config and layer; GC removes the legacy v1
	// image JSON that docker save also put in blobs/.
	res, err := l.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{target.Digest, "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"} {
		if !Has(ctx, l, d) {
			t.Errorf("GC removed %s", d)
		}
	}
	if len(res.Blobs) != 1 {
		t.Errorf("GC removed %v, want the one unreachable blob", res.Blobs)
	}
}

// Fields and entries PutImage does not own survive it, and keys that differ from ours
// only in case (which Go's decoder would take for ours) do not.
func TestPutImageKeepsForeignContent(t *testing.T) {
	l := openTemp(t)
	ctx := testCtx(t)
	m := storeBlob(t, l, []byte(`{"schemaVersion":2}`))
	other := digest.FromString("o")
	foreign := `{"schemaVersion":2,"MediaType":"shadow","annotations":{"k":"v"},"x-tool":[1,2],"manifests":[` +
		`{"mediaType":"m","digest":"` + string(other) + `","size":1,"data":"e30=","annotations":{"org.opencontainers.image.ref.name":"latest","org.example":"x"}},` +
		`{"mediaType":"m","digest":"` + string(other) + `","size":1}]}`
	if err := os.WriteFile(filepath.Join(l.Dir(), IndexFile), []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	before := rawEntries(t, l.Dir())
	// A skopeo-style bare tag is a name.
	if got := imageNamesOf(t, l); !slices.Equal(got, []string{"latest"}) {
		t.Errorf("Images = %v, want [latest]", got)
	}
	if err := l.PutImage(ctx, Image{Name: "r.example/x:1", Target: m}); err != nil {
		t.Fatal(err)
	}
	idx := rawIndex(t, l.Dir())
	if a, _ := idx["annotations"].(map[string]any); a["k"] != "v" {
		t.Errorf("top-level annotations lost: %v", idx)
	}
	if !reflect.DeepEqual(idx["x-tool"], []any{1.0, 2.0}) {
		t.Errorf("unknown field lost: %v", idx)
	}
	if _, ok := idx["MediaType"]; ok || idx["mediaType"] != manifest.MediaTypeOCIIndex {
		t.Errorf("case-shadowing key kept: %v", idx)
	}
	after := rawEntries(t, l.Dir())
	if len(after) != 3 || !slices.Equal(after[:2], before) {
		t.Errorf("entries\n%v\nwant the two foreign ones first:\n%v", after, before)
	}
	// Replacing "latest" replaces the foreign entry that carries it, and only that one.
	if err := l.PutImage(ctx, Image{Name: "latest", Target: m}); err != nil {
		t.Fatal(err)
	}
	after = rawEntries(t, l.Dir())
	if len(after) != 3 || after[0] != before[1] {
		t.Errorf("entries after replacing latest: %v", after)
	}
	// A go-containerregistry reader sees the index.
	p, err := layout.FromPath(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	ii, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 3 || im.Manifests[2].Annotations[AnnotationImageName] != "latest" || im.Manifests[2].Digest != (v1.Hash{Algorithm: "sha256", Hex: m.Digest.Encoded()}) {
		t.Errorf("go-containerregistry reads %+v", im.Manifests)
	}
}

// A blob truncated (or changed) on disk under its name is found by Check and removed
// with repair; a Writer that knows the size notices a truncated one by itself and
// writes it anew.
func TestCheckFindsDamage(t *testing.T) {
	l := openTemp(t)
	ctx := testCtx(t)
	good := storeBlob(t, l, randBytes(1, 5000))
	cut := randBytes(2, 3<<20)
	cutD := storeBlob(t, l, cut)
	flipped := randBytes(3, 4000)
	flipD := storeBlob(t, l, flipped)
	if err := os.Truncate(l.Path(cutD.Digest), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(l.Path(flipD.Digest), append([]byte{flipped[0] ^ 1}, flipped[1:]...), 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := sortDigests([]digest.Digest{cutD.Digest, flipD.Digest})
	res, err := l.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Checked != 3 || !slices.Equal(res.Damaged, damaged) || len(res.Removed) != 0 {
		t.Errorf("Check = %+v, want 3 checked, %v damaged, none removed", res, damaged)
	}
	if !Has(ctx, l, cutD.Digest) {
		t.Fatal("Check without repair removed a blob")
	}
	// The writer of a blob of known size sees the truncated one.
	w, err := l.Writer(ctx, cutD)
	if err != nil {
		t.Fatalf("Writer of a truncated blob: %v, want a writer", err)
	}
	if Has(ctx, l, cutD.Digest) || w.Offset() != 0 {
		t.Errorf("truncated blob still there, or writer at %d", w.Offset())
	}
	if err := writeAligned(w, cut, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, cutD.Size, cutD.Digest); err != nil {
		t.Fatal(err)
	}
	// A changed blob of the right size needs Check.
	if _, err := l.Writer(ctx, flipD); !errors.Is(err, pullkit.ErrAlreadyExists) {
		t.Errorf("Writer of a same-size damaged blob: %v", err)
	}
	res, err = l.Check(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if want := []digest.Digest{flipD.Digest}; !slices.Equal(res.Damaged, want) || !slices.Equal(res.Removed, want) {
		t.Errorf("Check(repair) = %+v, want %v damaged and removed", res, want)
	}
	if Has(ctx, l, flipD.Digest) || !Has(ctx, l, good.Digest) || !Has(ctx, l, cutD.Digest) {
		t.Error("repair removed the wrong blobs")
	}
	storeBlob(t, l, flipped)
	if res, err := l.Check(ctx, false); err != nil || len(res.Damaged) != 0 || res.Checked != 3 {
		t.Errorf("Check after fetching again = %+v, %v", res, err)
	}
	// Check honours its context.
	cctx, cancel := contextCanceled()
	defer cancel()
	if _, err := l.Check(cctx, false); !errors.Is(err, errCanceled) {
		t.Errorf("Check with a canceled context: %v", err)
	}
}

// Aligned blocks go through O_DIRECT where the file system takes it, and not when
// direct I/O is off; what is written reads back the same either way, aligned or not.
func TestDirectIO(t *testing.T) {
	for _, direct := range []bool{true, false} {
		l := openTemp(t, WithDirectIO(direct))
		ctx := testCtx(t)
		b := randBytes(7, 4<<20+5000)
		d := descOf("", b)
		w, err := l.Writer(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		before := directBytes.Load()
		buf := alignedBytes(1 << 20)
		// Two aligned blocks, a small piece, then blocks at unaligned offsets, then an
		// aligned block again after Truncate.
		for _, n := range []int{1 << 20, 1 << 20, 1000, 1 << 20} {
			copy(buf, b[w.Offset():w.Offset()+int64(n)])
			if _, err := w.Write(buf[:n]); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Truncate(2 << 20); err != nil {
			t.Fatal(err)
		}
		if err := writeAligned(w, b, 1<<20); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx, d.Size, d.Digest); err != nil {
			t.Fatal(err)
		}
		got := directBytes.Load() - before
		switch {
		case !direct && got != 0:
			t.Errorf("direct I/O off: %d bytes written with O_DIRECT", got)
		case direct && l.directOK() && got != 4<<20:
			t.Errorf("direct I/O on: %d bytes written with O_DIRECT, want %d (4 aligned blocks)", got, 4<<20)
		case direct && !l.directOK():
			t.Logf("the file system of %s does not take O_DIRECT", l.Dir())
		}
		if got, err := ReadBlob(ctx, l, d.Digest, d.Size); err != nil || string(got) != string(b) {
			t.Errorf("read back: %v, or wrong bytes", err)
		}
		if left := entries(t, filepath.Join(l.Dir(), IngestDir)); len(left) != 0 {
			t.Errorf("ingest/ holds %v", left)
		}
	}
}

// WithSync makes Commit fsync; it works on any file system.
func TestWithSync(t *testing.T) {
	l := openTemp(t, WithSync(true))
	b := randBytes(8, 2<<20)
	d := descOf("", b)
	w, err := l.Writer(testCtx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeAligned(w, b, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(testCtx(t), d.Size, d.Digest); err != nil {
		t.Fatal(err)
	}
	storeBlob(t, l, []byte("small"))
}

// Leases and partials, files the store keeps outside blobs/, are never where readers
// of the layout look, and ingest/ is empty once every writer has committed.
func TestIngestEmptyAfterWrites(t *testing.T) {
	l := openTemp(t)
	ctx := testCtx(t)
	ls, err := l.Lease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{10, 100 << 10, 1 << 20, 3 << 20} {
		b := randBytes(uint64(20+i), n)
		if err := ls.Add(ctx, digest.FromBytes(b)); err != nil {
			t.Fatal(err)
		}
		storeBlob(t, l, b)
	}
	if left := entries(t, filepath.Join(l.Dir(), IngestDir)); len(left) != 0 {
		t.Errorf("ingest/ holds %v", left)
	}
	if left := entries(t, filepath.Join(l.Dir(), StateDir, leasesDir)); len(left) != 1 {
		t.Errorf("leases/ holds %v, want the one lease", left)
	}
	ls.Release()
	if left := entries(t, filepath.Join(l.Dir(), StateDir, leasesDir)); len(left) != 0 {
		t.Errorf("leases/ holds %v after Release", left)
	}
}
