package registries

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The EXAMPLE of containers-registries.conf(5), read as it is.
const manExample = `unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true

[[registry]]
location = "registry.com"

[[registry.mirror]]
location = "mirror.registry.com"
`

// The man page's version 1 example.
const manV1 = `[registries.search]
registries = ['registry1.com', 'registry2.com']

[registries.insecure]
registries = ['registry3.com']

[registries.block]
registries = ['registry.untrusted.com', 'registry.unsafe.com']
`

func refs(srcs []Source) []string {
	var out []string
	for _, s := range srcs {
		out = append(out, s.Ref)
	}
	return out
}

func TestManPageExample(t *testing.T) {
	c, err := Parse("registries.conf", []byte(manExample))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.UnqualifiedSearch, []string{"example.com"}) {
		t.Errorf("search = %v", c.UnqualifiedSearch)
	}
	r := c.Find("example.com/foo/image:latest")
	if r == nil || r.Prefix != "example.com/foo" {
		t.Fatalf("Find = %+v", r)
	}
	want := []string{
		"example-mirror-0.local/mirror-for-foo/image:latest",
		"example-mirror-1.local/mirrors/foo/image:latest",
		"internal-registry-for-example.com/bar/image:latest",
	}
	if got := refs(r.Sources("example.com/foo/image:latest", false)); !reflect.DeepEqual(got, want) {
		t.Errorf("sources %v, want %v (the man page's order)", got, want)
	}
	// "pulling the image registry.com/image:latest will hence only reach out to
	// mirror.registry.com", then registry.com.
	r = c.Find("registry.com/image:latest")
	if got := refs(r.Sources("registry.com/image:latest", false)); !reflect.DeepEqual(got, []string{"mirror.registry.com/image:latest", "registry.com/image:latest"}) {
		t.Errorf("registry.com sources %v", got)
	}
	if !c.Insecure("example-mirror-1.local") || c.Insecure("example-mirror-0.local") {
		t.Error("insecure mirror not recognised")
	}
	if c.Find("example.com/foobar/x:1") != nil {
		t.Error("prefix example.com/foo matched example.com/foobar")
	}
}

func TestMatching(t *testing.T) {
	conf := `
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry]]
prefix = "a.example.com/team"
location = "mirror.internal/team"
mirror-by-digest-only = true
[[registry.mirror]]
location = "m1.internal/team"
[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "digest.internal"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "tag.internal"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "all.internal"
pull-from-mirror = "all"
[[registry]]
prefix = "example.com:5000"
location = "other.com:5000"
blocked = true
`
	c, err := Parse("r.conf", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref    string
		digest bool
		prefix string
		want   []string
	}{
		{"b.example.com/x/y:1", false, "*.example.com", []string{"b.example.com/x/y:1"}},
		{"deep.b.example.com:443/x:1", false, "*.example.com", []string{"deep.b.example.com:443/x:1"}},
		{"a.example.com/team/app:1", false, "a.example.com/team", []string{"mirror.internal/team/app:1"}},
		{"a.example.com/team/app@sha256:aa", true, "a.example.com/team", []string{"m1.internal/team/app@sha256:aa", "mirror.internal/team/app@sha256:aa"}},
		{"a.example.com/other/app:1", false, "*.example.com", []string{"a.example.com/other/app:1"}},
		{"quay.io/x/y:1", false, "quay.io", []string{"tag.internal/x/y:1", "all.internal/x/y:1", "quay.io/x/y:1"}},
		{"quay.io/x/y@sha256:aa", true, "quay.io", []string{"digest.internal/x/y@sha256:aa", "all.internal/x/y@sha256:aa", "quay.io/x/y@sha256:aa"}},
		{"example.com/x:1", false, "", nil},
		{"example.com:5000/x:1", false, "example.com:5000", []string{"other.com:5000/x:1"}},
	} {
		r := c.Find(tc.ref)
		if tc.prefix == "" {
			if r != nil {
				t.Errorf("%s matched %q", tc.ref, r.Prefix)
			}
			continue
		}
		if r == nil || r.Prefix != tc.prefix {
			t.Errorf("%s: Find = %+v, want prefix %s", tc.ref, r, tc.prefix)
			continue
		}
		if got := refs(r.Sources(tc.ref, tc.digest)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: sources %v, want %v", tc.ref, got, tc.want)
		}
	}
	if r := c.Find("example.com:5000/x:1"); r == nil || !r.Blocked {
		t.Error("blocked not read")
	}
	if !c.Insecure("b.example.com") || c.Insecure("example.org") {
		t.Error("wildcard insecure")
	}
}

