package manifest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

func parseOrFail(t *testing.T, raw []byte, mt string) *Manifest {
	t.Helper()
	m, err := Parse(raw, mt)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(x, y)
}

// TestToSchema1MatchesContainersImage converts the httpd 2.4.23 schema 2 image and
// compares with the schema 1 containers/image wrote for that very image (the fixture
// httpd-copy-by-containers-image-2020.json): every fsLayer and every v1Compatibility
// string must be the same bytes.
func TestToSchema1MatchesContainersImage(t *testing.T) {
	s2 := parseOrFail(t, readFixture(t, "schema2/httpd-octet-stream-config-mediatype.json"), MediaTypeDockerSchema2)
	config := readFixture(t, "config/httpd-2.4.23-config.json")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ToSchema1(s2, config, "library/httpd-copy", "latest", key)
	if err != nil {
		t.Fatal(err)
	}
	got := parseOrFail(t, out, MediaTypeDockerSchema1Signed)
	want := parseOrFail(t, readFixture(t, "schema1-signed/httpd-copy-by-containers-image-2020.json"), MediaTypeDockerSchema1Signed)
	if got.Schema1.Name != "library/httpd-copy" || got.Schema1.Tag != "latest" || got.Schema1.Architecture != "amd64" {
		t.Errorf("name/tag/arch %q %q %q", got.Schema1.Name, got.Schema1.Tag, got.Schema1.Architecture)
	}
	if len(got.Layers) != len(want.Layers) {
		t.Fatalf("%d layers, containers/image wrote %d", len(got.Layers), len(want.Layers))
	}
	for i := range want.Layers {
		if !reflect.DeepEqual(got.Layers[i], want.Layers[i]) {
			t.Errorf("layer %d: %+v, want %+v", i, got.Layers[i], want.Layers[i])
		}
		if g, w := got.Schema1.History[i].V1Compatibility, want.Schema1.History[i].V1Compatibility; g != w {
			t.Errorf("history %d:\n got %s\nwant %s", i, g, w)
		}
	}
	if len(got.Schema1.Signatures) != 1 || got.Schema1.Signatures[0].Algorithm != "RS256" {
		t.Errorf("signatures %+v", got.Schema1.Signatures)
	}
}

// TestToSchema1RoundTrip converts schema 2 images to schema 1 with an ephemeral key,
// verifies the result with the package's own verifier, and converts back: the layers,
// and the config synthesised from schema 1, are the originals.
func TestToSchema1RoundTrip(t *testing.T) {
	for _, tt := range []struct{ manifest, config string }{
		{"schema2/hello-world-amd64-dockerhub-2021.json", "config/hello-world-amd64-docker20.10-config.json"},
		{"schema2/httpd-octet-stream-config-mediatype.json", "config/httpd-2.4.23-config.json"},
		{"oci-manifest/hello-world-arm64-docker25-save.json", "config/hello-world-arm64-buildkit-config.json"},
	} {
		t.Run(tt.manifest, func(t *testing.T) {
			orig := parseOrFail(t, readFixture(t, tt.manifest), "")
			config := readFixture(t, tt.config)
			cfg, err := ParseConfig(config)
			if err != nil {
				t.Fatal(err)
			}
			out, err := ToSchema1(orig, config, "example/img", "v1", nil)
			if err != nil {
				t.Fatal(err)
			}
			s1 := parseOrFail(t, out, "") // verifies the signature
			if s1.MediaType != MediaTypeDockerSchema1Signed || s1.Digest != digest.FromBytes(s1.Schema1.Payload) {
				t.Fatalf("type %s digest %s", s1.MediaType, s1.Digest)
			}
			var real []digest.Digest
			for i, l := range s1.Layers {
				if !s1.Schema1.History[i].Throwaway {
					real = append(real, l.Digest)
				} else if l.Digest != EmptyGzipLayer {
					t.Errorf("throwaway layer %d is %s, want the empty gzip", i, l.Digest)
				}
			}
			var want []digest.Digest
			for _, l := range orig.Layers {
				want = append(want, l.Digest)
			}
			if !reflect.DeepEqual(real, want) {
				t.Fatalf("non-throwaway layers %v, want %v", real, want)
			}
			back, err := s1.Schema1.SynthesizeConfig(cfg.RootFS.DiffIDs)
			if err != nil {
				t.Fatal(err)
			}
			wantCfg := config
			if !bytes.Contains(config, []byte(`"container_config"`)) {
				// Schema 1 keeps the newest step's command only in the config's
				// container_config; a BuildKit config has none, so that step's
				// created_by and comment cannot survive (docker's converters lose them too).
				var c map[string]any
				if err := json.Unmarshal(config, &c); err != nil {
					t.Fatal(err)
				}
				h := c["history"].([]any)
				last := h[len(h)-1].(map[string]any)
				delete(last, "created_by")
				delete(last, "comment")
				if wantCfg, err = json.Marshal(c); err != nil {
					t.Fatal(err)
				}
			}
			if !jsonEqual(t, back, wantCfg) {
				t.Errorf("config after the round trip differs:\n%s\nwant\n%s", back, wantCfg)
			}
		})
	}
}

