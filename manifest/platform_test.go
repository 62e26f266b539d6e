package manifest

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
)

const (
	helloWorldList   = "../testdata/manifest-list/hello-world-dockerhub-2022.json"
	armVariantsIndex = "../testdata/oci-index/regclient-testrepo-v3-arm-variants.json"
	unknownIndex     = "../testdata/oci-index/regclient-testrepo-v1-unknown-platform-entries.json"
	ctrExportIndex   = "../testdata/oci-index/hello-world-ctr-export-index.json"
	nullIndex        = "../testdata/oci-index/docker25-save-index-null-manifests.json"
)

// loadIndex reads an index fixture into a Manifest without the package's Parse: the
// "manifests" array is unmarshalled into []Descriptor as is.
func loadIndex(t testing.TB, path string) *Manifest {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := indexFromJSON(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return idx
}

func indexFromJSON(raw []byte) (*Manifest, error) {
	var doc struct {
		MediaType string       `json:"mediaType"`
		Manifests []Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return nil, err
	}
	return &Manifest{
		Kind:      KindIndex,
		MediaType: doc.MediaType,
		Digest:    digest.FromBytes(raw),
		Raw:       raw,
		Manifests: doc.Manifests,
	}, nil
}

// entryFor returns the digest of the entry whose platform, as written in the index,
// formats as s (e.g. "linux/arm/v7" or "windows/amd64:10.0.17763.3650").
func entryFor(t *testing.T, idx *Manifest, s string) digest.Digest {
	t.Helper()
	var found []digest.Digest
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.String() == s {
			found = append(found, d.Digest)
		}
	}
	if len(found) != 1 {
		t.Fatalf("fixture has %d entries for %s, want 1", len(found), s)
	}
	return found[0]
}

func mustParse(t *testing.T, s string) platforms.Platform {
	t.Helper()
	p, err := platforms.Parse(s)
	if err != nil {
		t.Fatalf("platforms.Parse(%q): %v", s, err)
	}
	return p
}

// TestChooseEveryListPlatform asks for each platform the hello-world list offers, as
// written in the list, and expects that very entry back.
func TestChooseEveryListPlatform(t *testing.T) {
	idx := loadIndex(t, helloWorldList)
	if idx.Digest != "sha256:faa03e786c97f07ef34423fccceeec2398ec8a5759259f94d99078f264e9d7af" {
		t.Fatalf("fixture digest %s, SOURCES.md says faa03e78…", idx.Digest)
	}
	if len(idx.Manifests) != 11 {
		t.Fatalf("fixture has %d entries, SOURCES.md says 11", len(idx.Manifests))
	}
	seen := map[digest.Digest]bool{}
	for i, d := range idx.Manifests {
		if d.Platform == nil {
			t.Fatalf("entry %d has no platform", i)
		}
		if seen[d.Digest] {
			t.Fatalf("entry %d repeats digest %s", i, d.Digest)
		}
		seen[d.Digest] = true
		t.Run(d.Platform.String(), func(t *testing.T) {
			got, err := Choose(idx, platforms.Only(*d.Platform))
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if got.Digest != d.Digest {
				t.Errorf("got %s (%v), want entry %d %s", got.Digest, got.Platform, i, d.Digest)
			}
			// The same through the string form a user would type.
			got, err = Choose(idx, platforms.Only(mustParse(t, d.Platform.String())))
			if err != nil {
				t.Fatalf("Choose(parsed): %v", err)
			}
			if got.Digest != d.Digest {
				t.Errorf("parsed: got %s, want %s", got.Digest, d.Digest)
			}
		})
	}

	got, err := Choose(idx, platforms.Only(platforms.Platform{OS: "linux", Architecture: "amd64"}))
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.Digest("sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4"); got.Digest != want {
		t.Errorf("linux/amd64: got %s, want %s (SOURCES.md)", got.Digest, want)
	}
	if got.MediaType != MediaTypeDockerSchema2 || got.Size != 525 {
		t.Errorf("linux/amd64: got media type %q size %d, want schema 2, 525", got.MediaType, got.Size)
	}
}

