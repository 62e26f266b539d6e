package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
)

func readFixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseImageFixtures checks every schema 2 / OCI image manifest fixture against the
// facts SOURCES.md gives: digest of the bytes as served, size, layer count and types.
func TestParseImageFixtures(t *testing.T) {
	tests := []struct {
		file       string
		served     string
		wantType   string
		wantDigest digest.Digest
		wantSize   int
		wantConfig digest.Digest
		wantLayers int
		platform   *platforms.Platform
	}{
		{"schema2/hello-world-amd64-dockerhub-2021.json", MediaTypeDockerSchema2, MediaTypeDockerSchema2,
			"sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4", 525,
			"sha256:feb5d9fea6a5e9606aa995e879d862b825965ba48de054caab5ef356dc6b3412", 1, nil},
		{"schema2/httpd-octet-stream-config-mediatype.json", "", MediaTypeDockerSchema2,
			"sha256:aa0711c4fc25264ce59b5f9315b555ba1252ad0fbd0e290634b693df2045a072", 1344,
			"sha256:9ca4bda0a6b3727a6ffcc43e981cad0f24e2ec79d338f6ba325b4dfd0756fb8f", 5, nil},
		{"schema2/cosign-fulcio-rekor-1.json", "application/json", MediaTypeDockerSchema2,
			"sha256:0489474da8ea22426ece86ace6c1c0026ab2fd3cdfbbd62b7e94650266c37d9a", 528, "", -1, nil},
		{"schema2/cosign-signed-single-sample-compact.json", MediaTypeDockerSchema2 + "; charset=utf-8", MediaTypeDockerSchema2,
			"sha256:634a8f35b5f16dcf4aaa0822adc0b1964bb786fca12f6831de8ddc45e5986a00", 428, "", -1, nil},
		{"schema2/quay-unicode-author.json", "text/plain", MediaTypeDockerSchema2,
			"sha256:97556fa8c553395bd9d8e19a04acef4716ca287ffbf6bde14dd9966053912613", 527,
			"sha256:5bdd65cdd055c7f3bbaecdc9fd6c75f155322520f85953aa0e2724cab006d407", -1, nil},
		{"oci-manifest/hello-world-arm64-docker25-save.json", MediaTypeOCIManifest, MediaTypeOCIManifest,
			"sha256:411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe", 447,
			"sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44", 1,
			&platforms.Platform{OS: "linux", Architecture: "arm64"}},
		{"oci-manifest/cosign-pki-empty-layers.json", "", MediaTypeOCIManifest,
			"sha256:253c890b744fe3efa923b68e3a1be07bd007eb44ba29da1e7deb1d4c53b3e212", 346,
			"sha256:84e2abbb0b1347753fa15b585fb2181509ee296e29eed9f4bd3fd7778d027a98", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			raw := readFixture(t, tt.file)
			if len(raw) != tt.wantSize {
				t.Fatalf("fixture size %d, SOURCES.md says %d", len(raw), tt.wantSize)
			}
			m, err := Parse(raw, tt.served)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.Kind != KindImage || m.MediaType != tt.wantType {
				t.Errorf("kind %v type %q, want image %q", m.Kind, m.MediaType, tt.wantType)
			}
			if m.Digest != tt.wantDigest {
				t.Errorf("digest %s, want %s", m.Digest, tt.wantDigest)
			}
			if tt.wantConfig != "" && m.Config.Digest != tt.wantConfig {
				t.Errorf("config %s, want %s", m.Config.Digest, tt.wantConfig)
			}
			if tt.wantLayers >= 0 && len(m.Layers) != tt.wantLayers {
				t.Errorf("%d layers, want %d", len(m.Layers), tt.wantLayers)
			}
			for i, l := range m.Layers {
				if l.Size <= 0 || l.Digest.Validate() != nil || l.MediaType == "" {
					t.Errorf("layer %d incomplete: %+v", i, l)
				}
			}
			if tt.platform != nil && (m.Platform == nil || m.Platform.String() != tt.platform.String()) {
				t.Errorf("platform %v, want %v", m.Platform, tt.platform)
			}
			if _, err := Verify(raw, tt.served, tt.wantDigest); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestParseIndexFixtures(t *testing.T) {
	tests := []struct {
		file        string
		served      string
		wantType    string
		wantEntries int
	}{
		{"manifest-list/hello-world-dockerhub-2022.json", MediaTypeDockerManifestList, MediaTypeDockerManifestList, 11},
		{"manifest-list/hello-world-dockerhub-2022.json", "", MediaTypeDockerManifestList, 11},
		{"oci-index/hello-world-ctr-export-index.json", "", MediaTypeOCIIndex, 1},
		{"oci-index/hello-world-ctr-export-index.json", MediaTypeDockerManifestList, MediaTypeDockerManifestList, 1},
		{"oci-index/docker25-save-index-null-manifests.json", "", MediaTypeOCIIndex, 0},
		{"oci-index/regclient-testrepo-v3-arm-variants.json", MediaTypeOCIIndex, MediaTypeOCIIndex, 4},
		{"oci-index/regclient-testrepo-v1-unknown-platform-entries.json", "application/json", MediaTypeOCIIndex, 4},
	}
	for _, tt := range tests {
		t.Run(tt.file+"|"+tt.served, func(t *testing.T) {
			raw := readFixture(t, tt.file)
			m, err := Parse(raw, tt.served)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if m.Kind != KindIndex || m.MediaType != tt.wantType || len(m.Manifests) != tt.wantEntries {
				t.Fatalf("kind %v type %q entries %d; want index %q with %d", m.Kind, m.MediaType, len(m.Manifests), tt.wantType, tt.wantEntries)
			}
			sum := sha256.Sum256(raw)
			if want := digest.Digest("sha256:" + hex.EncodeToString(sum[:])); m.Digest != want {
				t.Errorf("digest %s, want sha256 of the bytes %s", m.Digest, want)
			}
		})
	}
	// Docker Hub's list escapes slashes and sorts keys: the digest must be the served one.
	m, err := Parse(readFixture(t, "manifest-list/hello-world-dockerhub-2022.json"), MediaTypeDockerManifestList)
	if err != nil {
		t.Fatal(err)
	}
	if want := digest.Digest("sha256:faa03e786c97f07ef34423fccceeec2398ec8a5759259f94d99078f264e9d7af"); m.Digest != want {
		t.Errorf("list digest %s, want %s", m.Digest, want)
	}
	if m.Manifests[0].MediaType != MediaTypeDockerSchema2 {
		t.Errorf("escaped media type decoded as %q", m.Manifests[0].MediaType)
	}
}

func TestParseConfigFixtures(t *testing.T) {
	tests := []struct {
		file               string
		os, arch           string
		diffIDs, history   int
		emptyHistoryBefore int
	}{
		{"config/hello-world-amd64-docker20.10-config.json", "linux", "amd64", 1, 2, 1},
		{"config/hello-world-arm64-buildkit-config.json", "linux", "arm64", 1, -1, -1},
		{"config/httpd-2.4.23-config.json", "linux", "amd64", 5, 15, 10},
		{"config/quay-unicode-author-config.json", "linux", "amd64", -1, -1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c, err := ParseConfig(readFixture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if c.OS != tt.os || c.Architecture != tt.arch {
				t.Errorf("platform %s/%s, want %s/%s", c.OS, c.Architecture, tt.os, tt.arch)
			}
			if tt.diffIDs >= 0 && len(c.RootFS.DiffIDs) != tt.diffIDs {
				t.Errorf("%d diff_ids, want %d", len(c.RootFS.DiffIDs), tt.diffIDs)
			}
			if tt.history >= 0 && len(c.History) != tt.history {
				t.Errorf("%d history entries, want %d", len(c.History), tt.history)
			}
			if tt.emptyHistoryBefore >= 0 {
				empty := 0
				for _, h := range c.History {
					if h.EmptyLayer {
						empty++
					}
				}
				if empty != tt.emptyHistoryBefore {
					t.Errorf("%d empty_layer entries, want %d", empty, tt.emptyHistoryBefore)
				}
				if len(c.History)-empty != len(c.RootFS.DiffIDs) {
					t.Errorf("non-empty history %d != diff_ids %d", len(c.History)-empty, len(c.RootFS.DiffIDs))
				}
			}
		})
	}
}

func TestBuildImageAssignsDiffIDs(t *testing.T) {
	raw := readFixture(t, "schema2/httpd-octet-stream-config-mediatype.json")
	m, err := Parse(raw, MediaTypeDockerSchema2)
	if err != nil {
		t.Fatal(err)
	}
	cfgRaw := readFixture(t, "config/httpd-2.4.23-config.json")
	if got := digest.FromBytes(cfgRaw); got != m.Config.Digest || int64(len(cfgRaw)) != m.Config.Size {
		t.Fatalf("config fixture %s (%d) is not the manifest's %s (%d)", got, len(cfgRaw), m.Config.Digest, m.Config.Size)
	}
	cfg, err := ParseConfig(cfgRaw)
	if err != nil {
		t.Fatal(err)
	}
	img, err := NewImage("example.com/httpd:2.4.23", m, m, nil, m.Config, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != m.Digest || img.Manifest.Digest != m.Digest || img.Manifest.Size != 1344 {
		t.Errorf("image refs %+v / %+v", img.Digest, img.Manifest)
	}
	if img.Platform == nil || img.Platform.String() != "linux/amd64" {
		t.Errorf("platform %v", img.Platform)
	}
	for i, l := range img.Layers {
		if l.DiffID != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d diffID %s, want %s", i, l.DiffID, cfg.RootFS.DiffIDs[i])
		}
	}
	// A config from another image (one diffID for five layers) is refused.
	other, err := ParseConfig(readFixture(t, "config/hello-world-amd64-docker20.10-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewImage("x", m, m, nil, m.Config, other); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("mismatched config: err %v, want pullkit.ErrInvalid", err)
	}
}

func TestParseRejects(t *testing.T) {
	const cfg = `"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:84e2abbb0b1347753fa15b585fb2181509ee296e29eed9f4bd3fd7778d027a98","size":348}`
	const layer = `{"mediaType":%q,"digest":"sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43","size":10}`
	tests := []struct {
		name   string
		raw    string
		served string
		want   error
	}{
		{"not json", `<html>`, "", pullkit.ErrInvalid},
		{"no schemaVersion", `{"mediaType":"application/vnd.oci.image.manifest.v1+json"}`, "", pullkit.ErrInvalid},
		{"schemaVersion 3", `{"schemaVersion":3}`, "", pullkit.ErrUnsupported},
		{"artifact manifest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]}`, "", pullkit.ErrUnsupported},
		{"artifact by structure", `{"schemaVersion":2,"blobs":[]}`, "", pullkit.ErrUnsupported},
		{"withdrawn artifact manifest, which has no schemaVersion", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]}`, "", pullkit.ErrUnsupported},
		{"served as the withdrawn artifact manifest", `{"blobs":[]}`, MediaTypeOCIArtifact, pullkit.ErrUnsupported},
		{"artifactType", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example+type",` + cfg + `,"layers":[]}`, "", pullkit.ErrUnsupported},
		{"empty config artifact", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`, "", pullkit.ErrUnsupported},
		{"encrypted layer", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` + cfg + `,"layers":[` + fmt.Sprintf(layer, "application/vnd.oci.image.layer.v1.tar+gzip+encrypted") + `]}`, "", pullkit.ErrUnsupported},
		{"helm chart layer", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` + cfg + `,"layers":[` + fmt.Sprintf(layer, "application/vnd.cncf.helm.chart.content.v1.tar+gzip") + `]}`, "", pullkit.ErrUnsupported},
		{"unknown mediaType", `{"schemaVersion":2,"mediaType":"application/vnd.example.thing"}`, "", pullkit.ErrUnsupported},
		{"content type lies", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, MediaTypeDockerSchema2, pullkit.ErrInvalid},
		{"schema1 served as schema2", `{"schemaVersion":1,"fsLayers":[]}`, MediaTypeOCIManifest, pullkit.ErrInvalid},
		{"bad layer digest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` + cfg + `,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:xyz","size":1}]}`, "", pullkit.ErrInvalid},
		{"negative size", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` + cfg + `,"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43","size":-5}]}`, "", pullkit.ErrInvalid},
		{"no config", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[]}`, "", pullkit.ErrInvalid},
		{"bad index entry", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"digest":"md5:abc","size":1}]}`, "", pullkit.ErrInvalid},
		{"trailing data", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]} {"x":1}`, "", pullkit.ErrInvalid},
		{"neither", `{"schemaVersion":2}`, "", pullkit.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := Parse([]byte(tt.raw), tt.served)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %v, %v; want %v", m, err, tt.want)
			}
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
		})
	}
}

