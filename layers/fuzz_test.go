package layers

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	digest "github.com/opencontainers/go-digest"
)

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in                string
		start, end, total int64
		ok                bool
	}{
		{"bytes 0-9/10", 0, 9, 10, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"bytes 5-5/*", 5, 5, -1, true},
		{"BYTES 1-2/3", 1, 2, 3, true},
		{"  bytes  7-8/9 ", 7, 8, 9, true},
		{"bytes */10", 0, 0, 0, false},
		{"bytes 9-0/10", 0, 0, 0, false},
		{"bytes 0-10/10", 0, 0, 0, false},
		{"bytes -1-5/10", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 0-5", 0, 0, 0, false},
		{"bytes 0-/10", 0, 0, 0, false},
		{"items 0-5/10", 0, 0, 0, false},
		{"bytes=0-5/10", 0, 0, 0, false},
		{"bytes 0-99999999999999999999/*", 0, 0, 0, false},
		{"", 0, 0, 0, false},
	} {
		s, e, tot, err := parseContentRange(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("%q: error %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (s != tc.start || e != tc.end || tot != tc.total) {
			t.Errorf("%q: %d-%d/%d, want %d-%d/%d", tc.in, s, e, tot, tc.start, tc.end, tc.total)
		}
		if !tc.ok && !errors.Is(err, errContentRangeSyntax) {
			t.Errorf("%q: error %v does not wrap errContentRangeSyntax", tc.in, err)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/10", "bytes 5-5/*", "bytes */10", "bytes 1-0/5", "BYTES 3-4/5", "bytes 00-01/02"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		s, e, tot, err := parseContentRange(h)
		if err != nil {
			return
		}
		if s < 0 || e < s || (tot != -1 && tot <= e) || tot < -1 {
			t.Fatalf("%q parsed to inconsistent %d-%d/%d", h, s, e, tot)
		}
		total := "*"
		if tot >= 0 {
			total = fmt.Sprint(tot)
		}
		s2, e2, tot2, err := parseContentRange(fmt.Sprintf("bytes %d-%d/%s", s, e, total))
		if err != nil || s2 != s || e2 != e || tot2 != tot {
			t.Fatalf("%q: canonical form does not round-trip: %v", h, err)
		}
	})
}

// FuzzDiffID feeds arbitrary blobs to the diffID pipeline, split into buffers of various
// sizes: it must never panic or hang, and must agree with the one-shot computation.
func FuzzDiffID(f *testing.F) {
	tarball := makeTar(f, 90, 3000)
	f.Add(gzipBytes(f, tarball), uint16(100))
	f.Add(zstdBytes(f, tarball), uint16(7))
	f.Add(tarball, uint16(4096))
	f.Add([]byte{0x1f, 0x8b}, uint16(1))
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0}, uint16(3))
	if fixtures, err := filepath.Glob("../testdata/docker-archive/*.tar"); err == nil {
		for _, p := range fixtures {
			if b, err := os.ReadFile(p); err == nil && len(b) < 64<<10 {
				f.Add(gzipBytes(f, b), uint16(512))
			}
		}
	}
	pool := newBufPool(4096)
	f.Fuzz(func(t *testing.T, blob []byte, split uint16) {
		d := digest.FromBytes(blob)
		want, wantErr := diffIDOf(bytes.NewReader(blob), d, true)
		step := int(split%4096) + 1
		di := newDiffIDer(d, pool)
		for rest := blob; len(rest) > 0; {
			b := di.next()
			n := copy(b[:min(step, len(b))], rest)
			rest = rest[n:]
			di.feed(b[:n])
		}
		got, err := di.finish(pool)
		if (err == nil) != (wantErr == nil) || got != want {
			t.Fatalf("pipeline %s (%v), one-shot %s (%v)", got, err, want, wantErr)
		}
		if err == nil && sniff(blob) == compNone && got != d {
			t.Fatalf("uncompressed blob: diffID %s, want its digest %s", got, d)
		}
		if err != nil && !errors.Is(err, ErrDecompress) {
			t.Fatalf("error %v does not wrap ErrDecompress", err)
		}
	})
}

func FuzzParseIndex(f *testing.F) {
	if fixtures, err := filepath.Glob("../testdata/oci-index/*.json"); err == nil {
		for _, p := range fixtures {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Add([]byte(`{"manifests":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		idx, err := parseIndex(b)
		if err != nil {
			if !errors.Is(err, ErrBadLayout) {
				t.Fatalf("error %v does not wrap ErrBadLayout", err)
			}
			return
		}
		out, err := idx.encode(idx.manifests)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseIndex(out)
		if err != nil || len(again.manifests) != len(idx.manifests) {
			t.Fatalf("re-encoded index does not parse back: %v", err)
		}
		var hdr struct {
			SchemaVersion int    `json:"schemaVersion"`
			MediaType     string `json:"mediaType"`
		}
		if json.Unmarshal(out, &hdr) != nil || hdr.SchemaVersion != 2 {
			t.Fatalf("re-encoded index header: %s", out)
		}
	})
}
