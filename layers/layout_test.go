package layers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

func TestOpenLayoutCreatesAndReopens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{LayoutFile, IndexFile, filepath.Join(BlobsDir, "sha256"), IngestDir} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	var lf struct {
		Version string `json:"imageLayoutVersion"`
	}
	b, _ := os.ReadFile(filepath.Join(dir, LayoutFile))
	if err := json.Unmarshal(b, &lf); err != nil || lf.Version != "1.0.0" {
		t.Errorf("oci-layout %s", b)
	}
	// Relative path and symlink to the same directory share the per-store state.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	l2, err := OpenLayout(link)
	if err != nil {
		t.Fatal(err)
	}
	if l2.st != l.st {
		t.Error("two Layouts of one directory do not share their state")
	}
	other := openTemp(t)
	if other.st == l.st {
		t.Error("Layouts of different directories share their state")
	}
}

func TestOpenLayoutRejectsBadLayouts(t *testing.T) {
	for _, tc := range []struct {
		name, file, content string
	}{
		{"layout version 2", LayoutFile, `{"imageLayoutVersion":"2.0.0"}`},
		{"layout not JSON", LayoutFile, `nope`},
		{"index not JSON", IndexFile, `{`},
		{"index null", IndexFile, `null`},
		{"manifests not a list", IndexFile, `{"schemaVersion":2,"manifests":{}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, tc.file), []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenLayout(dir); !errors.Is(err, ErrBadLayout) {
				t.Errorf("error %v, want ErrBadLayout", err)
			}
		})
	}
}

func TestPathAndHas(t *testing.T) {
	l := openTemp(t)
	for _, d := range []digest.Digest{"sha256:../../etc/passwd", "sha256:", "foo:bar", "", digest.Digest("sha256:" + strings.Repeat("A", 64))} {
		if p := l.Path(d); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", d, p)
		}
		if l.Has(d) {
			t.Errorf("Has(%q)", d)
		}
	}
	d := digest.FromString("x")
	if want := filepath.Join(l.Dir(), "blobs", "sha256", d.Encoded()); l.Path(d) != want {
		t.Errorf("Path = %s, want %s", l.Path(d), want)
	}
	if l.Has(d) {
		t.Error("Has on an empty store")
	}
}

func TestPutBlob(t *testing.T) {
	data := []byte(`{"architecture":"amd64"}`)
	good := descOf(manifest.MediaTypeOCIConfig, data)
	for _, tc := range []struct {
		name string
		desc manifest.Descriptor
		want error
	}{
		{"ok", good, nil},
		{"unknown size", manifest.Descriptor{Digest: good.Digest, Size: -1}, nil},
		{"wrong digest", manifest.Descriptor{Digest: digest.FromString("y"), Size: good.Size}, ErrDigestMismatch},
		{"wrong size", manifest.Descriptor{Digest: good.Digest, Size: good.Size + 1}, ErrSizeMismatch},
		{"invalid digest", manifest.Descriptor{Digest: "sha256:zz", Size: good.Size}, digest.ErrDigestInvalidLength},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := openTemp(t)
			err := l.PutBlob(context.Background(), tc.desc, data)
			if !errors.Is(err, tc.want) {
				t.Fatalf("error %v, want %v", err, tc.want)
			}
			if tc.want == nil {
				assertStored(t, l, data)
				// Idempotent.
				if err := l.PutBlob(context.Background(), tc.desc, data); err != nil {
					t.Fatal(err)
				}
			} else if l.Has(tc.desc.Digest) || l.Has(good.Digest) {
				t.Error("a blob that failed verification was stored")
			}
			if left := ingestEntries(t, l); len(left) != 0 {
				t.Errorf("ingest %v", left)
			}
		})
	}
}

func readIndex(t *testing.T, l *Layout) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(l.Dir(), IndexFile))
	if err != nil {
		t.Fatal(err)
	}
	var idx map[string]any
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

func refNames(t *testing.T, l *Layout) map[string]string {
	t.Helper()
	out := map[string]string{}
	ms, _ := readIndex(t, l)["manifests"].([]any)
	for i, m := range ms {
		e := m.(map[string]any)
		name := fmt.Sprintf("#%d", i)
		if a, ok := e["annotations"].(map[string]any); ok {
			if n, ok := a[AnnotationRefName].(string); ok {
				name = n
			}
		}
		out[name] = e["digest"].(string)
	}
	return out
}

func TestAddManifest(t *testing.T) {
	l := openTemp(t)
	ctx := context.Background()
	m1 := []byte(`{"schemaVersion":2,"n":1}`)
	m2 := []byte(`{"schemaVersion":2,"n":2}`)
	d1, d2 := descOf(manifest.MediaTypeOCIManifest, m1), descOf(manifest.MediaTypeOCIManifest, m2)
	if err := l.AddManifest(d1, "latest"); !errors.Is(err, ErrBlobMissing) {
		t.Fatalf("manifest not stored: %v, want ErrBlobMissing", err)
	}
	for _, p := range []struct {
		d manifest.Descriptor
		b []byte
	}{{d1, m1}, {d2, m2}} {
		if err := l.PutBlob(ctx, p.d, p.b); err != nil {
			t.Fatal(err)
		}
	}
	d1.Platform = &platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	steps := []struct {
		d    manifest.Descriptor
		ref  string
		want map[string]string
	}{
		{d1, "latest", map[string]string{"latest": string(d1.Digest)}},
		{d2, "v2", map[string]string{"latest": string(d1.Digest), "v2": string(d2.Digest)}},
		{d2, "latest", map[string]string{"latest": string(d2.Digest), "v2": string(d2.Digest)}},
		{d1, "", map[string]string{"latest": string(d2.Digest), "v2": string(d2.Digest), "#2": string(d1.Digest)}},
		{d1, "", map[string]string{"latest": string(d2.Digest), "v2": string(d2.Digest), "#2": string(d1.Digest)}},
	}
	for i, s := range steps {
		if err := l.AddManifest(s.d, s.ref); err != nil {
			t.Fatal(err)
		}
		got := refNames(t, l)
		if fmt.Sprint(got) != fmt.Sprint(s.want) {
			t.Errorf("step %d: index %v, want %v", i, got, s.want)
		}
	}
	idx := readIndex(t, l)
	if idx["schemaVersion"] != 2.0 || idx["mediaType"] != manifest.MediaTypeOCIIndex {
		t.Errorf("index header %v", idx)
	}
	if d1.Annotations != nil {
		t.Error("AddManifest changed the caller's descriptor")
	}
}

func TestAddManifestKeepsForeignContent(t *testing.T) {
	dir := t.TempDir()
	// docker save (Docker 25) writes "manifests": null; other tools add fields.
	src, err := os.ReadFile("../testdata/oci-index/docker25-save-index-null-manifests.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, IndexFile), src, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := []byte(`{}`)
	d := descOf(manifest.MediaTypeOCIManifest, m)
	if err := l.PutBlob(context.Background(), d, m); err != nil {
		t.Fatal(err)
	}
	if err := l.AddManifest(d, "x"); err != nil {
		t.Fatal(err)
	}
	if got := refNames(t, l); got["x"] != string(d.Digest) || len(got) != 1 {
		t.Errorf("index %v", got)
	}
	// Unknown top-level fields and entries survive.
	withExtra := `{"schemaVersion":2,"annotations":{"k":"v"},"manifests":[{"mediaType":"m","digest":"` + string(digest.FromString("o")) + `","size":1,"data":"e30="}]}`
	if err := os.WriteFile(filepath.Join(dir, IndexFile), []byte(withExtra), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := l.AddManifest(d, "x"); err != nil {
		t.Fatal(err)
	}
	idx := readIndex(t, l)
	if a, _ := idx["annotations"].(map[string]any); a["k"] != "v" {
		t.Errorf("top-level annotations lost: %v", idx)
	}
	ms := idx["manifests"].([]any)
	if len(ms) != 2 || ms[0].(map[string]any)["data"] != "e30=" {
		t.Errorf("foreign entry not kept: %v", ms)
	}
}

func TestAddManifestConcurrent(t *testing.T) {
	dir := t.TempDir()
	var ls []*Layout
	for range 2 {
		l, err := OpenLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := ls[i%2]
			m := []byte(fmt.Sprintf(`{"n":%d}`, i))
			d := descOf(manifest.MediaTypeOCIManifest, m)
			if err := l.PutBlob(context.Background(), d, m); err != nil {
				errs <- err
				return
			}
			errs <- l.AddManifest(d, fmt.Sprint("tag", i))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := refNames(t, ls[0]); len(got) != n {
		t.Errorf("%d index entries after %d concurrent AddManifest, want %d", len(got), n, n)
	}
	if left := ingestEntries(t, ls[0]); len(left) != 0 {
		t.Errorf("ingest %v", left)
	}
}

// pullImage stores a two-layer OCI image (layers fetched with Fetch from a test server,
// config and manifest with PutBlob) under ref, and returns the manifest descriptor.
// The second layer is zstd when withZstd, gzip otherwise.
func pullImage(t *testing.T, l *Layout, ref string, withZstd bool) manifest.Descriptor {
	t.Helper()
	tars := [][]byte{makeTar(t, 80, 20<<10), makeTar(t, 81, 30<<10)}
	layers := [][]byte{gzipBytes(t, tars[0]), gzipBytes(t, tars[1])}
	types := []string{manifest.MediaTypeOCILayerGzip, manifest.MediaTypeOCILayerGzip}
	if withZstd {
		layers[1], types[1] = zstdBytes(t, tars[1]), manifest.MediaTypeOCILayerZstd
	}
	srv := newBlobServer(t, layers...)
	var blobs []Blob
	for i, b := range layers {
		blobs = append(blobs, Blob{Desc: descOf(types[i], b), DiffID: true})
	}
	res, err := Fetch(context.Background(), srv.fetcher(), l, blobs)
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs []string
	for i, r := range res {
		if r.DiffID != digest.FromBytes(tars[i]) {
			t.Fatalf("layer %d diffID %s, want %s", i, r.DiffID, digest.FromBytes(tars[i]))
		}
		diffIDs = append(diffIDs, string(r.DiffID))
	}
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"/bin/true"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
	})
	cfgDesc := descOf(manifest.MediaTypeOCIConfig, cfg)
	var layerDescs []manifest.Descriptor
	for _, r := range res {
		layerDescs = append(layerDescs, r.Desc)
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": cfgDesc, "layers": layerDescs,
	})
	manDesc := descOf(manifest.MediaTypeOCIManifest, man)
	for _, p := range []struct {
		d manifest.Descriptor
		b []byte
	}{{cfgDesc, cfg}, {manDesc, man}} {
		if err := l.PutBlob(context.Background(), p.d, p.b); err != nil {
			t.Fatal(err)
		}
	}
	manDesc.Platform = &platforms.Platform{OS: "linux", Architecture: "amd64"}
	if err := l.AddManifest(manDesc, ref); err != nil {
		t.Fatal(err)
	}
	return manDesc
}

func TestLayoutReadableByGoContainerRegistry(t *testing.T) {
	l := openTemp(t)
	want := pullImage(t, l, "v1", true)
	p, err := layout.FromPath(l.Dir())
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != string(want.Digest) ||
		im.Manifests[0].Annotations[AnnotationRefName] != "v1" {
		t.Fatalf("index manifests %+v", im.Manifests)
	}
	h, _ := v1.NewHash(string(want.Digest))
	img, err := idx.Image(h)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := img.Digest(); err != nil || d.String() != string(want.Digest) {
		t.Errorf("image digest %v, %v; want %s", d, err, want.Digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) != 2 || len(cf.RootFS.DiffIDs) != 2 {
		t.Fatalf("layers %d (%v), config diff_ids %v", len(ls), err, cf.RootFS.DiffIDs)
	}
	// Read every layer back through go-containerregistry, compressed and not, and
	// check it against its digest and the config's diffID.
	for i, layer := range ls {
		for _, c := range []struct {
			open func() (io.ReadCloser, error)
			want v1.Hash
		}{{layer.Compressed, mustHash(layer.Digest)}, {layer.Uncompressed, cf.RootFS.DiffIDs[i]}} {
			rc, err := c.open()
			if err != nil {
				t.Fatal(err)
			}
			got, err := digest.FromReader(rc)
			rc.Close()
			if err != nil || string(got) != c.want.String() {
				t.Errorf("layer %d: read %s (%v), want %s", i, got, err, c.want)
			}
		}
	}
}

func mustHash(f func() (v1.Hash, error)) v1.Hash {
	h, _ := f()
	return h
}

func TestLayoutReadableBySkopeo(t *testing.T) {
	skopeo, err := exec.LookPath("skopeo")
	if err != nil {
		t.Skip("skopeo not on PATH")
	}
	l := openTemp(t)
	want := pullImage(t, l, "v1", true)
	out, err := exec.Command(skopeo, "inspect", "oci:"+l.Dir()+":v1").CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo inspect: %v\n%s", err, out)
	}
	var info struct {
		Digest string
		Layers []string
		Os     string
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatalf("skopeo output: %v\n%s", err, out)
	}
	if info.Digest != string(want.Digest) || len(info.Layers) != 2 || info.Os != "linux" {
		t.Errorf("skopeo sees %+v, want digest %s and 2 layers", info, want.Digest)
	}
	// A full copy reads (and verifies) every blob.
	dst := t.TempDir()
	if out, err := exec.Command(skopeo, "copy", "oci:"+l.Dir()+":v1", "dir:"+dst).CombinedOutput(); err != nil {
		t.Fatalf("skopeo copy: %v\n%s", err, out)
	}
}

func TestLayoutReadableByUmoci(t *testing.T) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci not on PATH")
	}
	l := openTemp(t)
	pullImage(t, l, "v1", false)
	out, err := exec.Command(umoci, "ls", "--layout", l.Dir()).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "v1" {
		t.Fatalf("umoci ls: %v\n%s", err, out)
	}
	// Unpacking reads every layer and checks it against the config's diffIDs (this
	// umoci does not know zstd layers).
	bundle := filepath.Join(t.TempDir(), "bundle")
	if out, err := exec.Command(umoci, "unpack", "--rootless", "--image", l.Dir()+":v1", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "dir", "file2")); err != nil {
		t.Errorf("unpacked rootfs: %v", err)
	}
}
