package manifest

import (
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

// FuzzParse feeds arbitrary bytes and Content-Types to Parse, seeded with every JSON
// fixture. It must never panic, and whatever it accepts must verify against its own digest.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "*", "*.json"))
	types := []string{"", "application/json", MediaTypeDockerSchema2, MediaTypeOCIIndex, MediaTypeDockerSchema1Signed}
	for i, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, types[i%len(types)])
	}
	f.Fuzz(func(t *testing.T, raw []byte, mediaType string) {
		m, err := Parse(raw, mediaType)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error text")
			}
			return
		}
		if m.Digest.Validate() != nil {
			t.Fatalf("invalid digest %q", m.Digest)
		}
		if m.Schema1 == nil && m.Digest != digest.FromBytes(raw) {
			t.Fatalf("digest %s is not sha256 of the bytes", m.Digest)
		}
		if _, err := Verify(raw, mediaType, m.Digest); err != nil {
			t.Fatalf("does not verify against its own digest: %v", err)
		}
		for _, l := range m.Layers {
			if l.Digest.Validate() != nil {
				t.Fatalf("layer with invalid digest %q accepted", l.Digest)
			}
		}
		for _, d := range m.Manifests {
			if d.Digest.Validate() != nil {
				t.Fatalf("index entry with invalid digest %q accepted", d.Digest)
			}
		}
		if _, err := ParseConfig(raw); err != nil && err.Error() == "" {
			t.Fatal("empty error text")
		}
	})
}

// FuzzParseConfig checks that no config from the network can panic ParseConfig.
func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "config", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		c, err := ParseConfig(raw)
		if err != nil {
			return
		}
		for _, d := range c.RootFS.DiffIDs {
			if d.Validate() != nil {
				t.Fatalf("invalid diffID %q accepted", d)
			}
		}
	})
}
