// Package registries reads containers-registries.conf(5), version 2, and its drop-in
// directory (containers-registries.conf.d(5)): the file podman, skopeo, buildah and
// CRI-O read.
//
// A reference is matched against the `[[registry]]` tables by `prefix` (host[:port],
// host[:port]/namespace…, …/repository, or a wildcard `*.example.com` matching any
// number of subdomains); the longest match wins. Its `location` rewrites the prefix
// (the reference keeps its name; only where it is fetched from changes); `insecure`
// allows unverified TLS and plain HTTP; `blocked` refuses it; `[[registry.mirror]]`
// tables are asked first, in order, each with its own `location`, `insecure` and
// `pull-from-mirror` (all, digest-only, tag-only), unless `mirror-by-digest-only` keeps
// every mirror to digests. `unqualified-search-registries` and `[aliases]` (with
// `short-name-mode`) say what a short name means.
//
// Drop-ins: the files ending in .conf of PATH.d (e.g. registries.conf.d beside
// registries.conf), in lexical order, each overriding what it sets: tables with the same
// prefix are replaced, others added; `unqualified-search-registries` replaced when set;
// aliases merged (an empty value removes one).
//
// The version 1 format ([registries.search], [registries.insecure],
// [registries.block]) is read too, in the main file only.
//
// The package yields a neutral model (Config, Registry, Endpoint); puller turns it into
// endpoints.
package registries

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Pull-from-mirror values.
const (
	MirrorAll        = "all"
	MirrorDigestOnly = "digest-only"
	MirrorTagOnly    = "tag-only"
)

// Endpoint is a location to fetch from.
type Endpoint struct {
	// Location is host[:port][/namespace…]; "" for a wildcard table, which rewrites
	// nothing.
	Location string `toml:"location"`
	// Insecure allows TLS without verification and plain HTTP.
	Insecure bool `toml:"insecure"`
	// PullFromMirror is for mirrors: MirrorAll (or ""), MirrorDigestOnly, MirrorTagOnly.
	PullFromMirror string `toml:"pull-from-mirror"`
}

// Registry is one `[[registry]]` table.
type Registry struct {
	Prefix string `toml:"prefix"`
	Endpoint
	Mirrors            []Endpoint `toml:"mirror"`
	Blocked            bool       `toml:"blocked"`
	MirrorByDigestOnly bool       `toml:"mirror-by-digest-only"`
	// File is the file the table came from.
	File string `toml:"-"`
}

// Config is registries.conf with its drop-ins applied.
type Config struct {
	// Registries are the tables, by prefix.
	Registries []Registry
	// UnqualifiedSearch are the registries a short name is looked for in, in order;
	// SearchFile is the file that set them.
	UnqualifiedSearch []string
	SearchFile        string
	// Aliases maps a short name to a full name (no tag or digest); AliasFiles says
	// which file set each.
	Aliases    map[string]string
	AliasFiles map[string]string
	// ShortNameMode is enforcing, permissive or disabled ("" when not set).
	ShortNameMode string
	// Files are the files read, in order.
	Files []string
}

type fileV2 struct {
	UnqualifiedSearch *[]string         `toml:"unqualified-search-registries"`
	Registries        []Registry        `toml:"registry"`
	Aliases           map[string]string `toml:"aliases"`
	ShortNameMode     string            `toml:"short-name-mode"`
	// Version 1.
	V1 struct {
		Search   v1List `toml:"search"`
		Insecure v1List `toml:"insecure"`
		Block    v1List `toml:"block"`
	} `toml:"registries"`
}

type v1List struct {
	Registries []string `toml:"registries"`
}

// maxFile bounds one file.
const maxFile = 1 << 20

// Load reads the file at path and the drop-ins of path+".d" (a missing drop-in directory
// is no error; a missing main file is).
func Load(path string) (*Config, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	c := &Config{Aliases: map[string]string{}, AliasFiles: map[string]string{}}
	if err := c.add(path, b, false); err != nil {
		return nil, err
	}
	dir := path + ".d"
	if strings.HasSuffix(path, ".conf") {
		dir = strings.TrimSuffix(path, ".conf") + ".conf.d"
	}
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		b, err := readFile(p)
		if err != nil {
			return nil, err
		}
		if err := c.add(p, b, true); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("%s: %d bytes, more than %d", path, st.Size(), maxFile)
	}
	return os.ReadFile(path)
}

// Parse reads one file's bytes as a whole configuration (no drop-ins); path names it.
func Parse(path string, data []byte) (*Config, error) {
	c := &Config{Aliases: map[string]string{}, AliasFiles: map[string]string{}}
	if err := c.add(path, data, false); err != nil {
		return nil, err
	}
	return c, nil
}

var hostRE = regexp.MustCompile(`^(localhost|[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(:[0-9]+)?$`)