func TestVersion1(t *testing.T) {
	c, err := Parse("r.conf", []byte(manV1))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.UnqualifiedSearch, []string{"registry1.com", "registry2.com"}) {
		t.Errorf("search = %v", c.UnqualifiedSearch)
	}
	if r := c.Find("registry.unsafe.com/x:1"); r == nil || !r.Blocked {
		t.Error("v1 block")
	}
	if !c.Insecure("registry3.com") {
		t.Error("v1 insecure")
	}
}

func TestDropIns(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "registries.conf")
	write := func(p, s string) {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(main, "unqualified-search-registries = [\"a.io\"]\n[aliases]\n\"app\" = \"a.io/team/app\"\n\"gone\" = \"a.io/gone\"\n[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"old.mirror\"\n")
	write(filepath.Join(dir, "registries.conf.d", "10-first.conf"), "[[registry]]\nlocation = \"a.io\"\n[[registry.mirror]]\nlocation = \"new.mirror\"\n[aliases]\n\"gone\" = \"\"\n")
	write(filepath.Join(dir, "registries.conf.d", "20-second.conf"), "unqualified-search-registries = [\"b.io\", \"c.io:5000\"]\nshort-name-mode = \"disabled\"\n")
	write(filepath.Join(dir, "registries.conf.d", "30-ignored.txt"), "not toml at all [[[")
	c, err := Load(main)
	if err != nil {
		t.Fatal(err)
	}
	if got := refs(c.Find("a.io/x:1").Sources("a.io/x:1", false)); !reflect.DeepEqual(got, []string{"new.mirror/x:1", "a.io/x:1"}) {
		t.Errorf("a drop-in's table must replace the same prefix: %v", got)
	}
	if !reflect.DeepEqual(c.UnqualifiedSearch, []string{"b.io", "c.io:5000"}) || !strings.HasSuffix(c.SearchFile, "20-second.conf") {
		t.Errorf("search = %v from %s", c.UnqualifiedSearch, c.SearchFile)
	}
	if _, ok := c.Aliases["gone"]; ok || c.Aliases["app"] != "a.io/team/app" || c.ShortNameMode != "disabled" {
		t.Errorf("aliases %v, mode %q", c.Aliases, c.ShortNameMode)
	}
	if len(c.Files) != 3 {
		t.Errorf("files read %v", c.Files)
	}
}

func TestRefuses(t *testing.T) {
	for name, conf := range map[string]string{
		"scheme in location":      "[[registry]]\nlocation = \"https://x.io\"\n",
		"no prefix, no location":  "[[registry]]\ninsecure = true\n",
		"bad wildcard":            "[[registry]]\nprefix = \"*.x.io/foo\"\n",
		"wildcard in the middle":  "[[registry]]\nprefix = \"a.*.io\"\nlocation = \"a.io\"\n",
		"pull-from-mirror value":  "[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"sometimes\"\n",
		"both digest-only forms":  "[[registry]]\nlocation = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n",
		"mirror without location": "[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\ninsecure = true\n",
		"alias with a tag":        "[aliases]\n\"app:1\" = \"x.io/app\"\n",
		"alias to a short name":   "[aliases]\n\"app\" = \"team/app\"\n",
		"search not a host":       "unqualified-search-registries = [\"x.io/team\"]\n",
		"mixed v1 and v2":         "unqualified-search-registries = [\"x.io\"]\n[registries.search]\nregistries = [\"y.io\"]\n",
		"short-name-mode":         "short-name-mode = \"lenient\"\n",
		"same prefix twice":       "[[registry]]\nlocation = \"x.io\"\n[[registry]]\nlocation = \"x.io\"\n",
	} {
		if _, err := Parse("r.conf", []byte(conf)); err == nil {
			t.Errorf("%s: parsed %q", name, conf)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(manExample))
	f.Add([]byte(manV1))
	f.Add([]byte("[[registry]]\nprefix = \"*.example.com\"\n[aliases]\n\"a\" = \"x.io/a\"\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("r.conf", b)
		if err != nil {
			return
		}
		for _, r := range c.Registries {
			if r.Prefix == "" {
				t.Fatalf("table without a prefix: %+v", r)
			}
			ref := strings.TrimPrefix(r.Prefix, "*.") + "/x:1"
			if strings.HasPrefix(r.Prefix, "*.") {
				ref = "a." + ref
			}
			if got := c.Find(ref); got == nil {
				t.Fatalf("prefix %q does not match %q", r.Prefix, ref)
			}
		}
	})
}