func TestToSchema1Refuses(t *testing.T) {
	s2 := parseOrFail(t, readFixture(t, "schema2/hello-world-amd64-dockerhub-2021.json"), MediaTypeDockerSchema2)
	config := readFixture(t, "config/hello-world-amd64-docker20.10-config.json")
	if _, err := ToSchema1(s2, append([]byte(" "), config...), "a", "b", nil); !errors.Is(err, pullkit.ErrDigestMismatch) {
		t.Errorf("wrong config bytes: %v, want pullkit.ErrDigestMismatch", err)
	}
	foreign := *s2
	foreign.Layers = []Layer{{Digest: s2.Layers[0].Digest, MediaType: MediaTypeDockerForeignLayer, Size: 1, URLs: []string{"https://example.com/l"}}}
	if _, err := ToSchema1(&foreign, config, "a", "b", nil); !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("foreign layer: %v, want pullkit.ErrUnsupported", err)
	}
	s1 := parseOrFail(t, readFixture(t, "schema1-signed/hello-world-dockerhub-2015.json"), "")
	if _, err := ToSchema1(s1, config, "a", "b", nil); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("schema 1 input: %v, want pullkit.ErrInvalid", err)
	}
	extra := *s2
	extra.Layers = append(append([]Layer(nil), s2.Layers...), s2.Layers[0])
	if _, err := ToSchema1(&extra, config, "a", "b", nil); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("more layers than history: %v, want pullkit.ErrInvalid", err)
	}
}

