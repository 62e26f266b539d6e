package puller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/config/hosts"
	"github.com/pullkit/pullkit/config/registries"
	"github.com/pullkit/pullkit/internal/text"
)

// Where a reference is fetched from. One model for every source of configuration: a
// call's endpoints are built, in order, from
//   - registries.conf (WithRegistriesConf): short names through [aliases] and
//     unqualified-search-registries; the [[registry]] table with the longest prefix:
//     blocked, its mirrors as pull-from-mirror allows, then its location;
//   - else the hosts directory (WithHostsDir): the registry's hosts.toml host entries
//     in order, then its server;
//   - else the registry itself;
//   - with WithMirrors' mirrors in front, and without the registry (and a hosts.toml
//     server) under WithMirrorFallback(false).
//
// Each endpoint says what it may do: a tag is resolved only by endpoints with the
// resolve capability (hosts.toml's capabilities; registries.conf's mirrors when
// pull-from-mirror allows tags; WithMirrors' mirrors), and content is fetched by digest
// from every endpoint with pull, mirrors first. TLS settings apply per host (options,
// certs.d files, the server entry of the host's own hosts.toml), or per hosts.toml
// entry; credentials and headers per endpoint.

// MirrorTimeouts bound how long a mirror may take before the next endpoint is asked:
// connecting (hosts.toml's dial_timeout overrides it per host) and each request's
// response headers. A mirror that misses either, or cannot be reached at all, is skipped
// for the rest of the call, so a dead mirror costs about one deadline per call, not one
// per blob.
type MirrorTimeouts struct {
	Connect   time.Duration
	FirstByte time.Duration
	// Remember is how long a mirror found dead is skipped by the client's later calls
	// too (0: only for the call that found it). A skipped mirror is asked again when
	// every endpoint is dead.
	Remember time.Duration
}

// DefaultMirrorTimeouts are one second to connect and one second to the first byte of
// each answer, and a dead mirror skipped for 30 seconds.
func DefaultMirrorTimeouts() MirrorTimeouts {
	return MirrorTimeouts{Connect: time.Second, FirstByte: time.Second, Remember: 30 * time.Second}
}

// WithMirrorTimeouts sets the deadlines of every mirror (default DefaultMirrorTimeouts).
// A pull-through cache that fetches from far away may need a longer FirstByte.
func WithMirrorTimeouts(t MirrorTimeouts) Option {
	return func(c *Client) error {
		if t.Connect <= 0 || t.FirstByte <= 0 || t.Remember < 0 {
			return &pullkit.InvalidError{What: "option WithMirrorTimeouts", Reason: "Connect and FirstByte must be positive, Remember not negative"}
		}
		c.mirrorTimeouts = t
		return nil
	}
}

// WithHostsDir reads containerd's and Docker's hosts directory (package config/hosts):
// DIR/<host[:port]>/hosts.toml, DIR/_default, and certs.d files, for every registry. A
// registry's directory is read once, the first time the client needs it.
func WithHostsDir(dir string) Option {
	return func(c *Client) error {
		if dir == "" {
			return &pullkit.InvalidError{What: "option WithHostsDir", Reason: "empty path"}
		}
		c.hostsDir = dir
		return nil
	}
}

// WithRegistriesConf reads containers-registries.conf(5) version 2 at path and its
// drop-in directory (package config/registries), when the client is made.
func WithRegistriesConf(path string) Option {
	return func(c *Client) error {
		cfg, err := registries.Load(path)
		if err != nil {
			return &pullkit.InvalidError{What: "option WithRegistriesConf", Reason: text.Clean(path, 200), Err: err}
		}
		c.regConf = cfg
		for _, r := range cfg.Registries {
			for _, e := range append([]registries.Endpoint{r.Endpoint}, r.Mirrors...) {
				if e.Insecure && e.Location != "" {
					if reg, err := name.NewRegistry(strings.SplitN(e.Location, "/", 2)[0]); err == nil {
						c.markInsecure(reg.RegistryStr(), "registries.conf "+r.File+" (prefix "+r.Prefix+")")
					}
				}
			}
		}
		return nil
	}
}

