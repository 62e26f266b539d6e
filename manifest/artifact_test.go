package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

const (
	emptyJSON   = `{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}`
	sbomBlob    = `{"mediaType":"application/spdx+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0}`
	subjectDesc = `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:f54a58bc1aac5ea1a25d796ae155dc228b3f0e11d046ae276b39c4bf2f13d8c4","size":525}`
)

func TestParseArtifact(t *testing.T) {
	for _, tc := range []struct {
		name, raw, mediaType string
		want                 error
		artifactType         string
		blobs                int
		subject, config      bool
	}{
		{"OCI 1.1 artifact with artifactType and the empty config",
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":` + emptyJSON + `,"layers":[` + sbomBlob + `],"subject":` + subjectDesc + `,"annotations":{"a":"b"}}`,
			MediaTypeOCIManifest, nil, "application/spdx+json", 1, true, true},
		{"no artifactType: the config's media type",
			`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`,
			"", nil, "application/vnd.cncf.helm.config.v1+json", 0, false, true},
		{"withdrawn artifact manifest",
			`{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"application/vnd.example.sig","blobs":[` + sbomBlob + `],"subject":` + subjectDesc + `}`,
			"application/json", nil, "application/vnd.example.sig", 1, true, false},
		{"an image is an artifact of its config type",
			`{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`,
			MediaTypeOCIManifest, nil, MediaTypeOCIConfig, 0, false, true},
		{"an index", `{"schemaVersion":2,"manifests":[]}`, "", pullkit.ErrUnsupported, "", 0, false, false},
		{"Docker schema 2", `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":` + emptyJSON + `}`, "", pullkit.ErrUnsupported, "", 0, false, false},
		{"served as another type", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]}`, MediaTypeOCIManifest, pullkit.ErrInvalid, "", 0, false, false},
		{"bad blob digest", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + emptyJSON + `,"layers":[{"digest":"sha256:12","size":1}]}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"negative size", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[{"digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":-1}]}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"bad subject", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[],"subject":{"digest":"x"}}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"no config", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"schemaVersion 1", `{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + emptyJSON + `}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"data after the document", `{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","blobs":[]} {}`, "", pullkit.ErrInvalid, "", 0, false, false},
		{"not JSON", `<html>`, "text/html", pullkit.ErrInvalid, "", 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := ParseArtifact([]byte(tc.raw), tc.mediaType)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Digest != digest.FromString(tc.raw) || string(a.Raw) != tc.raw || a.ArtifactType != tc.artifactType || len(a.Blobs) != tc.blobs ||
				(a.Subject != nil) != tc.subject || (a.Config != nil) != tc.config {
				t.Errorf("ParseArtifact = %+v", a)
			}
		})
	}
}

// FuzzParseArtifact: whatever ParseArtifact accepts is named by the sha256 of its bytes
// and has only descriptors a puller can fetch.
func FuzzParseArtifact(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "")
	}
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json","config":`+emptyJSON+`,"layers":[`+sbomBlob+`],"subject":`+subjectDesc+`}`), MediaTypeOCIManifest)
	f.Add([]byte(`{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","artifactType":"x","blobs":[`+sbomBlob+`]}`), "application/json")
	f.Fuzz(func(t *testing.T, raw []byte, mediaType string) {
		a, err := ParseArtifact(raw, mediaType)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		if a.Digest != digest.FromBytes(raw) {
			t.Fatalf("digest %s is not sha256 of the bytes", a.Digest)
		}
		if a.MediaType != MediaTypeOCIManifest && a.MediaType != MediaTypeOCIArtifact {
			t.Fatalf("media type %q", a.MediaType)
		}
		if (a.Config == nil) != (a.MediaType == MediaTypeOCIArtifact) || a.Blobs == nil {
			t.Fatalf("config %v and blobs %v for a %s", a.Config, a.Blobs, a.MediaType)
		}
		ds := append([]Descriptor(nil), a.Blobs...)
		if a.Config != nil {
			ds = append(ds, *a.Config)
		}
		if a.Subject != nil {
			ds = append(ds, *a.Subject)
		}
		for _, d := range ds {
			if d.Digest.Validate() != nil || d.Size < 0 {
				t.Fatalf("descriptor %+v accepted", d)
			}
		}
	})
}