func TestChooseHelloWorldList(t *testing.T) {
	idx := loadIndex(t, helloWorldList)
	tests := []struct {
		want  string
		entry string // platform of the expected entry as written in the list; "" = no match
	}{
		{"linux/amd64", "linux/amd64"},
		{"linux/amd64/v3", "linux/amd64"},   // plain amd64 counts as v1
		{"linux/x86_64", "linux/amd64"},     // alias
		{"LINUX/AMD64", "linux/amd64"},      // case
		{"linux/amd64:5.15", "linux/amd64"}, // os.version only narrows Windows
		{"linux/arm64", "linux/arm64/v8"},
		{"linux/arm64/v8", "linux/arm64/v8"},
		{"linux/aarch64", "linux/arm64/v8"},
		{"linux/arm64/v9", "linux/arm64/v8"},
		{"linux/arm", "linux/arm/v7"},
		{"linux/arm/v7", "linux/arm/v7"},
		{"linux/armhf", "linux/arm/v7"},
		{"linux/arm/v8", "linux/arm/v7"}, // v8 host: v7 is the best <= v8
		{"linux/arm/v6", "linux/arm/v5"}, // only v5 is <= v6
		{"linux/armel", "linux/arm/v5"},
		{"linux/arm/v5", "linux/arm/v5"},
		{"linux/arm/v4", ""},
		{"linux/i686", "linux/386"},
		{"linux/riscv64", "linux/riscv64"},
		{"linux/riscv64/rva22u64", ""}, // other architectures need the same variant
		{"linux/s390x", "linux/s390x"},
		{"windows/amd64:10.0.20348.1", "windows/amd64:10.0.20348.1249"},
		{"windows/amd64:10.0.20348.1249", "windows/amd64:10.0.20348.1249"},
		{"windows/amd64:10.0.17763.999", "windows/amd64:10.0.17763.3650"},
		{"windows/amd64:10.0.17763", "windows/amd64:10.0.17763.3650"},
		{"windows/amd64", "windows/amd64:10.0.20348.1249"}, // no os.version: the newest
		{"windows/amd64:10.0.99999.0", ""},
		{"windows/amd64:10.0.1776.3650", ""}, // build compared as a number, not a prefix
		{"windows/arm64", ""},
		{"darwin/arm64", ""},
		{"linux/mips", ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got, err := Choose(idx, platforms.Only(mustParse(t, tt.want)))
			if tt.entry == "" {
				if err == nil {
					t.Fatalf("got %s (%v), want no match", got.Digest, got.Platform)
				}
				assertNoMatch(t, err, idx)
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if want := entryFor(t, idx, tt.entry); got.Digest != want {
				t.Errorf("got %s (%v), want %s (%s)", got.Digest, got.Platform, want, tt.entry)
			}
		})
	}
}

// assertNoMatch checks err is a no-match error naming the index digest and offering
// every platform of the index except unknown ones, in index order.
func assertNoMatch(t *testing.T, err error, idx *Manifest) *platforms.NoMatchError {
	t.Helper()
	if !errors.Is(err, pullkit.ErrNoMatch) {
		t.Fatalf("error %v does not wrap pullkit.ErrNoMatch", err)
	}
	var nm *platforms.NoMatchError
	if !errors.As(err, &nm) {
		t.Fatalf("error %v is not a *platforms.NoMatchError", err)
	}
	var want []platforms.Platform
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS != "unknown" && d.Platform.Architecture != "unknown" {
			want = append(want, *d.Platform)
		}
	}
	if !reflect.DeepEqual(nm.Offered, want) {
		t.Errorf("offered %v, want %v", nm.Offered, want)
	}
	if idx.Digest != "" && !strings.Contains(err.Error(), idx.Digest.String()) {
		t.Errorf("error %q does not name the index digest %s", err, idx.Digest)
	}
	for _, p := range want {
		if !strings.Contains(err.Error(), p.String()) {
			t.Errorf("error %q does not list %s", err, p)
		}
	}
	return nm
}

func TestChooseNoMatchListsAll11(t *testing.T) {
	idx := loadIndex(t, helloWorldList)
	_, err := Choose(idx, platforms.Only(mustParse(t, "linux/mips")))
	nm := assertNoMatch(t, err, idx)
	if len(nm.Offered) != 11 {
		t.Errorf("offered %d platforms, want 11", len(nm.Offered))
	}
	if nm.Want != "linux/mips" {
		t.Errorf("Want = %+v", nm.Want)
	}
}

