package manifest

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
)

// ErrBadPlatform: a platform string is not os/arch[/variant][:os.version].
var ErrBadPlatform = errors.New("invalid platform")

// annotationReferenceType marks an index entry that describes another entry (a BuildKit
// attestation or build record), not a runnable image.
const annotationReferenceType = "vnd.docker.reference.type"

// DefaultPlatform returns the platform images are chosen for when the caller names none:
// linux on the architecture this program runs on (runtime.GOARCH), with the variant an
// engine assumes for it (arm: v7, arm64: v8, amd64: none, which counts as v1).
func DefaultPlatform() Platform {
	return NormalizePlatform(Platform{OS: "linux", Architecture: runtime.GOARCH})
}

// ParsePlatform parses "os/arch[/variant][:os.version]", for example "linux/arm64",
// "linux/arm/v6" or "windows/amd64:10.0.20348.1249", and returns the platform normalised
// by NormalizePlatform. The os and the architecture are both required: a bare "arm64" is
// an error. Surrounding spaces are ignored. Every error wraps ErrBadPlatform.
func ParsePlatform(s string) (Platform, error) {
	in := s
	s = strings.TrimSpace(s)
	bad := func(reason string) (Platform, error) {
		return Platform{}, fmt.Errorf("%w %q: %s (want os/arch[/variant][:os.version])", ErrBadPlatform, in, reason)
	}
	if s == "" {
		return bad("empty")
	}
	var p Platform
	rest, version, hasVersion := strings.Cut(s, ":")
	if hasVersion {
		if version == "" {
			return bad("empty os.version after ':'")
		}
		if !validToken(version) {
			return bad(fmt.Sprintf("os.version %q has characters other than letters, digits, '.', '_' and '-'", version))
		}
		p.OSVersion = version
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 1:
		return bad("no architecture")
	case 2, 3:
	default:
		return bad("too many '/'-separated parts")
	}
	names := [...]string{"os", "architecture", "variant"}
	for i, part := range parts {
		if part == "" {
			return bad("empty " + names[i])
		}
		if !validToken(part) {
			return bad(fmt.Sprintf("%s %q has characters other than letters, digits, '.', '_' and '-'", names[i], part))
		}
	}
	p.OS, p.Architecture = parts[0], parts[1]
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return NormalizePlatform(p), nil
}

// validToken reports whether s is made only of ASCII letters, digits, '.', '_' and '-'.
func validToken(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// NormalizePlatform returns p with the names engines use, so that equal platforms compare
// equal. The os, architecture and variant are lower-cased; the architecture aliases
// x86_64 and x86-64 become amd64, aarch64 becomes arm64, i386 and i686 become 386, armhf
// becomes arm/v7 and armel arm/v6 (replacing any variant given with them). For arm, arm64
// and amd64 a bare number variant gains its "v" ("7" is "v7"); arm without a variant is
// arm/v7, arm64 without a variant is arm64/v8, and amd64/v1 is plain amd64 (an amd64
// entry without a variant is v1). Operating systems are not renamed ("darwin" and "macos"
// stay as they are). OSVersion and OSFeatures are kept unchanged.
func NormalizePlatform(p Platform) Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "i386", "i686":
		p.Architecture = "386"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	}
	if orderedVariants(p.Architecture) && p.Variant != "" && isVersion(p.Variant) {
		p.Variant = "v" + p.Variant
	}
	switch p.Architecture {
	case "arm":
		if p.Variant == "" {
			p.Variant = "v7"
		}
	case "arm64":
		if p.Variant == "" {
			p.Variant = "v8"
		}
	case "amd64":
		if p.Variant == "v1" {
			p.Variant = ""
		}
	}
	return p
}

// orderedVariants reports whether arch's variants are CPU levels where a higher level
// runs the code of every lower one.
func orderedVariants(arch string) bool {
	return arch == "arm" || arch == "arm64" || arch == "amd64"
}

// variantLevel returns the level of a normalised variant of an ordered architecture
// ("v7" -> "7"; amd64 without a variant -> "1"), or false when it is not a level.
func variantLevel(arch, variant string) (string, bool) {
	if !orderedVariants(arch) {
		return "", false
	}
	if arch == "amd64" && variant == "" {
		return "1", true
	}
	if level, ok := strings.CutPrefix(variant, "v"); ok && isVersion(level) {
		return level, true
	}
	return "", false
}

