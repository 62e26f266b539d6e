package puller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/config/auth"
	"github.com/pullkit/pullkit/internal/text"
)

// Credential is what a registry is sent to prove who pulls. Set Username and Password,
// or IdentityToken, or RegistryToken.
type Credential struct {
	Username string
	Password string
	// IdentityToken is an OAuth2 refresh token, exchanged at the registry's token
	// server for access tokens (what docker login keeps as "identitytoken").
	IdentityToken string
	// RegistryToken is a bearer token sent to the registry as it is.
	RegistryToken string
}

// IsZero reports whether c holds nothing (anonymous).
func (c Credential) IsZero() bool {
	return c.Username == "" && c.Password == "" && c.IdentityToken == "" && c.RegistryToken == ""
}

// CredentialsFunc returns the credential for one endpoint: host is the host[:port] the
// requests go to (a mirror's own, not the registry's it stands for) and repository the
// repository's path there. A zero Credential with a nil error means "none from here":
// the next source is asked. An error fails the pull (pullkit.ErrUnauthorized).
type CredentialsFunc func(ctx context.Context, host, repository string) (Credential, error)

// WithCredentials sends cred to registry host (host[:port], e.g. "registry.example:5000"
// or "docker.io") for every repository, without a keychain: plain username and password,
// an identity token or a registry token. Repeated calls for one host: the last wins.
// It is asked after WithCredentialsFunc and a pull's WithPullCredentials, before auth
// files and the keychain.
func WithCredentials(host string, cred Credential) Option {
	return func(c *Client) error {
		h, err := normHost(host, "option WithCredentials")
		if err != nil {
			return err
		}
		if c.static == nil {
			c.static = map[string]Credential{}
		}
		c.static[auth.NormalizeHost(h)] = cred
		return nil
	}
}

// WithCredentialsFunc asks fn for every endpoint's credential, first of the client's
// sources (after a pull's own WithPullCredentials).
func WithCredentialsFunc(fn CredentialsFunc) Option {
	return func(c *Client) error {
		if fn == nil {
			return &pullkit.InvalidError{What: "option WithCredentialsFunc", Reason: "nil function"}
		}
		c.credFunc = fn
		return nil
	}
}

// WithAuthFile reads credentials from a docker config.json or containers-auth.json file
// (auths with repository-scoped keys, credHelpers, credsStore), asked before the
// keychain; repeated calls add files, asked in order. The file is read when the client
// is made. Without it, $REGISTRY_AUTH_FILE is read the same way when it is set.
func WithAuthFile(path string) Option {
	return func(c *Client) error {
		f, err := auth.Load(path)
		if err != nil {
			return &pullkit.InvalidError{What: "option WithAuthFile", Reason: text.Clean(path, 200), Err: err}
		}
		c.authFiles = append(c.authFiles, f)
		c.authFileSet = true
		return nil
	}
}

// WithPullCredentials asks fn, first of every source, for the credentials of this call's
// endpoints: for engines that get credentials per pod or per request (kubelet credential
// providers, image pull secrets). Tokens obtained with them are kept apart from other
// credentials' tokens.
func WithPullCredentials(fn CredentialsFunc) PullOption {
	return func(o *pullOptions) error {
		if fn == nil {
			return &pullkit.InvalidError{What: "option WithPullCredentials", Reason: "nil function"}
		}
		o.creds = fn
		return nil
	}
}

func normHost(host, what string) (string, error) {
	r, err := name.NewRegistry(host)
	if err != nil || host == "" {
		return "", &pullkit.InvalidError{What: what, Reason: "registry " + text.Clean(host, 100), Err: err}
	}
	return r.RegistryStr(), nil
}

// credential is an endpoint's resolved credential and where it came from.
type credential struct {
	cfg    authn.AuthConfig
	source string // for Plan and errors: "WithPullCredentials", "auth file F (key K)", …
	fp     string // fingerprint: tokens are kept per credential
}

func newCredential(cfg authn.AuthConfig, source string) *credential {
	if !hasCredentials(cfg) {
		return nil
	}
	h := sha256.Sum256([]byte(cfg.Username + "\x00" + cfg.Password + "\x00" + cfg.Auth + "\x00" + cfg.IdentityToken + "\x00" + cfg.RegistryToken))
	return &credential{cfg: cfg, source: source, fp: hex.EncodeToString(h[:8])}
}