// WithInsecureRegistry applies docker's insecure-registry rule to host (host[:port]):
// TLS without verifying the certificate, and plain HTTP when the registry does not speak
// TLS. DANGEROUS: anyone between the client and the registry can serve anything under
// its name (digests still bind what a digest names, but not what a tag names).
func WithInsecureRegistry(host string) Option {
	return func(c *Client) error {
		h, err := normHost(host, "option WithInsecureRegistry")
		if err != nil {
			return err
		}
		c.markInsecure(h, "WithInsecureRegistry")
		return nil
	}
}

func (c *Client) markInsecure(host, why string) {
	if c.tlsByHost == nil {
		c.tlsByHost = map[string]*hostProfile{}
	}
	p := c.tlsByHost[host]
	if p == nil {
		p = &hostProfile{}
	}
	q := *p
	q.insecure = true
	c.tlsByHost[host] = &q
	if c.insecureWhy == nil {
		c.insecureWhy = map[string]string{}
	}
	c.insecureWhy[host] = why
}

// hostsConfig reads the hosts directory's configuration for registry (in the
// directory's spelling: docker.io for Docker Hub), once per client.
func (c *Client) hostsConfig(registry string) (*hosts.Config, error) {
	c.mu.Lock()
	e, ok := c.hostsCache[registry]
	c.mu.Unlock()
	if ok {
		return e.cfg, e.err
	}
	cfg, err := hosts.Load(c.hostsDir, registry)
	if err != nil {
		err = &pullkit.InvalidError{What: "hosts directory", Reason: text.Clean(c.hostsDir, 200), Err: err}
	}
	c.mu.Lock()
	c.hostsCache[registry] = hostsEntry{cfg, err}
	c.mu.Unlock()
	return cfg, err
}

type hostsEntry struct {
	cfg *hosts.Config
	err error
}

// dirName is a registry host as hosts directories and registries.conf spell it.
func dirName(host string) string {
	if host == name.DefaultRegistry {
		return "docker.io"
	}
	return host
}

// hostsDirProfile is the TLS a hosts directory gives host whatever endpoint leads
// there: its own directory's server entry, when that server is host itself (or not
// named), or its certificate files. The _default directory gives none this way.
func (c *Client) hostsDirProfile(host string) *hostProfile {
	if c.hostsDir == "" {
		return nil
	}
	cfg, err := c.hostsConfig(dirName(host))
	if err != nil || cfg == nil || strings.HasSuffix(cfg.Dir, "/"+hosts.Default) {
		return nil
	}
	srv := cfg.Hosts[len(cfg.Hosts)-1]
	if srv.Host != "" && !strings.EqualFold(srv.Host, host) && !strings.EqualFold(srv.Host, dirName(host)) {
		return nil
	}
	p, err := c.profileFromHost(srv)
	if err != nil {
		return nil
	}
	return p
}

// profileFromHost builds the TLS profile of a hosts.toml entry (nil when it sets none).
func (c *Client) profileFromHost(h hosts.Host) (*hostProfile, error) {
	p := &hostProfile{}
	for _, f := range h.CA {
		b, err := readCA(f)
		if err != nil {
			return nil, err
		}
		p.roots = append(p.roots, b)
		p.caFiles = append(p.caFiles, f)
	}
	for _, pair := range h.Client {
		cert, err := readKeyPair(pair[0], pair[1])
		if err != nil {
			return nil, err
		}
		p.certs = append(p.certs, cert)
		p.certFiles = append(p.certFiles, pair[0])
	}
	if (h.SkipVerify != nil && *h.SkipVerify) || h.Scheme == "http" {
		p.insecure = true
	}
	if p.empty() {
		return nil, nil
	}
	return p, nil
}

