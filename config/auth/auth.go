// Package auth reads the credential files users already have: docker's config.json
// and containers-auth.json(5) (the file podman, skopeo, buildah and CRI-O read). Both
// have the same shape: an "auths" object keyed by registry, or by a registry and a
// repository namespace, each entry with "auth" (base64 of user:password) or "username"
// and "password", and "identitytoken"; "credHelpers" naming a credential helper per
// registry, and "credsStore" one for every registry.
//
// Keys are matched as containers/image matches them: a key with a scheme
// ("https://index.docker.io/v1/") is a legacy key and names its host only; a key
// without one may name a repository or a namespace ("quay.io/team" for every
// repository under quay.io/team), and the most specific key that contains the
// repository wins. "index.docker.io" and "registry-1.docker.io" are "docker.io".
//
// The package yields a neutral model (File, Entry); puller turns it into credentials.
package auth

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Entry is one set of credentials.
type Entry struct {
	Username string
	Password string
	// IdentityToken is an OAuth2 refresh token (docker login's identity token).
	IdentityToken string
	// RegistryToken is a bearer token to send as it is.
	RegistryToken string
}

// Empty reports whether e holds nothing.
func (e Entry) Empty() bool {
	return e.Username == "" && e.Password == "" && e.IdentityToken == "" && e.RegistryToken == ""
}

// File is one parsed credentials file.
type File struct {
	// Path is where it was read from.
	Path string
	// Auths are the entries by normalised key (see Normalize).
	Auths map[string]Entry
	// CredHelpers names the helper (docker-credential-NAME) for a registry, by
	// normalised host.
	CredHelpers map[string]string
	// CredsStore is the helper for every registry that has no entry of its own.
	CredsStore string
}

// maxFile bounds a credentials file.
const maxFile = 4 << 20

// Load reads and parses the file at path.
func Load(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxFile {
		return nil, fmt.Errorf("credentials file %s: %d bytes, more than %d", path, st.Size(), maxFile)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b)
}

type rawEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
	RegistryToken string `json:"registrytoken"`
}

// Parse parses a credentials file's bytes; path names it in errors.
func Parse(path string, data []byte) (*File, error) {
	var raw struct {
		Auths       map[string]rawEntry `json:"auths"`
		CredHelpers map[string]string   `json:"credHelpers"`
		CredsStore  string              `json:"credsStore"`
	}
	if len(strings.TrimSpace(string(data))) == 0 {
		return &File{Path: path, Auths: map[string]Entry{}, CredHelpers: map[string]string{}}, nil
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	f := &File{Path: path, Auths: map[string]Entry{}, CredHelpers: map[string]string{}, CredsStore: raw.CredsStore}
	for k, r := range raw.Auths {
		e := Entry{Username: r.Username, Password: r.Password, IdentityToken: r.IdentityToken, RegistryToken: r.RegistryToken}
		if r.Auth != "" {
			dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(r.Auth))
			if err != nil {
				return nil, fmt.Errorf("credentials file %s: entry %q: auth is not base64", path, clean(k))
			}
			user, pass, ok := strings.Cut(string(dec), ":")
			if !ok {
				return nil, fmt.Errorf("credentials file %s: entry %q: auth is not user:password", path, clean(k))
			}
			e.Username, e.Password = user, pass
		}
		nk := Normalize(k)
		if nk == "" {
			continue
		}
		if _, dup := f.Auths[nk]; dup && !strings.Contains(k, "://") {
			// A key without a scheme is the modern spelling: it wins over a legacy one.
			f.Auths[nk] = e
			continue
		} else if dup {
			continue
		}
		f.Auths[nk] = e
	}
	for k, h := range raw.CredHelpers {
		if nk := Normalize(k); nk != "" && h != "" {
			f.CredHelpers[nk] = h
		}
	}
	return f, nil
}

// Normalize turns a key of "auths" or "credHelpers" into the form Lookup matches: no
// scheme, and for a legacy key with a scheme no path either; Docker Hub's hosts as
// "docker.io"; no trailing slash.
func Normalize(key string) string {
	k := strings.TrimSpace(key)
	legacy := false
	for _, p := range []string{"https://", "http://"} {
		if len(k) >= len(p) && strings.EqualFold(k[:len(p)], p) {
			k, legacy = k[len(p):], true
		}
	}
	if legacy {
		k, _, _ = strings.Cut(k, "/")
	}
	k = strings.TrimRight(k, "/")
	host, rest, _ := strings.Cut(k, "/")
	host = NormalizeHost(host)
	if host == "" || strings.Contains(rest, "//") || strings.HasPrefix(rest, "/") {
		return "" // no registry, or an empty path component: nothing can match it
	}
	if rest != "" {
		return host + "/" + rest
	}
	return host
}

// NormalizeHost is host (host[:port]) lower-cased, with Docker Hub's hosts as
// "docker.io".
func NormalizeHost(host string) string {
	h := strings.ToLower(host)
	switch h {
	case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return h
}

// Lookup returns the entry for repository (a path such as "team/app") on host, and the
// key that matched: the most specific key among host/repository, its parent
// namespaces, and host itself.
func (f *File) Lookup(host, repository string) (Entry, string, bool) {
	if f == nil {
		return Entry{}, "", false
	}
	h := NormalizeHost(host)
	path := h + "/" + strings.Trim(repository, "/")
	for {
		if e, ok := f.Auths[path]; ok {
			return e, path, true
		}
		i := strings.LastIndex(path, "/")
		if i < 0 {
			return Entry{}, "", false
		}
		path = path[:i]
	}
}

// Helper returns the credential helper for host: its credHelpers entry, else
// credsStore, else "".
func (f *File) Helper(host string) string {
	if f == nil {
		return ""
	}
	if h := f.CredHelpers[NormalizeHost(host)]; h != "" {
		return h
	}
	return f.CredsStore
}

// DefaultPaths lists where containers tools look for credentials, in order:
// $REGISTRY_AUTH_FILE when set; $XDG_RUNTIME_DIR/containers/auth.json;
// $XDG_CONFIG_HOME/containers/auth.json (~/.config when unset); $DOCKER_CONFIG/config.json
// or ~/.docker/config.json. Files that do not exist are left out.
func DefaultPaths() []string {
	var out []string
	add := func(p string) {
		if p == "" {
			return
		}
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			out = append(out, p)
		}
	}
	add(os.Getenv("REGISTRY_AUTH_FILE"))
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		add(filepath.Join(d, "containers", "auth.json"))
	}
	home, _ := os.UserHomeDir()
	cfg := os.Getenv("XDG_CONFIG_HOME")
	if cfg == "" && home != "" {
		cfg = filepath.Join(home, ".config")
	}
	if cfg != "" {
		add(filepath.Join(cfg, "containers", "auth.json"))
	}
	if d := os.Getenv("DOCKER_CONFIG"); d != "" {
		add(filepath.Join(d, "config.json"))
	} else if home != "" {
		add(filepath.Join(home, ".docker", "config.json"))
	}
	return out
}

// ErrNoHelper is returned by RunHelper when the helper has no credentials for the host.
var ErrNoHelper = errors.New("the credential helper has no credentials for this registry")

func clean(s string) string {
	if len(s) > 100 {
		s = s[:100]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}