func TestVerifyMismatch(t *testing.T) {
	raw := readFixture(t, "schema2/hello-world-amd64-dockerhub-2021.json")
	want := digest.FromString("something else")
	_, err := Verify(raw, MediaTypeDockerSchema2, want)
	var dm *pullkit.DigestMismatchError
	if !errors.As(err, &dm) || dm.Want != want || dm.Got != digest.FromBytes(raw) {
		t.Fatalf("Verify = %v; want a DigestMismatchError naming both digests", err)
	}
	if _, err := Verify(raw, MediaTypeDockerSchema2, "sha256:short"); err == nil {
		t.Fatal("Verify accepted a malformed digest")
	}
}

// TestBuildImageSchema1 assigns a synthesised config's diffIDs by the throwaway flag, the
// rule Schema1.SynthesizeConfig uses, so that hello-world 2015's unflagged empty layer gets one.
func TestBuildImageSchema1(t *testing.T) {
	for _, tt := range []struct {
		file         string
		layers, with int
	}{
		{"schema1-signed/hello-world-dockerhub-2015.json", 2, 2},
		{"schema1-signed/quay-buildtest2-2018.json", 6, 2},
		{"schema1-signed/httpd-copy-by-containers-image-2020.json", 15, 5},
	} {
		t.Run(tt.file, func(t *testing.T) {
			m, err := Parse(readFixture(t, tt.file), MediaTypeDockerSchema1Signed)
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]digest.Digest, tt.with)
			for i := range ids {
				ids[i] = digest.FromString(fmt.Sprint("layer ", i))
			}
			raw, err := m.Schema1.SynthesizeConfig(ids)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := ParseConfig(raw)
			if err != nil {
				t.Fatal(err)
			}
			desc := &Descriptor{MediaType: MediaTypeDockerConfig, Digest: digest.FromBytes(raw), Size: int64(len(raw))}
			img, err := NewImage("r", m, m, nil, desc, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(img.Layers) != tt.layers {
				t.Fatalf("%d layers, want %d", len(img.Layers), tt.layers)
			}
			var got []digest.Digest
			for i, l := range img.Layers {
				if (l.DiffID == "") != m.Schema1.History[i].Throwaway {
					t.Errorf("layer %d: diffID %q but throwaway %v", i, l.DiffID, m.Schema1.History[i].Throwaway)
				}
				if l.DiffID != "" {
					got = append(got, l.DiffID)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(ids) {
				t.Errorf("diffIDs %v, want %v in order", got, ids)
			}
			if img.Manifest.Size != int64(len(m.Schema1.Payload)) || img.Digest != m.Digest {
				t.Errorf("manifest ref %+v, digest %s", img.Manifest, img.Digest)
			}
		})
	}
}

// TestVerifyDamageIsMismatch: bytes damaged in transit are a digest mismatch even when
// the damage makes them unparseable or names an unsupported type, so the user is told
// the bytes were wrong, not that the image cannot be pulled.
func TestVerifyDamageIsMismatch(t *testing.T) {
	raw := readFixture(t, "schema2/hello-world-amd64-dockerhub-2021.json")
	want := digest.FromBytes(raw)
	for name, damage := range map[string]func([]byte) []byte{
		"not JSON":          func(b []byte) []byte { b[0] = 'X'; return b },
		"layer type edited": func(b []byte) []byte { return bytes.Replace(b, []byte("rootfs.diff"), []byte("rootfs.dXff"), 1) },
		"truncated":         func(b []byte) []byte { return b[:len(b)/2] },
		"signed schema 1":   func([]byte) []byte { return readFixture(t, "schema1-signed/hello-world-dockerhub-2015.json") },
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Verify(damage(bytes.Clone(raw)), MediaTypeDockerSchema2, want)
			var dm *pullkit.DigestMismatchError
			if !errors.As(err, &dm) || dm.Want != want || errors.Is(err, pullkit.ErrInvalid) || errors.Is(err, pullkit.ErrUnsupported) {
				t.Fatalf("Verify = %v; want only a DigestMismatchError for %s", err, want)
			}
		})
	}
	// A signed schema 1 verifies by its canonical digest and by the sha256 of its bytes.
	s1 := readFixture(t, "schema1-signed/hello-world-dockerhub-2015.json")
	for _, d := range []digest.Digest{"sha256:02fee8c3220ba806531f606525eceb83f4feb654f62b207191b1c9209188dedd", digest.FromBytes(s1)} {
		if _, err := Verify(s1, MediaTypeDockerSchema1Signed, d); err != nil {
			t.Errorf("Verify(schema 1, %s): %v", d, err)
		}
	}
}