// candidates are the references ref may mean: itself, or for a short name under
// registries.conf, its alias or each unqualified-search registry in order. why says
// what chose each.
func (c *Client) candidates(ref string, r name.Reference) ([]name.Reference, []string, error) {
	if c.regConf == nil || !registries.IsShortName(ref) {
		return []name.Reference{r}, []string{""}, nil
	}
	base, suffix := splitIdent(ref)
	if a, ok := c.regConf.Aliases[base]; ok {
		ar, err := name.ParseReference(a + suffix)
		if err != nil {
			return nil, nil, &pullkit.InvalidError{What: "short-name alias", Reason: text.Clean(a+suffix, 200), Err: err}
		}
		return []name.Reference{ar}, []string{fmt.Sprintf("alias %q in %s", base, c.regConf.AliasFiles[base])}, nil
	}
	if len(c.regConf.UnqualifiedSearch) == 0 {
		return []name.Reference{r}, []string{""}, nil
	}
	if c.regConf.ShortNameMode == "enforcing" && len(c.regConf.UnqualifiedSearch) > 1 {
		// Enforcing asks a person to choose; a library has no one to ask.
		return nil, nil, &pullkit.InvalidError{What: "reference", Reason: "short name " + text.Clean(ref, 200) + " is ambiguous: short-name-mode is enforcing and several unqualified-search-registries are set; use a full name or an alias"}
	}
	var out []name.Reference
	var why []string
	for _, s := range c.regConf.UnqualifiedSearch {
		sr, err := name.ParseReference(s + "/" + ref)
		if err != nil {
			continue
		}
		out = append(out, sr)
		why = append(why, fmt.Sprintf("unqualified-search-registries %q in %s", s, c.regConf.SearchFile))
	}
	if len(out) == 0 {
		return nil, nil, &pullkit.InvalidError{What: "reference", Reason: "short name " + text.Clean(ref, 200) + " fits no unqualified-search registry"}
	}
	return out, why, nil
}

// splitIdent splits a reference into its name and its ":tag" or "@digest" suffix.
func splitIdent(ref string) (string, string) {
	if i := strings.Index(ref, "@"); i >= 0 {
		return ref[:i], ref[i:]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i:]
	}
	return ref, ""
}

// endpoints lists where ref (parsed as r) is fetched from for one call, in order.
func (c *Client) endpoints(ref string, r name.Reference, o *pullOptions) ([]*endpoint, error) {
	cands, whys, err := c.candidates(ref, r)
	if err != nil {
		return nil, err
	}
	_, byDigest := r.(name.Digest)
	var out []*endpoint
	for i, cand := range cands {
		eps, err := c.endpointsOf(cand, byDigest, o)
		if err != nil {
			return nil, err
		}
		for _, ep := range eps {
			if whys[i] != "" {
				ep.source = whys[i] + "; " + ep.source
			}
		}
		out = append(out, eps...)
	}
	if !byDigest {
		can := false
		for _, ep := range out {
			can = can || ep.resolve
		}
		if !can {
			return nil, fmt.Errorf("%w: no endpoint configured for %s may resolve a tag (capabilities); pull it by digest", pullkit.ErrDenied, text.Clean(ref, 200))
		}
	}
	for i, ep := range out {
		ep.oneShot = i < len(out)-1
	}
	return out, nil
}

