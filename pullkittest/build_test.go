package pullkittest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"testing"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/platforms"
)

// uncompressed returns the tar inside a layer blob.
func uncompressed(t *testing.T, data []byte) []byte {
	t.Helper()
	var rd io.Reader
	switch manifest.DetectCompression(data) {
	case manifest.Gzip:
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		rd = zr
	case manifest.Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		rd = zr
	default:
		rd = bytes.NewReader(data)
	}
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRandomLayer(t *testing.T) {
	for _, c := range []manifest.Compression{manifest.Gzip, manifest.Zstd, manifest.Uncompressed} {
		l := RandomLayer(42, 5000, c)
		if got := manifest.DetectCompression(l.Data); got != c || l.Compression != c {
			t.Errorf("%v: bytes are %v", c, got)
		}
		plain := uncompressed(t, l.Data)
		if digest.FromBytes(plain) != l.DiffID || digest.FromBytes(l.Data) != l.Digest || int64(len(l.Data)) != l.Size {
			t.Errorf("%v: digests do not match the bytes", c)
		}
		tr := tar.NewReader(bytes.NewReader(plain))
		var files int
		var size int64
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			if h.Typeflag == tar.TypeReg {
				files++
				size += h.Size
			}
		}
		if files != 1 || size != 5000 {
			t.Errorf("%v: %d files, %d bytes", c, files, size)
		}
		if again := RandomLayer(42, 5000, c); again.Digest != l.Digest {
			t.Errorf("%v: not deterministic", c)
		}
		if other := RandomLayer(43, 5000, c); other.DiffID == l.DiffID {
			t.Errorf("%v: seeds 42 and 43 made the same content", c)
		}
	}
}

// checkImage fetches an image the way a client does and checks it is whole.
func checkImage(t *testing.T, r *Registry, img *Image) *manifest.Manifest {
	t.Helper()
	resp, body := get(t, http.MethodGet, r.URL()+"/v2/"+img.Repo+"/manifests/"+img.Digest.String(), acceptAll)
	if resp.StatusCode != 200 || !bytes.Equal(body, img.Raw) || resp.Header.Get("Docker-Content-Digest") != img.Digest.String() {
		t.Fatalf("%s %s: %d, digest %s", img.Format, img.Digest, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	m, err := manifest.Verify(body, resp.Header.Get("Content-Type"), img.Digest)
	if err != nil {
		t.Fatalf("%s: %v", img.Format, err)
	}
	var want []digest.Digest
	for _, l := range img.Layers {
		want = append(want, l.Digest)
	}
	var got []digest.Digest
	for _, l := range m.Layers {
		if !l.Empty {
			got = append(got, l.Digest)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("%s: layers %v, want %v", img.Format, got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%s: layer %d is %s, want %s", img.Format, i, got[i], want[i])
		}
	}
	blobs := append([]digest.Digest(nil), want...)
	if m.Config != nil {
		blobs = append(blobs, m.Config.Digest)
	}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest) // schema 1's empty layers too
	}
	for _, d := range blobs {
		resp, body := get(t, http.MethodGet, r.URL()+"/v2/"+img.Repo+"/blobs/"+d.String())
		if resp.StatusCode != 200 || digest.FromBytes(body) != d {
			t.Errorf("%s: blob %s: %d", img.Format, d, resp.StatusCode)
		}
	}
	if m.Config != nil {
		_, raw := get(t, http.MethodGet, r.URL()+"/v2/"+img.Repo+"/blobs/"+m.Config.Digest.String())
		cfg, err := manifest.ParseConfig(raw)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Platform().String() != img.Platform.String() {
			t.Errorf("%s: config platform %s, want %s", img.Format, cfg.Platform(), img.Platform)
		}
		for i, l := range img.Layers {
			if cfg.RootFS.DiffIDs[i] != l.DiffID || digest.FromBytes(uncompressed(t, l.Data)) != l.DiffID {
				t.Errorf("%s: diffID %d", img.Format, i)
			}
		}
	}
	return m
}

func TestPushImage(t *testing.T) {
	r := NewRegistry(t)
	arm := platforms.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}
	for _, tc := range []struct {
		format Format
		opts   []BuildOption
	}{
		{Schema2, nil},
		{Schema2, []BuildOption{Compression(manifest.Uncompressed), Layers(3, 100)}},
		{Schema2, []BuildOption{Compression(manifest.Zstd)}},
		{Schema2, []BuildOption{Layers(0, 0)}},
		{OCI, []BuildOption{Platform(arm), Annotations(map[string]string{"a": "b"})}},
		{OCI, []BuildOption{Compression(manifest.Zstd)}},
		{OCI, []BuildOption{Compression(manifest.Uncompressed)}},
		{Schema1, nil},
		{Schema1, []BuildOption{Layers(0, 0)}},
		{Schema1Unsigned, []BuildOption{Layers(3, 10)}},
	} {
		img := r.PushImage("img", "t", tc.format, tc.opts...)
		m := checkImage(t, r, img)
		if img.Ref() != r.Host()+"/img@"+img.Digest.String() || img.Repo != "img" || img.Tag != "t" {
			t.Errorf("%s: Ref %s", tc.format, img.Ref())
		}
		if m.MediaType != tc.format.MediaType() || img.MediaType != tc.format.MediaType() {
			t.Errorf("%s: media type %s", tc.format, m.MediaType)
		}
		switch tc.format {
		case Schema1:
			if img.Digest == digest.FromBytes(img.Raw) || len(m.Schema1.Signatures) != 1 {
				t.Errorf("schema 1: digest is sha256 of the bytes, or not signed")
			}
		case Schema1Unsigned:
			if img.Digest != digest.FromBytes(img.Raw) || m.Schema1.Signatures != nil {
				t.Errorf("unsigned schema 1: %s", img.Digest)
			}
		}
		for _, l := range m.Layers {
			if l.Empty {
				continue
			}
			switch {
			case tc.format == Schema2 && l.MediaType == manifest.MediaTypeOCILayerZstd:
			case tc.format == Schema2 && (l.MediaType == manifest.MediaTypeDockerLayer || l.MediaType == manifest.MediaTypeDockerLayerUncompressed):
			case tc.format == OCI && (l.MediaType == manifest.MediaTypeOCILayer || l.MediaType == manifest.MediaTypeOCILayerGzip || l.MediaType == manifest.MediaTypeOCILayerZstd):
			case tc.format == Schema1 || tc.format == Schema1Unsigned:
			default:
				t.Errorf("%s: layer media type %s", tc.format, l.MediaType)
			}
		}
	}
	// Builds are deterministic: another registry, the same digests (not schema 1,
	// whose signature has a time and a fresh key).
	a, b := r.PushImage("same", "v1", OCI), NewRegistry(t).PushImage("same", "v1", OCI)
	if a.Digest != b.Digest {
		t.Errorf("the same build made %s and %s", a.Digest, b.Digest)
	}
	if c := r.PushImage("same", "v2", OCI); c.Layers[0].Digest == a.Layers[0].Digest {
		t.Errorf("another tag made the same layers")
	}
}