// TestFromSchema1 converts containers/image's schema 1 of httpd back to schema 2 and OCI
// given the fetched layers' sizes and diffIDs: the result is the original schema 2
// image's layers and config.
func TestFromSchema1(t *testing.T) {
	s1 := parseOrFail(t, readFixture(t, "schema1-signed/httpd-copy-by-containers-image-2020.json"), "")
	s2 := parseOrFail(t, readFixture(t, "schema2/httpd-octet-stream-config-mediatype.json"), "")
	config := readFixture(t, "config/httpd-2.4.23-config.json")
	cfg, err := ParseConfig(config)
	if err != nil {
		t.Fatal(err)
	}
	fetched := append([]Layer(nil), s1.Layers...)
	j := 0
	for i := range fetched {
		if s1.Schema1.History[i].Throwaway {
			fetched[i].Size = 32
			continue
		}
		fetched[i].Size = s2.Layers[j].Size
		fetched[i].DiffID = cfg.RootFS.DiffIDs[j]
		j++
	}
	for _, target := range []string{MediaTypeDockerSchema2, MediaTypeOCIManifest} {
		raw, configJSON, err := FromSchema1(s1, fetched, target)
		if err != nil {
			t.Fatal(err)
		}
		m := parseOrFail(t, raw, target)
		if m.Config.Digest != digest.FromBytes(configJSON) || m.Config.Size != int64(len(configJSON)) {
			t.Errorf("%s: config descriptor %+v does not describe the config", target, m.Config)
		}
		if !jsonEqual(t, configJSON, config) {
			t.Errorf("%s: config differs from the original", target)
		}
		if len(m.Layers) != len(s2.Layers) {
			t.Fatalf("%s: %d layers, want %d", target, len(m.Layers), len(s2.Layers))
		}
		for i, l := range m.Layers {
			if l.Digest != s2.Layers[i].Digest || l.Size != s2.Layers[i].Size {
				t.Errorf("%s: layer %d = %s/%d, want %s/%d", target, i, l.Digest, l.Size, s2.Layers[i].Digest, s2.Layers[i].Size)
			}
			if want := map[string]string{MediaTypeDockerSchema2: MediaTypeDockerLayer, MediaTypeOCIManifest: MediaTypeOCILayerGzip}[target]; l.MediaType != want {
				t.Errorf("%s: layer type %s, want %s", target, l.MediaType, want)
			}
		}
	}
	if _, _, err := FromSchema1(s1, s1.Layers, MediaTypeOCIManifest); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("layers without diffIDs: %v, want pullkit.ErrInvalid", err)
	}
	if _, _, err := FromSchema1(s2, nil, MediaTypeOCIManifest); !errors.Is(err, pullkit.ErrInvalid) {
		t.Errorf("schema 2 input: %v, want pullkit.ErrInvalid", err)
	}
	if _, _, err := FromSchema1(s1, fetched, MediaTypeOCIIndex); !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("index target: %v, want pullkit.ErrUnsupported", err)
	}
}

func TestConvertImage(t *testing.T) {
	s2 := parseOrFail(t, readFixture(t, "schema2/httpd-octet-stream-config-mediatype.json"), "")
	raw, err := ConvertImage(s2, MediaTypeOCIManifest)
	if err != nil {
		t.Fatal(err)
	}
	oci := parseOrFail(t, raw, MediaTypeOCIManifest)
	if oci.Config.Digest != s2.Config.Digest || oci.Config.MediaType != MediaTypeOCIConfig {
		t.Errorf("config %+v", oci.Config)
	}
	for i, l := range oci.Layers {
		if l.Digest != s2.Layers[i].Digest || l.Size != s2.Layers[i].Size || l.MediaType != MediaTypeOCILayerGzip {
			t.Errorf("layer %d: %+v", i, l)
		}
	}
	back, err := ConvertImage(oci, MediaTypeDockerSchema2)
	if err != nil {
		t.Fatal(err)
	}
	again := parseOrFail(t, back, MediaTypeDockerSchema2)
	if !reflect.DeepEqual(again.Layers, s2.Layers) || again.Config.Digest != s2.Config.Digest {
		t.Errorf("schema 2 -> OCI -> schema 2 changed the layers or config")
	}
	same, err := ConvertImage(s2, MediaTypeDockerSchema2)
	if err != nil || !bytes.Equal(same, s2.Raw) {
		t.Errorf("converting to its own type must give the served bytes: %v", err)
	}
	docker25 := parseOrFail(t, readFixture(t, "oci-manifest/hello-world-arm64-docker25-save.json"), "")
	d, err := ConvertImage(docker25, MediaTypeDockerSchema2)
	if err != nil {
		t.Fatal(err)
	}
	if m := parseOrFail(t, d, ""); m.Layers[0].MediaType != MediaTypeDockerLayerUncompressed || m.Platform != nil {
		t.Errorf("docker25 as schema 2: %+v, platform %v", m.Layers[0], m.Platform)
	}
	zstd := *oci
	zstd.Layers = []Layer{{Digest: s2.Layers[0].Digest, Size: 1, MediaType: MediaTypeOCILayerZstd}}
	if _, err := ConvertImage(&zstd, MediaTypeDockerSchema2); !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("zstd layer to schema 2: %v, want pullkit.ErrUnsupported", err)
	}
	if _, err := ConvertImage(s2, MediaTypeDockerSchema1Signed); !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("to schema 1: %v, want pullkit.ErrUnsupported (use ToSchema1)", err)
	}
}