// endpointsOf lists the endpoints of one (qualified) reference.
func (c *Client) endpointsOf(r name.Reference, byDigest bool, o *pullOptions) ([]*endpoint, error) {
	var creds CredentialsFunc
	if o != nil {
		creds = o.creds
	}
	repo := r.Context()
	mk := func(host, repoPath string, mirror bool, source string) *endpoint {
		ep := &endpoint{c: c, host: host, path: "/v2", repo: repoPath, logical: r, mirror: mirror, resolve: true, pull: true, source: source, creds: creds}
		if mirror {
			ep.connect, ep.firstByte = c.mirrorTimeouts.Connect, c.mirrorTimeouts.FirstByte
			if c.deadRecently(host) {
				ep.dead.Store(true)
			}
		}
		return ep
	}
	var out []*endpoint
	for _, m := range c.mirrors[repo.RegistryStr()] {
		out = append(out, mk(m, repo.RepositoryStr(), true, "WithMirrors("+dirName(repo.RegistryStr())+")"))
	}
	origin := len(out)
	switch {
	case c.regConf != nil && c.regConf.Find(fullName(r)) != nil:
		full := fullName(r)
		reg := c.regConf.Find(full)
		entry := fmt.Sprintf("registries.conf %s [[registry]] prefix %q", reg.File, reg.Prefix)
		if reg.Blocked {
			return nil, fmt.Errorf("%w: %s is blocked by %s", pullkit.ErrDenied, text.Clean(full, 200), entry)
		}
		for _, src := range reg.Sources(full, byDigest) {
			sr, err := name.ParseReference(src.Ref)
			if err != nil {
				return nil, &pullkit.InvalidError{What: "registries.conf", Reason: entry + " rewrites to " + text.Clean(src.Ref, 200), Err: err}
			}
			why := entry
			if src.Mirror {
				why += fmt.Sprintf(", mirror %q", src.Endpoint.Location)
				if src.Endpoint.PullFromMirror != "" {
					why += " (pull-from-mirror " + src.Endpoint.PullFromMirror + ")"
				}
			} else if src.Endpoint.Location != "" && src.Endpoint.Location != reg.Prefix {
				why += fmt.Sprintf(", location %q", src.Endpoint.Location)
			}
			out = append(out, mk(sr.Context().RegistryStr(), sr.Context().RepositoryStr(), src.Mirror, why))
		}
	case c.hostsDir != "":
		cfg, err := c.hostsConfig(dirName(repo.RegistryStr()))
		if err != nil {
			return nil, err
		}
		if cfg == nil {
			out = append(out, mk(repo.RegistryStr(), repo.RepositoryStr(), false, "the reference"))
			break
		}
		where := cfg.File
		if where == "" {
			where = cfg.Dir
		}
		for _, h := range cfg.Hosts {
			host := h.Host
			if host == "" {
				host = repo.RegistryStr()
			}
			if reg, err := name.NewRegistry(host); err == nil {
				host = reg.RegistryStr()
			}
			mirror := !h.Server
			ep := mk(host, repo.RepositoryStr(), mirror, where+" "+h.Entry)
			ep.path = h.Path
			ep.resolve = h.Capabilities&hosts.Resolve != 0
			ep.pull = h.Capabilities&hosts.Pull != 0
			ep.header = h.Header
			if h.DialTimeout > 0 {
				ep.connect = h.DialTimeout
			}
			if mirror && !strings.EqualFold(host, repo.RegistryStr()) {
				ep.ns = dirName(repo.RegistryStr())
			}
			p, err := c.entryProfile(where+" "+h.Entry, host, h)
			if err != nil {
				return nil, &pullkit.InvalidError{What: "hosts directory", Reason: where + " " + h.Entry, Err: err}
			}
			ep.profile = p
			if h.Scheme == "http" || (p != nil && p.insecure) {
				c.mu.Lock()
				c.httpHosts[host] = true
				c.mu.Unlock()
			}
			if !ep.pull && !ep.resolve {
				continue
			}
			out = append(out, ep)
		}
	default:
		out = append(out, mk(repo.RegistryStr(), repo.RepositoryStr(), false, "the reference"))
	}
	if c.noFallback && origin > 0 {
		out = out[:origin]
	}
	if c.noFallback && origin == 0 {
		// Without WithMirrors, a configuration's own mirrors stand alone too.
		var mirrors []*endpoint
		for _, ep := range out {
			if ep.mirror {
				mirrors = append(mirrors, ep)
			}
		}
		if len(mirrors) > 0 {
			out = mirrors
		}
	}
	return out, nil
}

