package pullkit_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/pullkit/pullkit"

// TestDocsStandAlone: the repository's docs and code point at nothing outside it (a
// design document a user of the repository does not have), README says how to build the
// command, and sentences that were found false are gone.
func TestDocsStandAlone(t *testing.T) {
	outside := []string{"../" + "shared/", "DESIGN" + ".md"}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") && name != ".ci" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".go", ".md", ".sh", "":
		default:
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range outside {
			if strings.Contains(string(b), s) {
				t.Errorf("%s points at %s, which is not in the repository", path, s)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "go build -o pull ./examples/pull") {
		t.Error("README does not say how to build the pull command")
	}
	for file, false := range map[string]string{
		"doc.go":          "no package imports one to its right",
		"store/layout.go": "is empty once every pull into the layout has finished",
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(strings.Join(strings.Fields(strings.ReplaceAll(string(b), "//", "")), " "), false) {
			t.Errorf("%s still says %q", file, false)
		}
	}
}

// TestImportOrder checks the package doc's rule: each package imports only packages
// before it in pullkit, platforms, manifest, store, layers, then unpack, archive and
// puller (which import none of each other); pullkittest only pullkit, platforms and
// manifest. Tests and internal packages are outside the rule.
func TestImportOrder(t *testing.T) {
	rank := map[string]int{
		"": 0, "platforms": 1, "manifest": 2, "store": 3, "layers": 4,
		"unpack": 5, "archive": 5, "puller": 5,
		// The configuration parsers import none of pullkit's packages.
		"config/hosts": -1, "config/registries": -1, "config/auth": -1,
		// trust is what a verifier is given and returns; trust/policy (sigstore-go) is
		// never imported by puller.
		"trust": 3, "trust/policy": 4,
	}
	allowed := func(pkg, imp string) bool {
		if strings.HasPrefix(imp, "internal/") {
			return true
		}
		if pkg == "pullkittest" {
			return slices.Contains([]string{"", "platforms", "manifest"}, imp)
		}
		ri, ok := rank[imp]
		return ok && ri < rank[pkg]
	}
	for _, pkg := range []string{"", "platforms", "manifest", "store", "layers", "unpack", "archive", "puller", "pullkittest", "config/hosts", "config/registries", "config/auth", "trust", "trust/policy"} {
		dir := pkg
		if dir == "" {
			dir = "."
		}
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, is := range af.Imports {
				path, _ := strconv.Unquote(is.Path.Value)
				if path != module && !strings.HasPrefix(path, module+"/") {
					continue
				}
				imp := strings.TrimPrefix(strings.TrimPrefix(path, module), "/")
				if !allowed(pkg, imp) {
					t.Errorf("%s imports %s, against the order the package doc states", f, path)
				}
			}
		}
	}
}
