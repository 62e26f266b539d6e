package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzParsePlatform: ParsePlatform never panics; what it accepts is normalised, and the
// normalised platform's String() parses back to the same platform.
func FuzzParsePlatform(f *testing.F) {
	for _, s := range fixturePlatforms(f) {
		f.Add(s)
	}
	for _, s := range []string{
		"linux/amd64", "linux/arm", "linux/armhf", "linux/armel/v5", "linux/aarch64/8",
		"windows/amd64:10.0.20348.1249", "linux/amd64/V1", "x86_64", "linux/arm64/v8.2",
		"linux/amd64:", ":", "/", "a/b/c/d", " linux/s390x ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePlatform(s)
		if err != nil {
			if !errors.Is(err, ErrBadPlatform) {
				t.Fatalf("ParsePlatform(%q): error %v does not wrap ErrBadPlatform", s, err)
			}
			return
		}
		if p.OS == "" || p.Architecture == "" {
			t.Fatalf("ParsePlatform(%q) = %+v: accepted without os or architecture", s, p)
		}
		n := NormalizePlatform(p)
		if !reflect.DeepEqual(n, p) {
			t.Fatalf("ParsePlatform(%q) = %+v is not normalised (%+v)", s, p, n)
		}
		q, err := ParsePlatform(n.String())
		if err != nil {
			t.Fatalf("ParsePlatform(%q) = %+v, but its String() %q does not parse: %v", s, p, n.String(), err)
		}
		if !reflect.DeepEqual(q, n) {
			t.Fatalf("ParsePlatform(%q) = %+v; String() %q parses to %+v", s, n, n.String(), q)
		}
		if !n.Satisfies(n) && n.OS != "unknown" && n.Architecture != "unknown" {
			t.Fatalf("%+v does not satisfy itself", n)
		}
	})
}

// FuzzChoose: Choose never panics on an index from the network; what it returns is one
// of the index's entries that satisfies the want (or the lone platformless entry), never
// an unknown/unknown one; a failure is a NoMatchError that offers no unknown platform.
func FuzzChoose(f *testing.F) {
	paths, err := filepath.Glob("../testdata/oci-index/*.json")
	if err != nil {
		f.Fatal(err)
	}
	paths = append(paths, helloWorldList)
	wants := []string{"linux/amd64", "linux/arm/v6", "linux/arm64", "windows/amd64:10.0.17763.1", "unknown/unknown"}
	for i, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, wants[i%len(wants)])
	}
	f.Add([]byte(`{"manifests":[{"platform":{"os":"windows","architecture":"amd64","os.version":"10.0.99999999999999999999999.1"}},{"platform":{"os":"windows","architecture":"amd64","os.version":"10.0.x.1"}}]}`), "windows/amd64:10.0.x")
	f.Fuzz(func(t *testing.T, raw []byte, wantStr string) {
		idx, err := indexFromJSON(raw)
		if err != nil {
			return
		}
		want, err := ParsePlatform(wantStr)
		if err != nil {
			return
		}
		got, err := Choose(idx, want)
		if err != nil {
			var nm *NoMatchError
			if !errors.As(err, &nm) {
				t.Fatalf("error %v is not a *NoMatchError", err)
			}
			for _, p := range nm.Offered {
				if isUnknown(p) {
					t.Fatalf("offered unknown platform %s", p)
				}
			}
			return
		}
		found := false
		for _, d := range idx.Manifests {
			if reflect.DeepEqual(d, got) {
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("chose %+v, which is not an entry of the index", got)
		}
		if !isImageOrIndexType(got.MediaType) {
			t.Fatalf("chose media type %q", got.MediaType)
		}
		if got.Platform != nil && !got.Platform.Satisfies(want) {
			t.Fatalf("chose %s for %s", got.Platform, want)
		}
	})
}