// entryProfile is the profile of a hosts.toml entry for host: the entry's TLS over what
// options give every host and this one; nil when the entry sets no TLS. Built once per
// entry, so that its connections are shared by every call.
func (c *Client) entryProfile(key, host string, h hosts.Host) (*hostProfile, error) {
	c.mu.Lock()
	e, ok := c.entryProfiles[key]
	c.mu.Unlock()
	if ok {
		return e.p, e.err
	}
	p, err := c.profileFromHost(h)
	if err == nil && p != nil {
		p = c.profileBase(host).merge(p)
	}
	c.mu.Lock()
	if old, ok := c.entryProfiles[key]; ok {
		p, err = old.p, old.err
	} else {
		c.entryProfiles[key] = profileEntry{p, err}
	}
	c.mu.Unlock()
	return p, err
}

type profileEntry struct {
	p   *hostProfile
	err error
}

// profileBase is what options give host: every host's settings and host's own.
func (c *Client) profileBase(host string) *hostProfile {
	p := c.allHosts
	if q := c.tlsByHost[host]; q != nil {
		p = p.merge(q)
	}
	return p
}

// noteDead remembers that mirror host was found dead (MirrorTimeouts.Remember).
func (c *Client) noteDead(host string) {
	if c.mirrorTimeouts.Remember <= 0 {
		return
	}
	c.mu.Lock()
	if c.deadMirrors == nil {
		c.deadMirrors = map[string]time.Time{}
	}
	c.deadMirrors[host] = c.now().Add(c.mirrorTimeouts.Remember)
	c.mu.Unlock()
}

// deadRecently reports whether mirror host was found dead within
// MirrorTimeouts.Remember.
func (c *Client) deadRecently(host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.deadMirrors[host]
	if ok && !c.now().Before(until) {
		delete(c.deadMirrors, host)
		return false
	}
	return ok
}

// alive is eps without the endpoints found dead in this call, or eps when all are.
func alive(eps []*endpoint) []*endpoint {
	var out []*endpoint
	for _, ep := range eps {
		if !ep.dead.Load() {
			out = append(out, ep)
		}
	}
	if len(out) == 0 {
		return eps
	}
	return out
}

// headerNames lists h's names, for Plan.
func headerNames(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	return out
}

// askable are the endpoints to ask for what r names, in order: for a tag those that may
// resolve it, for a digest those that may pull; live ones (this call) first.
func askable(eps []*endpoint, r name.Reference) []*endpoint {
	var out []*endpoint
	_, byDigest := r.(name.Digest)
	for _, ep := range eps {
		if (byDigest && ep.pull) || (!byDigest && ep.resolve) {
			out = append(out, ep)
		}
	}
	return out
}

// contentFrom are the endpoints content is fetched from by digest once served has
// served what r names: every endpoint that may pull, in the order configured (mirrors
// first, so a pull-only mirror serves the blobs of a tag the registry resolved), except
// those asked for r before served, which failed it.
func contentFrom(eps []*endpoint, served *endpoint, r name.Reference) []*endpoint {
	failed := map[*endpoint]bool{}
	for _, ep := range askable(eps, r) {
		if ep == served {
			break
		}
		failed[ep] = true
	}
	var out []*endpoint
	for _, ep := range eps {
		if ep == served || (ep.pull && !failed[ep] && ep.logical.String() == served.logical.String()) {
			out = append(out, ep)
		}
	}
	return out
}

// nextEndpoint reports whether a failure on one endpoint is worth asking the next: it
// lacks the thing, cannot be reached, or kept serving bytes that do not verify.
func nextEndpoint(ctx context.Context, err error) bool {
	return ctx.Err() == nil && (errors.Is(err, pullkit.ErrNotFound) || errors.Is(err, pullkit.ErrUnreachable) ||
		errors.Is(err, pullkit.ErrDigestMismatch) || errors.Is(err, pullkit.ErrSizeMismatch) || errors.Is(err, pullkit.ErrUnauthorized))
}