// add merges one file into c.
func (c *Config) add(path string, data []byte, dropIn bool) error {
	var f fileV2
	if _, err := toml.Decode(string(data), &f); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...))
	}
	v1 := len(f.V1.Search.Registries)+len(f.V1.Insecure.Registries)+len(f.V1.Block.Registries) > 0
	if v1 {
		if dropIn {
			return bad("drop-in files must use the version 2 format")
		}
		if f.UnqualifiedSearch != nil || len(f.Registries) > 0 || len(f.Aliases) > 0 {
			return bad("mixes the version 1 and version 2 formats")
		}
		byLoc := map[string]*Registry{}
		var order []string
		get := func(loc string) *Registry {
			if r := byLoc[loc]; r != nil {
				return r
			}
			byLoc[loc] = &Registry{Prefix: loc, Endpoint: Endpoint{Location: loc}}
			order = append(order, loc)
			return byLoc[loc]
		}
		for _, l := range f.V1.Insecure.Registries {
			get(strings.TrimRight(l, "/")).Insecure = true
		}
		for _, l := range f.V1.Block.Registries {
			get(strings.TrimRight(l, "/")).Blocked = true
		}
		for _, loc := range order {
			f.Registries = append(f.Registries, *byLoc[loc])
		}
		s := f.V1.Search.Registries
		f.UnqualifiedSearch = &s
	}
	mine := map[string]Registry{}
	for _, r := range f.Registries {
		var err error
		if r.Location, err = location(r.Location); err != nil {
			return bad("%v", err)
		}
		if r.Prefix == "" {
			if r.Location == "" {
				return bad("a [[registry]] table has neither prefix nor location")
			}
			r.Prefix = r.Location
		} else {
			if r.Prefix, err = location(r.Prefix); err != nil {
				return bad("%v", err)
			}
			if strings.HasPrefix(r.Prefix, "*.") {
				if strings.ContainsAny(r.Prefix, "/@:") || strings.Contains(r.Prefix[2:], "*") {
					return bad("wildcard prefix %q: want *.example.com, without port or path", r.Prefix)
				}
			} else if strings.Contains(r.Prefix, "*") {
				return bad("prefix %q: a wildcard only as *.example.com", r.Prefix)
			} else if r.Location == "" {
				return bad("prefix %q has no location (only a wildcard prefix may leave it out)", r.Prefix)
			}
		}
		if r.PullFromMirror != "" {
			return bad("pull-from-mirror is for mirrors, not registry %q", r.Prefix)
		}
		for i := range r.Mirrors {
			m := &r.Mirrors[i]
			if m.Location, err = location(m.Location); err != nil {
				return bad("%v", err)
			}
			if m.Location == "" {
				return bad("a mirror of %q has no location", r.Prefix)
			}
			switch m.PullFromMirror {
			case "", MirrorAll, MirrorDigestOnly, MirrorTagOnly:
			default:
				return bad("mirror %q: pull-from-mirror %q: want all, digest-only or tag-only", m.Location, m.PullFromMirror)
			}
			if r.MirrorByDigestOnly && m.PullFromMirror != "" {
				return bad("registry %q sets mirror-by-digest-only and its mirror %q pull-from-mirror: one or the other", r.Prefix, m.Location)
			}
		}
		if _, dup := mine[r.Prefix]; dup {
			return bad("prefix %q is given twice", r.Prefix)
		}
		r.File = path
		mine[r.Prefix] = r
	}
	// Merge: same prefix replaced, others added; kept sorted by prefix.
	all := map[string]Registry{}
	for _, r := range c.Registries {
		all[r.Prefix] = r
	}
	for p, r := range mine {
		all[p] = r
	}
	c.Registries = c.Registries[:0]
	for _, r := range all {
		c.Registries = append(c.Registries, r)
	}
	sort.Slice(c.Registries, func(i, j int) bool { return c.Registries[i].Prefix < c.Registries[j].Prefix })
	if f.UnqualifiedSearch != nil {
		c.UnqualifiedSearch = nil
		for _, s := range *f.UnqualifiedSearch {
			s = strings.TrimRight(s, "/")
			if !hostRE.MatchString(s) {
				return bad("unqualified-search-registries: %q is not host[:port]", s)
			}
			c.UnqualifiedSearch = append(c.UnqualifiedSearch, s)
		}
		c.SearchFile = path
	}
	for k, v := range f.Aliases {
		if err := checkAlias(k, v); err != nil {
			return bad("alias %q: %v", k, err)
		}
		if v == "" {
			delete(c.Aliases, k)
			delete(c.AliasFiles, k)
			continue
		}
		c.Aliases[k] = v
		c.AliasFiles[k] = path
	}
	switch f.ShortNameMode {
	case "":
	case "enforcing", "permissive", "disabled":
		c.ShortNameMode = f.ShortNameMode
	default:
		return bad("short-name-mode %q: want enforcing, permissive or disabled", f.ShortNameMode)
	}
	c.Files = append(c.Files, path)
	return nil
}

