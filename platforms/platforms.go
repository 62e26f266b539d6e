// Package platforms says which platform an image is for and which of an index's images a
// host should run: parsing "os/arch[/variant][:os.version]", normalising the names
// engines use for the same CPU (arm64 == arm64/v8, armhf == arm/v7, x86_64 == amd64), and
// matching with the rules users expect (a v8 host runs v7, amd64/v3 runs plain amd64,
// Windows matches on major.minor.build).
//
// It is a package of its own because matching is policy that engines replace: manifest's
// Choose takes any Matcher, and Only gives the rules above.
package platforms

import (
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// Platform describes the OS and CPU an image is for, as the OCI image-spec does.
type Platform struct {
	OS           string   `json:"os"`
	Architecture string   `json:"architecture"`
	Variant      string   `json:"variant,omitempty"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
}

// String formats p as os/arch[/variant][:os.version], each part escaped for printing.
func (p Platform) String() string {
	s := text.Clean(p.OS, maxToken) + "/" + text.Clean(p.Architecture, maxToken)
	if p.Variant != "" {
		s += "/" + text.Clean(p.Variant, maxToken)
	}
	if p.OSVersion != "" {
		s += ":" + text.Clean(p.OSVersion, maxToken)
	}
	return s
}

// Clone returns a copy of p that shares no slice with it.
func (p Platform) Clone() Platform {
	if p.OSFeatures != nil {
		p.OSFeatures = append([]string(nil), p.OSFeatures...)
	}
	return p
}

// A Matcher decides which platforms a host runs and which of them it prefers. Only gives
// the usual rules; an engine with other needs (a VM that runs several, a policy that
// refuses emulation) supplies its own.
type Matcher interface {
	// Match reports whether an image for p runs here.
	Match(p Platform) bool
	// Less reports whether a is preferred over b, both matching.
	Less(a, b Platform) bool
}

// Only returns the Matcher for a host that wants want (a zero want is Default()): os and
// architecture equal after Normalize; for arm, arm64 and amd64 a variant at or below the
// wanted level (arm/v6 runs on arm/v7; amd64 on amd64/v3), preferring the highest; for
// other architectures the same variant; for a Windows want with an os.version, the same
// major.minor.build, preferring the newest revision (without one, the newest version). A
// platform whose os or architecture is "unknown" (an attestation) never matches. Its
// String is the normalised want.
func Only(want Platform) Matcher {
	if want.OS == "" && want.Architecture == "" {
		return only{Default()}
	}
	return only{Normalize(want)}
}

type only struct{ want Platform }

func (m only) Match(p Platform) bool   { return satisfies(Normalize(p), m.want) }
func (m only) Less(a, b Platform) bool { return better(Normalize(a), Normalize(b)) }
func (m only) String() string          { return m.want.String() }

// Any returns the Matcher that takes an image for any platform (but "unknown" ones, which
// are attestations), preferring the ones Only(Default()) takes, then the first offered.
// It is how an engine opts out of the platform check (a mirror, a scanner, a copy of
// every platform's image): given to puller.WithMatcher, a single image is pulled
// whatever platform its config names, and Resolve fetches nothing to check it. Its
// String is "any".
func Any() Matcher { return anyPlatform{} }

type anyPlatform struct{}

func (anyPlatform) Match(p Platform) bool { return !isUnknown(p) }

func (anyPlatform) Less(a, b Platform) bool {
	host := Only(Default())
	if am, bm := host.Match(a), host.Match(b); am != bm || !am {
		return am && !bm
	}
	return host.Less(a, b)
}

func (anyPlatform) String() string { return "any" }

// NoMatchError reports that none of the platforms offered matches the one wanted.
type NoMatchError struct {
	// Want describes what was asked for (the matcher's String, or the platform).
	Want string
	// Offered are the platforms offered, in the order they were found.
	Offered []Platform
}

// maxListed bounds how many offered platforms an error message names.
const maxListed = 12

func (e *NoMatchError) Error() string {
	offered := make([]string, len(e.Offered))
	for i, p := range e.Offered {
		offered[i] = p.String()
	}
	list := text.List(offered, maxListed)
	if list == "" {
		list = "none"
	}
	return fmt.Sprintf("no image for platform %s; offered: %s", text.Clean(e.Want, 100), list)
}

// Unwrap returns pullkit.ErrNoMatch.
func (e *NoMatchError) Unwrap() error { return pullkit.ErrNoMatch }

// Describe returns how an error names m: its String when it has one.
func Describe(m Matcher) string {
	if s, ok := m.(fmt.Stringer); ok {
		return s.String()
	}
	return "chosen by the caller's matcher"
}

// Default returns the platform images are chosen for when the caller names none:
// linux on the architecture this program runs on (runtime.GOARCH), with the variant an
// engine assumes for it (arm: v7, arm64: v8, amd64: none, which counts as v1).
func Default() Platform {
	return Normalize(Platform{OS: "linux", Architecture: runtime.GOARCH})
}

// Parse parses "os/arch[/variant][:os.version]", for example "linux/arm64",
// "linux/arm/v6" or "windows/amd64:10.0.20348.1249", and returns the platform normalised
// by Normalize. The os and the architecture are both required: a bare "arm64" is
// an error, and so is a part longer than 64 bytes. Surrounding spaces are ignored. Every
// error wraps pullkit.ErrInvalid.
func Parse(s string) (Platform, error) {
	in := s
	s = strings.TrimSpace(s)
	bad := func(reason string) (Platform, error) {
		return Platform{}, &pullkit.InvalidError{What: "platform " + strconv.Quote(in), Reason: reason + " (want os/arch[/variant][:os.version])"}
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
		if len(version) > maxToken {
			return bad(fmt.Sprintf("os.version is longer than %d bytes", maxToken))
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
		if len(part) > maxToken {
			return bad(fmt.Sprintf("%s is longer than %d bytes", names[i], maxToken))
		}
		if !validToken(part) {
			return bad(fmt.Sprintf("%s %q has characters other than letters, digits, '.', '_' and '-'", names[i], part))
		}
	}
	p.OS, p.Architecture = parts[0], parts[1]
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return Normalize(p), nil
}

// maxToken bounds each part Parse accepts, so that String, which shortens longer parts
// for messages, gives back a string that parses to the same platform.
const maxToken = 64

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

// Normalize returns p with the names engines use, so that equal platforms compare
// equal. The os, architecture and variant are lower-cased; the architecture aliases
// x86_64 and x86-64 become amd64, aarch64 becomes arm64, i386 and i686 become 386, armhf
// becomes arm/v7 and armel arm/v6 (replacing any variant given with them). For arm, arm64
// and amd64 a bare number variant gains its "v" ("7" is "v7"); arm without a variant is
// arm/v7, arm64 without a variant is arm64/v8, and amd64/v1 is plain amd64 (an amd64
// entry without a variant is v1). Operating systems are not renamed ("darwin" and "macos"
// stay as they are). OSVersion and OSFeatures are kept unchanged.
func Normalize(p Platform) Platform {
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

// satisfies reports whether have runs where want is asked for; both are normalised.
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
