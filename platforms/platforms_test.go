package platforms

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
)

func mustParse(t *testing.T, s string) Platform {
	t.Helper()
	p, err := Parse(s)
	if err != nil {
		t.Fatalf("Parse(%q): %v", s, err)
	}
	return p
}

func TestDefaultPlatform(t *testing.T) {
	p := Default()
	if p.OS != "linux" || p.Architecture != runtime.GOARCH || p.OSVersion != "" {
		t.Fatalf("Default() = %+v, want linux/%s", p, runtime.GOARCH)
	}
	want := map[string]string{"arm": "v7", "arm64": "v8"}[runtime.GOARCH]
	if p.Variant != want {
		t.Errorf("variant %q, want %q", p.Variant, want)
	}
	if !reflect.DeepEqual(Normalize(p), p) {
		t.Errorf("Default() %+v is not normalised", p)
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Platform
	}{
		{"linux/amd64", Platform{OS: "linux", Architecture: "amd64"}},
		{" linux/amd64\n", Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/amd64/v1", Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/amd64/v3", Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}},
		{"linux/arm64", Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{"linux/arm64/8", Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{"linux/arm", Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{"linux/arm/v6", Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{"linux/armhf", Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{"linux/aarch64", Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{"Linux/X86_64", Platform{OS: "linux", Architecture: "amd64"}},
		{"linux/riscv64", Platform{OS: "linux", Architecture: "riscv64"}},
		{"darwin/arm64", Platform{OS: "darwin", Architecture: "arm64", Variant: "v8"}},
		{"macos/arm64", Platform{OS: "macos", Architecture: "arm64", Variant: "v8"}},
		{"unknown/unknown", Platform{OS: "unknown", Architecture: "unknown"}},
		{"windows/amd64:10.0.20348.1249", Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.1249"}},
		{"windows/arm64/v8:10.0.26100", Platform{OS: "windows", Architecture: "arm64", Variant: "v8", OSVersion: "10.0.26100"}},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParsePlatformBad(t *testing.T) {
	for _, in := range []string{
		"",
		"   ",
		"amd64",                // bare arch: os is required
		"linux",                // no arch
		"linux/",               // empty arch
		"/amd64",               // empty os
		"linux/arm//",          // too many parts
		"linux/arm/v7/extra",   // too many parts
		"linux/arm/",           // empty variant
		"linux/amd64:",         // empty os.version
		"windows/amd64:10.0:1", // ':' in os.version
		"windows:10.0/amd64",   // os.version in the wrong place
		"linux/am d64",         // space inside
		"linux/amd64\x00",      // control byte
		"linux/amd64/v2,linux/arm64",
		"línux/amd64", // non-ASCII
	} {
		p, err := Parse(in)
		if err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", in, p)
			continue
		}
		if !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("Parse(%q): error %v does not wrap pullkit.ErrInvalid", in, err)
		}
		if !strings.Contains(err.Error(), strings.TrimSpace(strings.ReplaceAll(in, "\x00", `\x00`))) {
			t.Errorf("Parse(%q): error %q does not quote the input", in, err)
		}
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		in, want Platform
	}{
		{Platform{OS: "linux", Architecture: "x86_64"}, Platform{OS: "linux", Architecture: "amd64"}},
		{Platform{OS: "linux", Architecture: "x86-64"}, Platform{OS: "linux", Architecture: "amd64"}},
		{Platform{OS: "linux", Architecture: "AMD64", Variant: "V1"}, Platform{OS: "linux", Architecture: "amd64"}},
		{Platform{OS: "linux", Architecture: "amd64", Variant: "3"}, Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}},
		{Platform{OS: "linux", Architecture: "aarch64"}, Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}},
		{Platform{OS: "linux", Architecture: "arm64", Variant: "8.2"}, Platform{OS: "linux", Architecture: "arm64", Variant: "v8.2"}},
		{Platform{OS: "linux", Architecture: "i386"}, Platform{OS: "linux", Architecture: "386"}},
		{Platform{OS: "linux", Architecture: "i686"}, Platform{OS: "linux", Architecture: "386"}},
		{Platform{OS: "linux", Architecture: "armhf"}, Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{Platform{OS: "linux", Architecture: "armhf", Variant: "v6"}, Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{Platform{OS: "linux", Architecture: "armel"}, Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{Platform{OS: "linux", Architecture: "arm"}, Platform{OS: "linux", Architecture: "arm", Variant: "v7"}},
		{Platform{OS: "linux", Architecture: "arm", Variant: "6"}, Platform{OS: "linux", Architecture: "arm", Variant: "v6"}},
		{Platform{OS: "Windows", Architecture: "AMD64", OSVersion: "10.0.17763.3650"}, Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763.3650"}},
		{Platform{OS: "macos", Architecture: "arm64"}, Platform{OS: "macos", Architecture: "arm64", Variant: "v8"}},
		{Platform{OS: "darwin", Architecture: "amd64"}, Platform{OS: "darwin", Architecture: "amd64"}},
		{Platform{OS: "linux", Architecture: "ppc64le", Variant: "7"}, Platform{OS: "linux", Architecture: "ppc64le", Variant: "7"}},
		{Platform{OS: "linux", Architecture: "riscv64", Variant: "RVA22U64"}, Platform{OS: "linux", Architecture: "riscv64", Variant: "rva22u64"}},
		{Platform{OS: "unknown", Architecture: "unknown"}, Platform{OS: "unknown", Architecture: "unknown"}},
	}
	for _, tt := range tests {
		got := Normalize(tt.in)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Normalize(%+v) = %+v, want %+v", tt.in, got, tt.want)
		}
		if again := Normalize(got); !reflect.DeepEqual(again, got) {
			t.Errorf("NormalizePlatform is not idempotent on %+v: %+v", got, again)
		}
	}
}

func TestSatisfies(t *testing.T) {
	tests := []struct {
		have, want string
		ok         bool
	}{
		{"linux/arm/v5", "linux/arm/v8", true},
		{"linux/arm/v8", "linux/arm/v7", false},
		{"linux/arm", "linux/arm/v7", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64/v8.2", "linux/arm64/v8", false},
		{"linux/arm64/v8", "linux/arm64/v8.2", true},
		{"linux/amd64", "linux/amd64/v4", true},
		{"linux/amd64/v4", "linux/amd64/v3", false},
		{"linux/arm/v7", "linux/arm64", false},
		{"linux/amd64", "windows/amd64", false},
		{"unknown/unknown", "unknown/unknown", false},
		{"linux/ppc64le/power9", "linux/ppc64le/power10", false},
		{"linux/ppc64le/power9", "linux/ppc64le/power9", true},
		{"linux/ppc64le/power9", "linux/ppc64le", false},
		{"windows/amd64:10.0.20348.1249", "windows/amd64:10.0.20348.1", true},
		{"windows/amd64:10.0.20348.1249", "windows/amd64:10.0.17763.1", false},
		{"windows/amd64:10.0.20348.1249", "windows/amd64", true},
		{"windows/amd64", "windows/amd64:10.0.20348", false},
	}
	for _, tt := range tests {
		have, want := mustParse(t, tt.have), mustParse(t, tt.want)
		if got := Only(want).Match(have); got != tt.ok {
			t.Errorf("%smatched by Only(%s) = %v, want %v", tt.have, tt.want, got, tt.ok)
		}
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"", "10.0", -1},
		{"10.0.17763.3650", "10.0.20348.1249", -1},
		{"10.0.20348.10", "10.0.20348.9", 1},
		{"10.0.020348", "10.0.20348", 0},
		{"10.0", "10.0.1", -1},
		{"99999999999999999999999", "100000000000000000000000", -1},
		{"8.a", "8.b", -1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareVersions(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

// fixturePlatforms returns the platform strings of every index fixture's entries (fuzz seeds).
func fixturePlatforms(t testing.TB) []string {
	var out []string
	paths, err := filepath.Glob("../testdata/*/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range paths {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Manifests []struct {
				Platform *Platform `json:"platform"`
			} `json:"manifests"`
		}
		if json.Unmarshal(raw, &doc) != nil {
			continue
		}
		for _, d := range doc.Manifests {
			if d.Platform != nil {
				out = append(out, d.Platform.String())
			}
		}
	}
	return out
}

// FuzzParsePlatform: ParsePlatform never panics; what it accepts is normalised, and the
// normalised platform's String() parses back to the same platform.
func FuzzParse(f *testing.F) {
	for _, s := range fixturePlatforms(f) {
		f.Add(s)
	}
	for _, s := range []string{
		"linux/amd64", "linux/arm", "linux/armhf", "linux/armel/v5", "linux/aarch64/8",
		"windows/amd64:10.0.20348.1249", "linux/amd64/V1", "x86_64", "linux/arm64/v8.2",
		"linux/amd64:", ":", "/", "a/b/c/d", " linux/s390x ",
		strings.Repeat("0", 41) + "/0", "linux/" + strings.Repeat("a", 64), "linux/amd64:" + strings.Repeat("1", 65),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			if !errors.Is(err, pullkit.ErrInvalid) {
				t.Fatalf("Parse(%q): error %v does not wrap pullkit.ErrInvalid", s, err)
			}
			return
		}
		if p.OS == "" || p.Architecture == "" {
			t.Fatalf("Parse(%q) = %+v: accepted without os or architecture", s, p)
		}
		n := Normalize(p)
		if !reflect.DeepEqual(n, p) {
			t.Fatalf("Parse(%q) = %+v is not normalised (%+v)", s, p, n)
		}
		q, err := Parse(n.String())
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but its String() %q does not parse: %v", s, p, n.String(), err)
		}
		if !reflect.DeepEqual(q, n) {
			t.Fatalf("Parse(%q) = %+v; String() %q parses to %+v", s, n, n.String(), q)
		}
		if !Only(n).Match(n) && n.OS != "unknown" && n.Architecture != "unknown" {
			t.Fatalf("%+v does not satisfy itself", n)
		}
	})
}

// TestAny: every platform but an attestation's matches; the host's is preferred, then
// the first offered.
func TestAny(t *testing.T) {
	m := Any()
	for _, p := range []Platform{{OS: "linux", Architecture: "s390x"}, {OS: "windows", Architecture: "amd64"}, {OS: "linux", Architecture: "riscv64"}} {
		if !m.Match(p) {
			t.Errorf("Any does not match %v", p)
		}
	}
	if m.Match(Platform{OS: "unknown", Architecture: "unknown"}) {
		t.Error("Any matches an attestation's unknown/unknown")
	}
	host, other := Default(), Platform{OS: "linux", Architecture: "s390x"}
	if host.Architecture == "s390x" {
		other.Architecture = "ppc64le"
	}
	if !m.Less(host, other) || m.Less(other, host) {
		t.Errorf("Any does not prefer the host's %v over %v", host, other)
	}
	if m.Less(other, Platform{OS: "linux", Architecture: "mips64"}) {
		t.Error("Any ranks two foreign platforms: the first offered should win")
	}
	if Describe(m) != "any" {
		t.Errorf("Describe(Any()) = %q", Describe(m))
	}
}