// isVersion reports whether s is dot-separated decimal numbers, like "8" or "8.2".
func isVersion(s string) bool {
	if s == "" {
		return false
	}
	for _, part := range strings.Split(s, ".") {
		if part == "" || !allDigits(part) {
			return false
		}
	}
	return true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// compareVersions compares dot-separated versions part by part, numerically where both
// parts are decimal (of any length) and as strings otherwise; a missing part sorts
// before a present one, so "" < "10.0" < "10.0.17763".
func compareVersions(a, b string) int {
	if a == b {
		return 0
	}
	if a == "" {
		return -1
	}
	if b == "" {
		return 1
	}
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if c := comparePart(as[i], bs[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(as) < len(bs):
		return -1
	case len(as) > len(bs):
		return 1
	}
	return 0
}

func comparePart(a, b string) int {
	if allDigits(a) && allDigits(b) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

// sameWindowsBuild reports whether have's os.version matches want's on major.minor.build
// (the revision, the fourth part, is ignored). When want gives fewer than three parts,
// only those are compared.
func sameWindowsBuild(have, want string) bool {
	hs, ws := strings.Split(have, "."), strings.Split(want, ".")
	n := min(len(ws), 3)
	if len(hs) < n {
		return false
	}
	for i := range n {
		if comparePart(hs[i], ws[i]) != 0 {
			return false
		}
	}
	return true
}

func isUnknown(p Platform) bool {
	return strings.EqualFold(p.OS, "unknown") || strings.EqualFold(p.Architecture, "unknown")
}

// Satisfies reports whether an image built for p runs on a host that wants want, by the
// rules Choose applies: os and architecture equal after normalisation; for arm, arm64
// and amd64 a variant at or below the wanted level (arm/v6 satisfies arm/v7; amd64
// satisfies amd64/v3); for other architectures the same variant; for a Windows want
// with an os.version, the same major.minor.build. A platform whose os or architecture
// is "unknown" (an attestation) satisfies nothing.
func (p Platform) Satisfies(want Platform) bool {
	return satisfies(NormalizePlatform(p), NormalizePlatform(want))
}

// satisfies is Satisfies on platforms already normalised.
func satisfies(have, want Platform) bool {
	if isUnknown(have) || have.OS != want.OS || have.Architecture != want.Architecture {
		return false
	}
	if have.Variant != want.Variant {
		h, okh := variantLevel(have.Architecture, have.Variant)
		w, okw := variantLevel(want.Architecture, want.Variant)
		if !okh || !okw || compareVersions(h, w) > 0 {
			return false
		}
	}
	if want.OS == "windows" && want.OSVersion != "" && !sameWindowsBuild(have.OSVersion, want.OSVersion) {
		return false
	}
	return true
}

// better reports whether candidate a (normalised, satisfying the want) ranks strictly
// above b: the higher variant level first (an exact variant is the highest that
// satisfies), then the higher os.version.
func better(a, b Platform) bool {
	if a.Variant != b.Variant {
		la, oka := variantLevel(a.Architecture, a.Variant)
		lb, okb := variantLevel(b.Architecture, b.Variant)
		if oka && okb {
			if c := compareVersions(la, lb); c != 0 {
				return c > 0
			}
		}
	}
	return compareVersions(a.OSVersion, b.OSVersion) > 0
}

// isImageOrIndexType reports whether an index entry's media type can be pulled as an
// image: an image manifest or a nested index of any supported format, or no media type.
func isImageOrIndexType(mediaType string) bool {
	switch mediaType {
	case "", MediaTypeOCIManifest, MediaTypeDockerSchema2, MediaTypeOCIIndex, MediaTypeDockerManifestList,
		MediaTypeDockerSchema1, MediaTypeDockerSchema1Signed:
		return true
	}
	return false
}

// Choose picks the entry of an index (a Docker manifest list or an OCI index) to pull for
// the platform want; a zero want means DefaultPlatform(). The returned descriptor may
// point at a nested index, which the caller resolves in turn.
//
// Only entries whose media type is an image manifest or an index (or is empty) count, and
// never an entry whose os or architecture is "unknown" or that carries a
// vnd.docker.reference.type annotation (BuildKit attestations and build records). Among
// the entries that satisfy want (see Platform.Satisfies) the best is chosen:
//
//   - the highest variant level, so an exact variant wins; a linux/arm/v8 host takes v8,
//     then v7, v6, v5; linux/arm64 takes arm64 with or without "v8"; an amd64/v3 host
//     takes v3, then v2, then plain amd64;
//   - then the highest os.version. For a Windows want with an os.version this picks the
//     newest revision of the host's build (other builds are never chosen); for a want
//     without an os.version it picks the newest Windows version offered, so pass the
//     host's os.version when the image must run with process isolation;
//   - then the first in index order.
//
// Entries without a platform are not matched, with one exception: when the index holds
// exactly one such entry and nothing else that counts (an OCI layout's index.json
// pointing at a manifest list), that entry is returned whatever want is.
//
// A manifest that is not an index gives an *InvalidError. When nothing matches, the
// error wraps a *NoMatchError whose Want is the normalised want and whose Offered lists,
// in index order and as the index writes them, the platforms of every entry that counts;
// the error text names the index digest.
func Choose(index *Manifest, want Platform) (Descriptor, error) {
	if index == nil {
		return Descriptor{}, &InvalidError{Reason: "choose a platform: no manifest given"}
	}
	if index.Kind != KindIndex {
		return Descriptor{}, &InvalidError{
			MediaType: index.MediaType,
			Reason:    fmt.Sprintf("choose a platform: manifest %s is not an index (kind %d)", index.Digest, index.Kind),
		}
	}
	if want.OS == "" && want.Architecture == "" {
		want = DefaultPlatform()
	} else {
		want = NormalizePlatform(want)
	}

	best := -1
	var bestPlatform Platform
	var offered []Platform
	var platformless []int
	for i, d := range index.Manifests {
		if !isImageOrIndexType(d.MediaType) || d.Annotations[annotationReferenceType] != "" {
			continue
		}
		if d.Platform == nil {
			platformless = append(platformless, i)
			continue
		}
		if isUnknown(*d.Platform) {
			continue
		}
		offered = append(offered, clonePlatform(*d.Platform))
		have := NormalizePlatform(*d.Platform)
		if !satisfies(have, want) {
			continue
		}
		if best < 0 || better(have, bestPlatform) {
			best, bestPlatform = i, have
		}
	}
	if best >= 0 {
		return index.Manifests[best], nil
	}
	if len(offered) == 0 && len(platformless) == 1 {
		return index.Manifests[platformless[0]], nil
	}
	err := &NoMatchError{Want: want, Offered: offered}
	if index.Digest != "" {
		return Descriptor{}, fmt.Errorf("index %s: %w", index.Digest, err)
	}
	return Descriptor{}, err
}

func clonePlatform(p Platform) Platform {
	if p.OSFeatures != nil {
		p.OSFeatures = append([]string(nil), p.OSFeatures...)
	}
	return p
}
