package manifest

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
)

// FuzzParseSchema1 feeds arbitrary documents to parseSchema1, seeded with every schema 1
// fixture (signed, unsigned, invalid) and with documents signed here by RSA and x5c
// keys. It must never panic, every error must be typed, and whatever it accepts must be
// self-consistent: Digest is sha256 of the payload, layers and history line up, and a
// config can be synthesised without panicking.
func FuzzParseSchema1(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "schema1-*", "*.json"))
	if len(files) == 0 {
		f.Fatal("no schema 1 fixtures found")
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	k := s1Keys(f)
	payload := s1ReadFixture(f, "schema1-unsigned/mitr-buxybox-2016-unsigned.json")
	rsaDoc, err := SignSchema1(payload, k.rsa2048, nil)
	if err != nil {
		f.Fatal(err)
	}
	x5cDoc, err := SignSchema1(payload, k.p384, []*x509.Certificate{k.leaf384, k.ca})
	if err != nil {
		f.Fatal(err)
	}
	// A one-layer manifest keeps inputs small, so the fuzzer mutates (and minimises) fast.
	small := []byte(`{"schemaVersion":1,"name":"a/b","tag":"t","architecture":"amd64",` +
		`"fsLayers":[{"blobSum":"` + string(EmptyGzipLayer) + `"}],` +
		`"history":[{"v1Compatibility":"{\"id\":\"` + s1ID('a') + `\",\"throwaway\":true}"}]}`)
	smallDoc, err := SignSchema1(small, k.p256, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rsaDoc)
	f.Add(x5cDoc)
	f.Add(small)
	f.Add(smallDoc)

	f.Fuzz(func(t *testing.T, raw []byte) {
		m, err := parseSchema1(raw)
		if err != nil {
			var ie *pullkit.InvalidError
			var se *SignatureError
			if !errors.As(err, &ie) && !errors.As(err, &se) {
				t.Fatalf("untyped error %T: %v", err, err)
			}
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			if m != nil {
				t.Fatal("manifest returned with an error")
			}
			return
		}
		s1 := m.Schema1
		if s1 == nil {
			t.Fatal("no Schema1")
		}
		if m.Digest != digest.FromBytes(s1.Payload) {
			t.Fatalf("Digest %s is not sha256 of the payload (%s)", m.Digest, digest.FromBytes(s1.Payload))
		}
		if !bytes.Equal(m.Raw, raw) {
			t.Fatal("Raw is not the input")
		}
		switch m.MediaType {
		case MediaTypeDockerSchema1:
			if !bytes.Equal(s1.Payload, raw) || len(s1.Signatures) != 0 {
				t.Fatal("unsigned manifest with a payload other than the document, or signatures")
			}
		case MediaTypeDockerSchema1Signed:
			if len(s1.Signatures) == 0 {
				t.Fatal("signed manifest without verified signatures")
			}
		default:
			t.Fatalf("media type %q", m.MediaType)
		}
		if len(m.Layers) == 0 || len(m.Layers) != len(s1.History) {
			t.Fatalf("%d layers, %d history entries", len(m.Layers), len(s1.History))
		}
		nonEmpty := 0
		for i, l := range m.Layers {
			if l.Digest.Validate() != nil {
				t.Fatalf("layer %d has invalid digest %q", i, l.Digest)
			}
			if l.Empty != s1.History[i].Empty {
				t.Fatalf("layer %d Empty %v, history says %v", i, l.Empty, s1.History[i].Empty)
			}
			want := ""
			if i > 0 {
				want = s1.History[i-1].ID
			}
			if s1.History[i].Parent != want {
				t.Fatalf("history %d parent %q, want %q", i, s1.History[i].Parent, want)
			}
			if !l.Empty {
				nonEmpty++
			}
		}
		ids := make([]digest.Digest, nonEmpty)
		for i := range ids {
			ids[i] = digest.FromString(string(rune('a' + i%26)))
		}
		cfg, err := s1.SynthesizeConfig(ids)
		if err != nil {
			var ie *pullkit.InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("Config: untyped error %v", err)
			}
			return
		}
		if !json.Valid(cfg) {
			t.Fatalf("Config is not JSON: %q", cfg)
		}
	})
}