func fromCredential(c Credential) authn.AuthConfig {
	return authn.AuthConfig{Username: c.Username, Password: c.Password, IdentityToken: c.IdentityToken, RegistryToken: c.RegistryToken}
}

// keychainEntry caches one host's keychain answer for the client's life (a credential
// helper is run once per host).
type keychainEntry struct {
	once sync.Once
	cfg  authn.AuthConfig
	err  error
}

// credentialFor resolves the credential of an endpoint on host for repository, from
// the sources in order: the call's function, the client's function, WithCredentials,
// auth files, the keychain. It returns nil for anonymous.
func (c *Client) credentialFor(ctx context.Context, pull CredentialsFunc, host, repository string) (*credential, error) {
	fail := func(src string, err error) error {
		return fmt.Errorf("%w: credentials for %s from %s: %s", pullkit.ErrUnauthorized, text.Clean(host, 100), src, text.Clean(err.Error(), 200))
	}
	for _, f := range []struct {
		fn  CredentialsFunc
		src string
	}{{pull, "WithPullCredentials"}, {c.credFunc, "WithCredentialsFunc"}} {
		if f.fn == nil {
			continue
		}
		cr, err := f.fn(ctx, host, repository)
		if err != nil {
			return nil, fail(f.src, err)
		}
		if !cr.IsZero() {
			return newCredential(fromCredential(cr), f.src), nil
		}
	}
	if cr, ok := c.static[auth.NormalizeHost(host)]; ok && !cr.IsZero() {
		return newCredential(fromCredential(cr), "WithCredentials("+auth.NormalizeHost(host)+")"), nil
	}
	for _, f := range c.authFiles {
		if e, key, ok := f.Lookup(host, repository); ok && !e.Empty() {
			return newCredential(authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, RegistryToken: e.RegistryToken},
				fmt.Sprintf("auth file %s (key %q)", f.Path, key)), nil
		}
		if h := f.Helper(host); h != "" {
			e, err := auth.RunHelper(h, host)
			if errors.Is(err, auth.ErrNoHelper) {
				continue
			}
			if err != nil {
				return nil, fail("credential helper docker-credential-"+h+" named by "+f.Path, err)
			}
			return newCredential(authn.AuthConfig{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken},
				"credential helper docker-credential-"+h+" (named by "+f.Path+")"), nil
		}
	}
	cfg, err := c.keychainFor(ctx, host)
	if err != nil {
		return nil, fail("the keychain", err)
	}
	return newCredential(cfg, "keychain"), nil
}

// keychainFor asks the keychain for host once per client.
func (c *Client) keychainFor(ctx context.Context, host string) (authn.AuthConfig, error) {
	c.mu.Lock()
	e := c.kc[host]
	if e == nil {
		e = &keychainEntry{}
		c.kc[host] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		if auth.NormalizeHost(host) == "docker.io" {
			host = name.DefaultRegistry // Docker Hub's credentials, whichever of its hosts
		}
		reg, err := name.NewRegistry(host, name.WeakValidation)
		if err != nil {
			e.err = err
			return
		}
		a, err := authn.Resolve(ctx, c.keychain, reg)
		if err != nil {
			e.err = err
			return
		}
		cfg, err := authn.Authorization(ctx, a)
		if err != nil {
			e.err = err
			return
		}
		e.cfg = *cfg
	})
	return e.cfg, e.err
}

// credentialSource says, without running anything, where an endpoint's credentials
// would come from (for Plan).
func (c *Client) credentialSource(host, repository string, pull bool) string {
	var srcs []string
	if pull {
		srcs = append(srcs, "WithPullCredentials")
	}
	if c.credFunc != nil {
		srcs = append(srcs, "WithCredentialsFunc")
	}
	if cr, ok := c.static[auth.NormalizeHost(host)]; ok && !cr.IsZero() {
		return strings.Join(append(srcs, "WithCredentials("+auth.NormalizeHost(host)+")"), ", then ")
	}
	for _, f := range c.authFiles {
		if e, key, ok := f.Lookup(host, repository); ok && !e.Empty() {
			return strings.Join(append(srcs, fmt.Sprintf("auth file %s (key %q)", f.Path, key)), ", then ")
		}
		if h := f.Helper(host); h != "" {
			srcs = append(srcs, "docker-credential-"+h+" (named by "+f.Path+")")
		}
	}
	return strings.Join(append(srcs, "keychain"), ", then ")
}