func TestChooseArmVariants(t *testing.T) {
	idx := loadIndex(t, armVariantsIndex)
	tests := []struct {
		want  string
		entry string
	}{
		{"linux/arm64/v8", "linux/arm64"}, // the entry has no variant
		{"linux/arm64", "linux/arm64"},
		{"linux/arm/v6", "linux/arm/v6"},
		{"linux/arm", "linux/arm/v7"},
		{"linux/arm/v7", "linux/arm/v7"},
		{"linux/arm/v8", "linux/arm/v7"},
		{"linux/armel", "linux/arm/v6"},
		{"linux/amd64", "linux/amd64"},
		{"linux/arm/v5", ""},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			got, err := Choose(idx, platforms.Only(mustParse(t, tt.want)))
			if tt.entry == "" {
				if err == nil {
					t.Fatalf("got %s (%v), want no match", got.Digest, got.Platform)
				}
				assertNoMatch(t, err, idx)
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if want := entryFor(t, idx, tt.entry); got.Digest != want {
				t.Errorf("got %s (%v), want %s (%s)", got.Digest, got.Platform, want, tt.entry)
			}
		})
	}
}

func TestChooseSkipsUnknownEntries(t *testing.T) {
	idx := loadIndex(t, unknownIndex)
	unknown := map[digest.Digest]bool{}
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS == "unknown" {
			unknown[d.Digest] = true
		}
	}
	if len(unknown) != 2 {
		t.Fatalf("fixture has %d unknown/unknown entries, SOURCES.md says 2", len(unknown))
	}
	for _, tt := range []struct {
		want  string
		entry string
	}{
		{"linux/amd64", "linux/amd64"},
		{"linux/arm64", "linux/arm64"},
		{"unknown/unknown", ""},
		{"Unknown/Unknown", ""},
		{"linux/unknown", ""},
		{"linux/s390x", ""},
	} {
		t.Run(tt.want, func(t *testing.T) {
			got, err := Choose(idx, platforms.Only(mustParse(t, tt.want)))
			if unknown[got.Digest] {
				t.Fatalf("chose attestation entry %s", got.Digest)
			}
			if tt.entry == "" {
				if err == nil {
					t.Fatalf("got %s, want no match", got.Digest)
				}
				nm := assertNoMatch(t, err, idx)
				if len(nm.Offered) != 2 {
					t.Errorf("offered %v, want linux/amd64 and linux/arm64 only", nm.Offered)
				}
				if _, list, _ := strings.Cut(err.Error(), "offered:"); strings.Contains(list, "unknown") {
					t.Errorf("error %q offers unknown", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if want := entryFor(t, idx, tt.entry); got.Digest != want {
				t.Errorf("got %s, want %s", got.Digest, want)
			}
		})
	}
}

func desc(n int, mediaType string, p *platforms.Platform, annotations map[string]string) Descriptor {
	return Descriptor{
		MediaType:   mediaType,
		Digest:      digest.FromString(strings.Repeat("x", n)),
		Size:        int64(n),
		Platform:    p,
		Annotations: annotations,
	}
}

func plat(s string) *platforms.Platform {
	osName, rest, _ := strings.Cut(s, "/")
	arch, variant, _ := strings.Cut(rest, "/")
	return &platforms.Platform{OS: osName, Architecture: arch, Variant: variant}
}

func TestChooseSynthetic(t *testing.T) {
	attestation := map[string]string{annotationReferenceType: "attestation-manifest"}
	tests := []struct {
		name    string
		entries []Descriptor
		want    platforms.Platform
		pick    int // index of the expected entry; -1 = no match
	}{
		{"amd64 v3 host takes v2 over v1", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/amd64"), nil),
			desc(2, MediaTypeOCIManifest, plat("linux/amd64/v2"), nil),
			desc(3, MediaTypeOCIManifest, plat("linux/amd64/v4"), nil),
		}, *plat("linux/amd64/v3"), 1},
		{"amd64 v3 host takes v2 listed first", []Descriptor{
			desc(2, MediaTypeOCIManifest, plat("linux/amd64/v2"), nil),
			desc(1, MediaTypeOCIManifest, plat("linux/amd64"), nil),
		}, *plat("linux/amd64/v3"), 0},
		{"amd64 v3 host takes exact v3", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/amd64"), nil),
			desc(2, MediaTypeOCIManifest, plat("linux/amd64/v2"), nil),
			desc(3, MediaTypeOCIManifest, plat("linux/amd64/v3"), nil),
		}, *plat("linux/amd64/v3"), 2},
		{"amd64 v1 host takes no v2", []Descriptor{
			desc(2, MediaTypeOCIManifest, plat("linux/amd64/v2"), nil),
			desc(1, MediaTypeOCIManifest, plat("linux/amd64/v1"), nil),
		}, *plat("linux/amd64"), 1},
		{"amd64 v1 host with only v2", []Descriptor{
			desc(2, MediaTypeOCIManifest, plat("linux/amd64/v2"), nil),
		}, *plat("linux/amd64"), -1},
		{"tie keeps index order", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/amd64"), nil),
			desc(2, MediaTypeDockerSchema2, plat("linux/amd64"), nil),
		}, *plat("linux/amd64"), 0},
		{"aliases in entries", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/x86_64"), nil),
			desc(2, MediaTypeOCIManifest, plat("Linux/AArch64"), nil),
		}, *plat("linux/arm64/v8"), 1},
		{"arm64 v8 host takes no v9", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/arm64/v9"), nil),
		}, *plat("linux/arm64"), -1},
		{"attestation annotation with a real platform", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("linux/amd64"), attestation),
			desc(2, MediaTypeOCIManifest, plat("linux/amd64"), nil),
		}, *plat("linux/amd64"), 1},
		{"non-image media types ignored", []Descriptor{
			desc(1, MediaTypeOCILayerGzip, plat("linux/amd64"), nil),
			desc(2, MediaTypeOCIArtifact, plat("linux/amd64"), nil),
			desc(3, "application/vnd.example+json", plat("linux/amd64"), nil),
			desc(4, MediaTypeDockerSchema1Signed, plat("linux/amd64"), nil),
		}, *plat("linux/amd64"), 3},
		{"schema 1 and empty media types count", []Descriptor{
			desc(1, MediaTypeDockerSchema1, plat("linux/arm64"), nil),
			desc(2, "", plat("linux/amd64"), nil),
		}, *plat("linux/amd64"), 1},
		{"nested index counts", []Descriptor{
			desc(1, MediaTypeOCIIndex, plat("linux/amd64"), nil),
		}, *plat("linux/amd64"), 0},
		{"windows entry without os.version when a build is wanted", []Descriptor{
			desc(1, MediaTypeDockerSchema2, plat("windows/amd64"), nil),
		}, platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}, -1},
		{"windows newest revision of the build", []Descriptor{
			desc(1, MediaTypeDockerSchema2, &platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.9"}, nil),
			desc(2, MediaTypeDockerSchema2, &platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.10"}, nil),
			desc(3, MediaTypeDockerSchema2, &platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.26100.1"}, nil),
		}, platforms.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1"}, 1},
		{"single entry without platform", []Descriptor{
			desc(1, MediaTypeDockerManifestList, nil, nil),
		}, *plat("linux/s390x"), 0},
		{"single entry without platform beside attestations", []Descriptor{
			desc(1, MediaTypeOCIManifest, plat("unknown/unknown"), nil),
			desc(2, MediaTypeOCIIndex, nil, nil),
		}, *plat("linux/s390x"), 1},
		{"two entries without platform", []Descriptor{
			desc(1, MediaTypeOCIManifest, nil, nil),
			desc(2, MediaTypeOCIManifest, nil, nil),
		}, *plat("linux/amd64"), -1},
		{"entry without platform beside a non-matching one", []Descriptor{
			desc(1, MediaTypeOCIManifest, nil, nil),
			desc(2, MediaTypeOCIManifest, plat("linux/arm64"), nil),
		}, *plat("linux/amd64"), -1},
		{"single artifact without platform", []Descriptor{
			desc(1, MediaTypeOCIArtifact, nil, nil),
		}, *plat("linux/amd64"), -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := &Manifest{Kind: KindIndex, MediaType: MediaTypeOCIIndex, Manifests: tt.entries}
			got, err := Choose(idx, platforms.Only(tt.want))
			if tt.pick < 0 {
				if err == nil {
					t.Fatalf("got %s (%v), want no match", got.Digest, got.Platform)
				}
				if !errors.Is(err, pullkit.ErrNoMatch) {
					t.Fatalf("error %v does not wrap pullkit.ErrNoMatch", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Choose: %v", err)
			}
			if !reflect.DeepEqual(got, tt.entries[tt.pick]) {
				t.Errorf("got %+v, want entry %d %+v", got, tt.pick, tt.entries[tt.pick])
			}
		})
	}
}

func TestChooseOCILayoutIndex(t *testing.T) {
	idx := loadIndex(t, ctrExportIndex)
	for _, want := range []string{"linux/amd64", "linux/arm64", "windows/amd64:10.0.17763.1"} {
		got, err := Choose(idx, platforms.Only(mustParse(t, want)))
		if err != nil {
			t.Fatalf("%s: %v", want, err)
		}
		if got.Digest != "sha256:faa03e786c97f07ef34423fccceeec2398ec8a5759259f94d99078f264e9d7af" ||
			got.MediaType != MediaTypeDockerManifestList {
			t.Errorf("%s: got %s %s, want the nested hello-world list faa03e78…", want, got.MediaType, got.Digest)
		}
	}
}

func TestChooseNullManifests(t *testing.T) {
	idx := loadIndex(t, nullIndex)
	_, err := Choose(idx, platforms.Only(mustParse(t, "linux/arm64")))
	nm := assertNoMatch(t, err, idx)
	if len(nm.Offered) != 0 || !strings.Contains(err.Error(), "offered: none") {
		t.Errorf("error %q, offered %v; want none", err, nm.Offered)
	}
}

func TestChooseNotAnIndex(t *testing.T) {
	for _, m := range []*Manifest{
		nil,
		{Kind: KindImage, MediaType: MediaTypeDockerSchema2, Digest: "sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4"},
		{},
	} {
		_, err := Choose(m, platforms.Only(platforms.Platform{OS: "linux", Architecture: "amd64"}))
		if !errors.Is(err, pullkit.ErrInvalid) {
			t.Fatalf("Choose(%+v): error %v does not wrap pullkit.ErrInvalid", m, err)
		}
		var ie *pullkit.InvalidError
		if !errors.As(err, &ie) {
			t.Fatalf("error %v is not an *pullkit.InvalidError", err)
		}
		if m != nil && m.Digest != "" && !strings.Contains(err.Error(), m.Digest.String()) {
			t.Errorf("error %q does not name the digest", err)
		}
	}
}

func TestChooseZeroWantIsDefault(t *testing.T) {
	idx := loadIndex(t, helloWorldList)
	def, errDef := Choose(idx, platforms.Only(platforms.Default()))
	got, err := Choose(idx, platforms.Only(platforms.Platform{}))
	if (err == nil) != (errDef == nil) || got.Digest != def.Digest {
		t.Fatalf("zero want: %s, %v; default %s: %s, %v", got.Digest, err, platforms.Default(), def.Digest, errDef)
	}
	if runtime.GOARCH == "amd64" && got.Digest != entryFor(t, idx, "linux/amd64") {
		t.Errorf("amd64 host got %s", got.Digest)
	}
}

// TestChooseArtifacts: an entry whose artifactType is not an image config's is an
// artifact, never chosen; an index of artifacts only is ErrUnsupported (nothing to pull),
// not a platform mismatch; an image entry with its config's media type as artifactType
// (as go-containerregistry writes it) is an image.
func TestChooseArtifacts(t *testing.T) {
	sig := desc(10, MediaTypeOCIManifest, nil, nil)
	sig.ArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	sbom := desc(11, MediaTypeOCIManifest, plat("linux/amd64"), nil)
	sbom.ArtifactType = "application/spdx+json"
	img := desc(12, MediaTypeOCIManifest, plat("linux/amd64"), nil)
	img.ArtifactType = MediaTypeOCIConfig
	dockerImg := desc(13, MediaTypeDockerSchema2, plat("linux/amd64"), nil)
	dockerImg.ArtifactType = MediaTypeDockerConfig
	index := func(ds ...Descriptor) *Manifest {
		return &Manifest{Kind: KindIndex, MediaType: MediaTypeOCIIndex, Digest: digest.FromString("index"), Manifests: ds}
	}
	amd64 := platforms.Only(mustParse(t, "linux/amd64"))

	_, err := Choose(index(sig), amd64)
	if !errors.Is(err, pullkit.ErrUnsupported) || !strings.Contains(err.Error(), sig.ArtifactType) {
		t.Errorf("an index of one artifact without a platform: %v, want ErrUnsupported naming its artifactType", err)
	}
	if _, err := Choose(index(sig, sbom), platforms.Any()); !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("an index of artifacts, any platform: %v, want ErrUnsupported", err)
	}
	for _, want := range []Descriptor{img, dockerImg} {
		got, err := Choose(index(sbom, want, sig), amd64)
		if err != nil || got.Digest != want.Digest {
			t.Errorf("an image entry with artifactType %s among artifacts: got %s, %v; want %s", want.ArtifactType, got.Digest, err, want.Digest)
		}
	}
}
