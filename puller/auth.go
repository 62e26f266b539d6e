package puller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"golang.org/x/sync/singleflight"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// authTransport authenticates requests to registries. It does not ping /v2/ first: a
// request goes out with what the client already knows of its registry (no credentials,
// basic credentials, or a cached token for the repository's pull scope), and a 401's
// challenge teaches it the rest: the scheme, and for bearer the realm and service, after
// which the token is fetched and the request sent once more. What it learns is kept for
// the client's life, per registry and, for tokens, per scope (refreshed on expiry or on a
// 401), so a pull costs no round trip for authentication beyond the first.
//
// The credentials of a request come with it (reqInfo.cred, resolved per endpoint from the
// client's sources); tokens are kept per scope and per credential, so that a pull with
// its own credentials never uses a token another credential obtained.
type authTransport struct {
	inner  http.RoundTripper
	tokens http.RoundTripper // for token requests (retried, guarded, watched)
	c      *Client

	mu   sync.Mutex
	regs map[string]*regAuth
}

// regAuth is what the client knows of one registry's authentication.
type regAuth struct {
	host string

	mu       sync.Mutex
	known    bool          // an answer has told how the registry authenticates
	learning chan struct{} // closed when the request finding it out is answered
	scheme   string        // "", "basic" or "bearer"
	realm    string
	service  string
	tokens   map[string]token // by scope and credential (tokenKey)
	group    singleflight.Group
}

