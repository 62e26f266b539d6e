package policy

import (
	"errors"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit/internal/text"
)

// dockerRef is a docker reference as policies compare them: the repository with Docker
// Hub normalised to "docker.io/…" (library/ implied), and a tag or a digest or neither.
type dockerRef struct {
	repo   string // registry/repository
	tag    string
	digest string
}

func (r dockerRef) nameOnly() bool { return r.tag == "" && r.digest == "" }

// String is repo, repo:tag or repo@digest.
func (r dockerRef) String() string {
	switch {
	case r.digest != "":
		return r.repo + "@" + r.digest
	case r.tag != "":
		return r.repo + ":" + r.tag
	}
	return r.repo
}

// parseRef reads s as containers/image reads a docker reference: "busybox" is
// docker.io/library/busybox, and no default tag is added.
func parseRef(s string) (dockerRef, error) {
	if s == "" {
		return dockerRef{}, errors.New("empty reference")
	}
	if len(s) > 4096 || strings.ContainsAny(s, " \t\r\n") {
		return dockerRef{}, errors.New("not a reference: " + text.Clean(s, 200))
	}
	if strings.Contains(s, "@") {
		d, err := name.NewDigest(s)
		if err != nil {
			return dockerRef{}, err
		}
		// A reference with both tag and digest: the digest decides.
		return dockerRef{repo: normRepo(d.Context()), digest: d.DigestStr()}, nil
	}
	last := s[strings.LastIndex(s, "/")+1:]
	if strings.Contains(last, ":") {
		t, err := name.NewTag(s)
		if err != nil {
			return dockerRef{}, err
		}
		return dockerRef{repo: normRepo(t.Context()), tag: t.TagStr()}, nil
	}
	r, err := name.NewRepository(s)
	if err != nil {
		return dockerRef{}, err
	}
	return dockerRef{repo: normRepo(r)}, nil
}

func normRepo(r name.Repository) string {
	reg := r.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.RepositoryStr()
}

// scopes lists the docker transport scopes that apply to ref, most specific first: the
// reference itself, the repository, each parent namespace, the registry, then the
// "*.domain" wildcards of the registry's host name.
func scopes(ref dockerRef) []string {
	var out []string
	if !ref.nameOnly() {
		out = append(out, ref.String())
	}
	for p := ref.repo; ; {
		out = append(out, p)
		i := strings.LastIndex(p, "/")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	host := ref.repo
	if i := strings.Index(host, "/"); i >= 0 {
		host = host[:i]
	}
	if h, _, ok := strings.Cut(host, ":"); ok {
		host = h
	}
	parts := strings.Split(host, ".")
	for i := 0; i < len(parts); i++ {
		if i == 0 && len(parts) == 1 {
			break
		}
		if i == 0 {
			out = append(out, "*."+host)
			continue
		}
		out = append(out, "*."+strings.Join(parts[i:], "."))
	}
	return out
}

// matches reports whether a signature claiming identity satisfies m for the reference
// pulled (intended), and why not.
func (m *IdentityMatch) matches(intended, identity dockerRef) bool {
	t := MatchRepoDigestOrExact
	if m != nil {
		t = m.Type
	}
	switch t {
	case MatchExact:
		return !intended.nameOnly() && !identity.nameOnly() && intended.String() == identity.String()
	case MatchRepoDigestOrExact:
		return repoDigestOrExact(intended, identity)
	case MatchRepository:
		return intended.repo == identity.repo
	case ExactReference:
		want, err := parseRef(m.DockerReference)
		return err == nil && !want.nameOnly() && !identity.nameOnly() && want.String() == identity.String()
	case ExactRepository:
		want, err := parseRef(m.DockerRepository)
		return err == nil && want.repo == identity.repo
	case RemapIdentity:
		prefix, signed := normPrefix(m.Prefix), normPrefix(m.SignedPrefix)
		if intended.repo == prefix || strings.HasPrefix(intended.repo, prefix+"/") {
			intended.repo = signed + intended.repo[len(prefix):]
		}
		return repoDigestOrExact(intended, identity)
	}
	return false
}

func repoDigestOrExact(intended, identity dockerRef) bool {
	if identity.nameOnly() {
		return false
	}
	switch {
	case intended.tag != "":
		return identity.String() == intended.String()
	case intended.digest != "":
		// The digest itself is checked against the signature's separately.
		return identity.repo == intended.repo
	}
	return false
}

// normPrefix normalises a remapIdentity prefix as a repository name is (Docker Hub's
// "docker.io", "library/" for a bare name); a host alone stays as it is.
func normPrefix(p string) string {
	if !strings.Contains(p, "/") {
		if p == "index.docker.io" {
			return "docker.io"
		}
		return p
	}
	if r, err := parseRef(p); err == nil {
		return r.repo
	}
	return p
}

// String names the match for messages.
func (m *IdentityMatch) String() string {
	if m == nil {
		return MatchRepoDigestOrExact + " (the default)"
	}
	switch m.Type {
	case ExactReference:
		return "exactReference " + text.Clean(m.DockerReference, 300)
	case ExactRepository:
		return "exactRepository " + text.Clean(m.DockerRepository, 300)
	case RemapIdentity:
		return "remapIdentity " + text.Clean(m.Prefix, 200) + " -> " + text.Clean(m.SignedPrefix, 200)
	}
	return m.Type
}