func TestErrorTextIsPrintable(t *testing.T) {
	_, err := Parse([]byte("{\"schemaVersion\":2,\"mediaType\":\"application/vnd.x\\u001b[31m\xff\"}"), "")
	if err == nil || !errors.Is(err, pullkit.ErrUnsupported) {
		t.Fatalf("Parse = %v, want pullkit.ErrUnsupported", err)
	}
	if strings.ContainsRune(err.Error(), 0x1b) || !utf8.ValidString(err.Error()) {
		t.Fatalf("error text carries raw network bytes: %q", err.Error())
	}
}

// TestRuntimeConfig reads the runtime defaults from real configs, and Cmd and Entrypoint
// in each form Docker accepts.
func TestRuntimeConfig(t *testing.T) {
	hello, err := ParseConfig(readFixture(t, "config/hello-world-amd64-docker20.10-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := RuntimeConfig{Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, Cmd: []string{"/hello"}}
	if !reflect.DeepEqual(hello.Runtime, want) {
		t.Errorf("hello-world runtime %+v, want %+v", hello.Runtime, want)
	}
	httpd, err := ParseConfig(readFixture(t, "config/httpd-2.4.23-config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := httpd.Runtime.ExposedPorts["80/tcp"]; !ok || !reflect.DeepEqual(httpd.Runtime.Cmd, []string{"httpd-foreground"}) || httpd.Runtime.WorkingDir != "/usr/local/apache2" {
		t.Errorf("httpd runtime %+v", httpd.Runtime)
	}
	for _, tt := range []struct {
		raw  string
		want RuntimeConfig
	}{
		{`{"config":{"Cmd":"sh","Entrypoint":["/bin/x","-v"],"User":"1000:1000","StopSignal":"SIGQUIT","Labels":{"a":"b"},"Volumes":{"/data":{}}},"rootfs":{"diff_ids":[]}}`,
			RuntimeConfig{Cmd: []string{"sh"}, Entrypoint: []string{"/bin/x", "-v"}, User: "1000:1000", StopSignal: "SIGQUIT", Labels: map[string]string{"a": "b"}, Volumes: map[string]struct{}{"/data": {}}}},
		{`{"config":null,"rootfs":{"diff_ids":[]}}`, RuntimeConfig{}},
		{`{"rootfs":{"diff_ids":[]}}`, RuntimeConfig{}},
	} {
		c, err := ParseConfig([]byte(tt.raw))
		if err != nil {
			t.Errorf("%s: %v", tt.raw, err)
			continue
		}
		if !reflect.DeepEqual(c.Runtime, tt.want) {
			t.Errorf("%s: runtime %+v, want %+v", tt.raw, c.Runtime, tt.want)
		}
	}
}

// TestDocker25SaveManifestJSON reads Docker 25's docker-archive manifest.json
// (misc/docker25-save-manifest.json): its Config and Layers are blob paths, and they name
// exactly the config and layer of the OCI manifest the same save wrote.
func TestDocker25SaveManifestJSON(t *testing.T) {
	var entries []struct {
		Config       string
		RepoTags     []string
		Layers       []string
		LayerSources map[digest.Digest]Descriptor
	}
	if err := json.Unmarshal(readFixture(t, "misc/docker25-save-manifest.json"), &entries); err != nil || len(entries) != 1 {
		t.Fatalf("%d entries: %v", len(entries), err)
	}
	e := entries[0]
	m, err := Parse(readFixture(t, "oci-manifest/hello-world-arm64-docker25-save.json"), "")
	if err != nil {
		t.Fatal(err)
	}
	if e.Config != "blobs/sha256/"+m.Config.Digest.Encoded() || e.RepoTags != nil {
		t.Errorf("Config %q RepoTags %v; want the manifest's config %s, untagged", e.Config, e.RepoTags, m.Config.Digest)
	}
	if len(e.Layers) != 1 || e.Layers[0] != "blobs/sha256/"+m.Layers[0].Digest.Encoded() {
		t.Errorf("Layers %v; want the manifest's layer %s", e.Layers, m.Layers[0].Digest)
	}
	src, ok := e.LayerSources[m.Layers[0].Digest]
	if !ok || src.MediaType != MediaTypeOCILayer || src.Size != m.Layers[0].Size || src.Digest != m.Layers[0].Digest {
		t.Errorf("LayerSources %+v; want the uncompressed layer %s of %d bytes", e.LayerSources, m.Layers[0].Digest, m.Layers[0].Size)
	}
}