// gate lets the first request to a registry whose authentication is not known yet go
// alone: the others wait for its answer, so that a batch started at once learns the
// challenge from one 401 and shares one token instead of each drawing its own. The
// first gets done, to call once its answer has taught what there is to learn (learnt
// true) or failed to (false: the next request finds out); done may be called again.
func (r *regAuth) gate(ctx context.Context) (done func(learnt bool), err error) {
	for {
		r.mu.Lock()
		if r.known {
			r.mu.Unlock()
			return func(bool) {}, nil
		}
		if r.learning == nil {
			ch := make(chan struct{})
			r.learning = ch
			r.mu.Unlock()
			var once sync.Once
			return func(learnt bool) {
				once.Do(func() {
					r.mu.Lock()
					r.known = r.known || learnt
					r.learning = nil
					r.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		ch := r.learning
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

type token struct {
	value   string
	expires time.Time
}

func (a *authTransport) reg(host string) *regAuth {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.regs[host]
	if r == nil {
		r = &regAuth{host: host, tokens: map[string]token{}}
		a.regs[host] = r
	}
	return r
}

func hasCredentials(c authn.AuthConfig) bool {
	return c.Username != "" || c.Password != "" || c.Auth != "" || c.IdentityToken != "" || c.RegistryToken != ""
}

func (a *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ri := infoOf(req.Context())
	if ri.origin == "" || !strings.EqualFold(req.URL.Host, ri.origin) {
		return a.inner.RoundTrip(req) // not a registry request (a redirect, a foreign URL)
	}
	r := a.reg(ri.origin)
	scope := "repository:" + ri.repo + ":pull"
	var cred authn.AuthConfig
	fp := ""
	if ri.cred != nil {
		cred, fp = ri.cred.cfg, ri.cred.fp
	}
	learnt, err := r.gate(req.Context())
	if err != nil {
		return nil, err
	}
	defer learnt(false)
	if ri.dead != nil && ri.dead() {
		// The request that went first found the endpoint dead: the next endpoint is
		// asked instead of waiting for this one's deadline again.
		return nil, fmt.Errorf("%w: %s did not answer an earlier request of this call", pullkit.ErrUnreachable, text.Clean(ri.origin, 100))
	}
	first := req.Clone(req.Context())
	if err := a.authorize(req.Context(), r, first, scope, cred, fp); err != nil {
		return nil, &retriedError{err}
	}
	resp, err := a.inner.RoundTrip(first)
	if err != nil {
		return resp, err
	}
	if resp.StatusCode != http.StatusUnauthorized {
		learnt(true)
		return resp, nil
	}
	// Learn from the challenge, then try once more if that changes what is sent.
	ch, ok := parseChallenge(resp.Header.Values("WWW-Authenticate"))
	if !ok {
		learnt(true)
		return resp, nil
	}
	if ch.scope != "" {
		scope = ch.scope
	}
	sent := first.Header.Get("Authorization")
	r.mu.Lock()
	r.scheme, r.realm, r.service = ch.scheme, ch.realm, ch.service
	if t, ok := r.tokens[tokenKey(scope, fp)]; ok && sent == "Bearer "+t.value {
		delete(r.tokens, tokenKey(scope, fp)) // refused or expired early: fetch a new one
	}
	r.mu.Unlock()
	learnt(true)
	again := req.Clone(req.Context())
	if err := a.authorize(req.Context(), r, again, scope, cred, fp); err != nil {
		resp.Body.Close()
		return nil, &retriedError{err}
	}
	if h := again.Header.Get("Authorization"); h == "" || h == sent {
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	resp.Body.Close()
	return a.inner.RoundTrip(again)
}

// authorize sets req's Authorization from what is known of the registry, fetching a
// token when the registry wants bearer and none is cached for scope.
func (a *authTransport) authorize(ctx context.Context, r *regAuth, req *http.Request, scope string, cred authn.AuthConfig, fp string) error {
	ri := infoOf(ctx)
	r.mu.Lock()
	scheme := r.scheme
	tok, ok := r.tokens[tokenKey(scope, fp)]
	r.mu.Unlock()
	switch scheme {
	case "basic":
		if cred.Username != "" || cred.Password != "" {
			req.SetBasicAuth(cred.Username, cred.Password)
			ri.credSent = true
		} else if cred.Auth != "" {
			req.Header.Set("Authorization", "Basic "+cred.Auth)
			ri.credSent = true
		}
	case "bearer":
		if cred.RegistryToken != "" {
			req.Header.Set("Authorization", "Bearer "+cred.RegistryToken)
			ri.credSent = true
			return nil
		}
		if !ok || time.Until(tok.expires) < 10*time.Second {
			v, err, _ := r.group.Do(tokenKey(scope, fp), func() (any, error) { return a.fetchToken(ctx, r, scope, cred, fp) })
			if err != nil {
				return err
			}
			tok = v.(token)
		}
		req.Header.Set("Authorization", "Bearer "+tok.value)
		if hasCredentials(cred) {
			ri.credSent = true
		}
	}
	return nil
}

// retriedError is the failure of a token request, which went through the retry policy
// itself: the registry request it was for is not tried again for it, so that the
// attempts do not multiply (a stalled token server would take Attempts² times a
// deadline).
type retriedError struct{ err error }

func (e *retriedError) Error() string { return e.err.Error() }
func (e *retriedError) Unwrap() error { return e.err }

// challenge is a WWW-Authenticate challenge the client can answer.
type challenge struct {
	scheme, realm, service, scope string
}

// parseChallenge picks the bearer challenge, else the basic one, from the
// WWW-Authenticate values.
func parseChallenge(values []string) (challenge, bool) {
	var basic *challenge
	for _, v := range values {
		scheme, params, _ := strings.Cut(strings.TrimSpace(v), " ")
		switch strings.ToLower(scheme) {
		case "bearer":
			c := challenge{scheme: "bearer"}
			for k, val := range parseParams(params) {
				switch k {
				case "realm":
					c.realm = val
				case "service":
					c.service = val
				case "scope":
					c.scope = val
				}
			}
			if c.realm != "" {
				return c, true
			}
		case "basic":
			basic = &challenge{scheme: "basic"}
		}
	}
	if basic != nil {
		return *basic, true
	}
	return challenge{}, false
}

// parseParams reads the auth-params of a challenge: key="quoted value" or key=token,
// separated by commas.
func parseParams(s string) map[string]string {
	out := map[string]string{}
	for len(s) > 0 {
		s = strings.TrimLeft(s, " ,")
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		rest = strings.TrimLeft(rest, " ")
		var v string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
					b.WriteByte(rest[i])
					continue
				}
				if rest[i] == '"' {
					break
				}
				b.WriteByte(rest[i])
			}
			v = b.String()
			if i < len(rest) {
				i++
			}
			s = rest[i:]
		} else {
			v, s, _ = strings.Cut(rest, ",")
			v = strings.TrimSpace(v)
		}
		out[k] = v
	}
	return out
}

// maxTokenBody bounds a token server's answer.
const maxTokenBody = 1 << 20

// fetchToken asks the realm for a token for scope: a GET with basic credentials (or
// none), or for an identity token an OAuth2 refresh-token POST. The answer is never
// echoed in an error: it holds credentials.
func (a *authTransport) fetchToken(ctx context.Context, r *regAuth, scope string, cred authn.AuthConfig, fp string) (token, error) {
	r.mu.Lock()
	realm, service := r.realm, r.service
	r.mu.Unlock()
	u, err := url.Parse(realm)
	if err != nil || u.Host == "" {
		return token{}, fmt.Errorf("%w: registry %s names token realm %q, not a URL", pullkit.ErrUnauthorized, text.Clean(r.host, 100), text.Clean(realm, 200))
	}
	if err := a.realmAllowed(r.host, u); err != nil {
		return token{}, err
	}
	var req *http.Request
	if cred.IdentityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cred.IdentityToken}, "client_id": {"pullkit"}, "scope": {scope}}
		if service != "" {
			form.Set("service", service)
		}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		q := u.Query()
		q.Set("scope", scope)
		if service != "" {
			q.Set("service", service)
		}
		u.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err == nil {
			if cred.Username != "" || cred.Password != "" {
				req.SetBasicAuth(cred.Username, cred.Password)
			} else if cred.Auth != "" {
				req.Header.Set("Authorization", "Basic "+cred.Auth)
			}
		}
	}
	if err != nil {
		return token{}, fmt.Errorf("%w: token request to %s: %s", pullkit.ErrUnauthorized, redactURL(u), text.Clean(err.Error(), 200))
	}
	tri := *infoOf(ctx)
	tri.origin, tri.step, tri.what, tri.digest = r.host, "token from "+redactURL(u), "token", ""
	req = req.WithContext(withInfo(ctx, &tri))
	hc := &http.Client{Transport: a.tokens, CheckRedirect: func(next *http.Request, via []*http.Request) error {
		if err := checkRedirect(next, via); err != nil {
			return err
		}
		return a.realmAllowed(r.host, next.URL)
	}}
	resp, err := hc.Do(req)
	if err != nil {
		// Named by the realm without its query: the error says it was the token step.
		var ue *url.Error
		if errors.As(err, &ue) && !vocabulary(ue.Err) {
			return token{}, connError(ctx, fmt.Errorf("request a token from %s: %w", redactURL(u), ue.Err))
		}
		return token{}, requestError(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Status and codes only: the body of a token server is not quoted.
		he := &pullkit.HTTPError{Method: req.Method, URL: redactURL(resp.Request.URL), StatusCode: resp.StatusCode,
			Expected: "a token for " + scope, CredentialsSent: hasCredentials(cred)}
		if resp.StatusCode == http.StatusForbidden {
			return token{}, he
		}
		if resp.StatusCode >= 400 && resp.StatusCode < 500 {
			return token{}, fmt.Errorf("%w: %w", pullkit.ErrUnauthorized, he)
		}
		return token{}, he
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return token{}, connError(ctx, err)
	}
	if len(body) > maxTokenBody {
		return token{}, fmt.Errorf("%w: token answer from %s is over %d bytes", pullkit.ErrUnauthorized, redactURL(u), maxTokenBody)
	}
	var t struct {
		Token       string    `json:"token"`
		AccessToken string    `json:"access_token"`
		ExpiresIn   int       `json:"expires_in"`
		IssuedAt    time.Time `json:"issued_at"`
	}
	if err := json.Unmarshal(body, &t); err != nil || (t.Token == "" && t.AccessToken == "") {
		return token{}, fmt.Errorf("%w: token server %s answered without a token", pullkit.ErrUnauthorized, redactURL(u))
	}
	v := t.Token
	if v == "" {
		v = t.AccessToken
	}
	life := time.Duration(t.ExpiresIn) * time.Second
	if life < time.Minute {
		life = time.Minute // the token spec's floor
	}
	tok := token{value: v, expires: time.Now().Add(life)}
	r.mu.Lock()
	r.tokens[tokenKey(scope, fp)] = tok
	r.mu.Unlock()
	return tok, nil
}

// tokenKey is where a token for scope obtained with the credential of fingerprint fp
// ("" for none) is kept.
func tokenKey(scope, fp string) string { return scope + "\x00" + fp }

// realmAllowed refuses a token realm the registry has no business naming: plain HTTP
// unless the registry is spoken to over plain HTTP, and a loopback, private or
// link-local address unless the registry itself is on such an address (an on-premise
// registry with its token server beside it is normal; a public one sending the puller's
// credentials to the host's own network is not).
func (a *authTransport) realmAllowed(registry string, u *url.URL) error {
	switch u.Scheme {
	case "https":
	case "http":
		if !a.c.httpAllowed(registry) && !isLoopbackName(u.Host) {
			return fmt.Errorf("%w: registry %s names a plain-HTTP token realm %s", pullkit.ErrDenied, text.Clean(registry, 100), redactURL(u))
		}
	default:
		return fmt.Errorf("%w: registry %s names a %q token realm", pullkit.ErrDenied, text.Clean(registry, 100), text.Clean(u.Scheme, 20))
	}
	if strings.EqualFold(u.Host, registry) {
		return nil
	}
	ip := hostIP(u.Host)
	if ip == nil && !isLoopbackName(u.Host) {
		return nil
	}
	if isLoopbackName(u.Host) || (ip != nil && (ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified())) {
		if !isPrivateName(registry) {
			return fmt.Errorf("%w: registry %s names token realm %s, on a loopback, private or link-local address", pullkit.ErrDenied, text.Clean(registry, 100), redactURL(u))
		}
		if ip != nil && (ip.IsLinkLocalUnicast() || ip.IsUnspecified()) {
			return fmt.Errorf("%w: registry %s names token realm %s, on a link-local address", pullkit.ErrDenied, text.Clean(registry, 100), redactURL(u))
		}
	}
	return nil
}

// connError marks a failed round trip as pullkit.ErrUnreachable, keeping the cause; the
// end of ctx (the caller's cancel or deadline) and errors that already carry a sentinel
// (the puller's own refusals, a token the token server would not give) stay as they
// are. A deadline error while ctx goes on is a transport's own (net/http's "timeout
// awaiting response headers" says it is context.DeadlineExceeded): the registry did not
// answer in time, so it is unreachable.
func connError(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, context.Canceled) || vocabulary(err) {
		return err
	}
	return fmt.Errorf("%w: %w", pullkit.ErrUnreachable, err)
}
