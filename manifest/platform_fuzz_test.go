package manifest

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pullkit/pullkit/platforms"
)

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
		want, err := platforms.Parse(wantStr)
		if err != nil {
			return
		}
		got, err := Choose(idx, platforms.Only(want))
		if err != nil {
			var nm *platforms.NoMatchError
			if !errors.As(err, &nm) {
				t.Fatalf("error %v is not a *platforms.NoMatchError", err)
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
		if got.Platform != nil && !platforms.Only(want).Match(*got.Platform) {
			t.Fatalf("chose %s for %s", got.Platform, want)
		}
	})
}