// location checks a prefix or location: no scheme, no trailing slash.
func location(s string) (string, error) {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return "", fmt.Errorf("location %q: no URL scheme allowed", s)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return "", fmt.Errorf("location %q: spaces", s)
	}
	return s, nil
}

// checkAlias checks a short-name alias: the name short (no registry), the value a full
// name with a registry, neither with a tag or digest.
func checkAlias(name, value string) error {
	if name == "" || !IsShortName(name) {
		return fmt.Errorf("the name must be a short name (no registry)")
	}
	if strings.ContainsAny(name, "@") || strings.Contains(lastPart(name), ":") {
		return fmt.Errorf("the name must have no tag or digest")
	}
	if value == "" {
		return nil
	}
	if IsShortName(value) {
		return fmt.Errorf("value %q must name a registry", value)
	}
	if strings.ContainsAny(value, "@") || strings.Contains(lastPart(value), ":") {
		return fmt.Errorf("value %q must have no tag or digest", value)
	}
	return nil
}

func lastPart(s string) string {
	if i := strings.LastIndex(s, "/"); i >= 0 {
		return s[i+1:]
	}
	return s
}

// IsShortName reports whether ref names no registry: its first path component has no
// "." or ":" and is not "localhost" (as docker and containers read names).
func IsShortName(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	if !ok {
		return true
	}
	return !strings.ContainsAny(first, ".:") && first != "localhost"
}

// Match returns the length of the part of ref (a full name: host[:port]/path[:tag|@digest])
// that prefix matches, or -1: the whole prefix followed by the end, ":", "/" or "@"; a
// wildcard *.example.com matches any host ending in .example.com.
func Match(ref, prefix string) int {
	if strings.HasPrefix(prefix, "*.") {
		host := ref
		if i := strings.IndexAny(ref, "/"); i >= 0 {
			host = ref[:i]
		}
		h, _, _ := strings.Cut(host, ":")
		if len(h) > len(prefix)-1 && strings.HasSuffix(h, prefix[1:]) {
			return len(h)
		}
		return -1
	}
	if !strings.HasPrefix(ref, prefix) {
		return -1
	}
	if len(ref) == len(prefix) {
		return len(prefix)
	}
	switch ref[len(prefix)] {
	case ':', '/', '@':
		return len(prefix)
	}
	return -1
}

// Find returns the table whose prefix matches ref (a full name) longest, or nil.
func (c *Config) Find(ref string) *Registry {
	var best *Registry
	bestLen := -1
	for i := range c.Registries {
		r := &c.Registries[i]
		if Match(ref, r.Prefix) < 0 {
			continue
		}
		// Longest prefix; a wildcard counts by its own length, as containers/image does.
		if l := len(r.Prefix); l > bestLen {
			best, bestLen = r, l
		}
	}
	return best
}

// Source is one place a reference is fetched from: a mirror or the registry's location.
type Source struct {
	// Ref is the rewritten full name to fetch.
	Ref string
	// Endpoint is the table or mirror it came from.
	Endpoint Endpoint
	// Mirror says it is one of the table's mirrors.
	Mirror bool
}

// Sources lists where ref (a full name matched by r) is fetched from, in order: the
// mirrors that pull-from-mirror and mirror-by-digest-only allow for it (digest says ref
// is by digest), then the table's location.
func (r *Registry) Sources(ref string, digest bool) []Source {
	var out []Source
	n := Match(ref, r.Prefix)
	if n < 0 {
		return nil
	}
	rewrite := func(loc string) string {
		if loc == "" {
			return ref
		}
		return loc + ref[n:]
	}
	for _, m := range r.Mirrors {
		if r.MirrorByDigestOnly && !digest {
			continue
		}
		switch m.PullFromMirror {
		case MirrorDigestOnly:
			if !digest {
				continue
			}
		case MirrorTagOnly:
			if digest {
				continue
			}
		}
		out = append(out, Source{Ref: rewrite(m.Location), Endpoint: m, Mirror: true})
	}
	out = append(out, Source{Ref: rewrite(r.Location), Endpoint: r.Endpoint})
	return out
}

// Insecure reports whether host (host[:port]) is named insecure by a table or mirror
// whose location is on it.
func (c *Config) Insecure(host string) bool {
	for _, r := range c.Registries {
		for _, e := range append([]Endpoint{r.Endpoint}, r.Mirrors...) {
			loc := e.Location
			if loc == "" {
				loc = strings.TrimPrefix(r.Prefix, "*")
				if e.Insecure && strings.HasPrefix(loc, ".") && strings.HasSuffix(hostOf(host), loc) {
					return true
				}
				continue
			}
			if e.Insecure && hostOf2(loc) == host {
				return true
			}
		}
	}
	return false
}

func hostOf(hostport string) string {
	h, _, _ := strings.Cut(hostport, ":")
	return h
}

func hostOf2(loc string) string {
	h, _, _ := strings.Cut(loc, "/")
	return h
}