func TestPushIndex(t *testing.T) {
	r := NewRegistry(t)
	for _, tc := range []struct {
		format Format
		opts   []BuildOption
	}{
		{ManifestList, nil},
		{OCIIndex, nil},
		{OCIIndex, []BuildOption{Attestations(), Platforms(
			platforms.Platform{OS: "linux", Architecture: "amd64"},
			platforms.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
			platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2113"})}},
	} {
		idx := r.PushIndex("idx", "t", tc.format, tc.opts...)
		resp, body := get(t, http.MethodGet, r.URL()+"/v2/idx/manifests/t", acceptAll)
		if resp.StatusCode != 200 || !bytes.Equal(body, idx.Raw) {
			t.Fatalf("%s: %d", tc.format, resp.StatusCode)
		}
		m, err := manifest.Verify(body, resp.Header.Get("Content-Type"), idx.Digest)
		if err != nil || m.Kind != manifest.KindIndex || m.MediaType != tc.format.MediaType() {
			t.Fatalf("%s: %v", tc.format, err)
		}
		if len(m.Manifests) != len(idx.Images)+len(idx.Attestations) {
			t.Fatalf("%s: %d entries", tc.format, len(m.Manifests))
		}
		for _, img := range idx.Images {
			checkImage(t, r, img)
			chosen, err := manifest.Choose(m, platforms.Only(img.Platform))
			if err != nil || chosen.Digest != img.Digest {
				t.Errorf("%s: Choose(%s) = %s, %v; want %s", tc.format, img.Platform, chosen.Digest, err, img.Digest)
			}
		}
		for i, att := range idx.Attestations {
			e := m.Manifests[len(idx.Images)+i]
			if e.Digest != att.Digest || e.Platform.OS != "unknown" || e.Platform.Architecture != "unknown" ||
				e.Annotations["vnd.docker.reference.type"] != "attestation-manifest" ||
				e.Annotations["vnd.docker.reference.digest"] != idx.Images[i].Digest.String() {
				t.Errorf("attestation entry %d: %+v", i, e)
			}
			resp, body := get(t, http.MethodGet, r.URL()+"/v2/idx/manifests/"+att.Digest.String(), acceptAll)
			if resp.StatusCode != 200 || !bytes.Contains(body, []byte(mediaTypeInToto)) {
				t.Errorf("attestation %d: %d %s", i, resp.StatusCode, body)
			}
			resp, body = get(t, http.MethodGet, r.URL()+"/v2/idx/blobs/"+att.Layers[0].Digest.String())
			if resp.StatusCode != 200 || !bytes.Contains(body, []byte(idx.Images[i].Digest.Encoded())) {
				t.Errorf("attestation %d statement: %d %s", i, resp.StatusCode, body)
			}
		}
	}
}

func TestBuildMisuse(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("x", "", OCI)
	for name, f := range map[string]func(){
		"index format to PushImage": func() { r.PushImage("x", "", OCIIndex) },
		"image format to PushIndex": func() { r.PushIndex("x", "", OCI) },
		"Platforms to PushImage":    func() { r.PushImage("x", "", OCI, Platforms()) },
		"attestations in a list":    func() { r.PushIndex("x", "", ManifestList, Attestations()) },
		"annotations on schema 1":   func() { r.PushImage("x", "", Schema1, Annotations(map[string]string{"a": "b"})) },
		"negative layers":           func() { Layers(-1, 0) },
		"artifact without type":     func() { r.PushArtifact("x", img.Descriptor(), "") },
		"artifact without subject":  func() { r.PushArtifact("x", manifest.Descriptor{}, "a/b") },
		"bad tag":                   func() { r.PushImage("x", "-bad", OCI) },
		"ArtifactBlob to PushIndex": func() { r.PushIndex("x", "", OCIIndex, ArtifactBlob("a/b", nil)) },
		"Platform to PushArtifact":  func() { r.PushArtifact("x", img.Descriptor(), "a/b", Platform(platforms.Platform{})) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
