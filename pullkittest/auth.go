package pullkittest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
)

type basicAuth struct{ user, password string }

// WithBasicAuth makes the registry require HTTP basic auth as user / password on every
// request, /v2/ included, as distribution's htpasswd auth does. A request without
// credentials and one with wrong credentials both get 401 UNAUTHORIZED with the challenge
// Basic realm="pullkittest"; the message tells them apart ("authentication required" vs
// "invalid username or password"), where distribution says "authentication required" to
// both.
func WithBasicAuth(user, password string) Option {
	return func(c *config) error {
		if user == "" || strings.Contains(user, ":") {
			return fmt.Errorf("WithBasicAuth: user %q must be non-empty and without ':'", user)
		}
		c.basic = &basicAuth{user, password}
		return nil
	}
}

// TokenAuth configures bearer token auth (WithTokenAuth): the token server the registry's
// challenge names as realm, and the tokens it hands out.
type TokenAuth struct {
	// User and Password are the credentials the token server accepts (HTTP basic on GET,
	// or the OAuth2 password grant on POST). An empty User accepts none.
	User, Password string
	// Anonymous makes the token server issue tokens to clients that send no
	// credentials, as Docker Hub does for public repositories.
	Anonymous bool
	// Allow decides which repositories a client may pull (user is "" for an anonymous
	// one). A token carries only the scopes granted; the registry answers 401 with
	// error="insufficient_scope" for the others. Nil allows every repository.
	Allow func(user, repository string) bool
	// TTL is how long tokens stay valid: 5 minutes when 0. The token server reports it
	// as expires_in (whole seconds, at least 1); the registry refuses an expired token
	// with 401 and error="invalid_token".
	TTL time.Duration
	// Service is the service name of the challenge and the tokens' audience;
	// "pullkittest" when "".
	Service string
}

// WithTokenAuth makes the registry require bearer tokens issued by its own token server,
// which listens on another loopback port (Registry.TokenURL), as distribution's token
// auth does: every request without a valid token gets 401 UNAUTHORIZED with the challenge
// Bearer realm="…",service="…"[,scope="repository:<name>:pull"][,error="…"], and a token
// must grant repository:<name>:pull for the repository asked for.
func WithTokenAuth(ta TokenAuth) Option {
	return func(c *config) error {
		if ta.TTL < 0 {
			return fmt.Errorf("WithTokenAuth: negative TTL %v", ta.TTL)
		}
		if ta.User == "" && !ta.Anonymous {
			return errors.New("WithTokenAuth: no User and not Anonymous: the token server would issue no token")
		}
		if ta.TTL == 0 {
			ta.TTL = 5 * time.Minute
		}
		if ta.Service == "" {
			ta.Service = "pullkittest"
		}
		c.token = &ta
		return nil
	}
}

// ExpireTokens makes every token issued so far invalid, as if its time had run out, so a
// test can check that a client fetches a new one without waiting for the TTL.
func (r *Registry) ExpireTokens() { r.tokenGen.Add(1) }

// Messages of the 401s. The no-credentials one is distribution's.
const (
	msgAuthRequired = "authentication required"
	msgBadPassword  = "invalid username or password"
	msgBadToken     = "invalid token"
	msgExpiredToken = "token expired"
	msgScope        = "insufficient scope"
)

// authorize checks the request's credentials for pulling from repo ("" for the ping)
// and answers 401 when they do not do.
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request, repo string) bool {
	var detail any = jsonNull
	if repo != "" {
		action := "pull"
		if req.Method == http.MethodDelete {
			action = "delete"
		}
		detail = []accessRecord{{Type: "repository", Name: repo, Action: action}}
	}
	switch {
	case r.cfg.basic != nil:
		user, pass, ok := req.BasicAuth()
		if ok && subtle.ConstantTimeCompare([]byte(user), []byte(r.cfg.basic.user)) == 1 &&
			subtle.ConstantTimeCompare([]byte(pass), []byte(r.cfg.basic.password)) == 1 {
			return true
		}
		msg := msgAuthRequired
		if ok {
			msg = msgBadPassword
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="pullkittest"`)
		writeError(w, CodeUnauthorized, msg, detail)
		return false
	case r.cfg.token != nil:
		ta := r.cfg.token
		challenge := fmt.Sprintf("Bearer realm=%q,service=%q", r.TokenURL(), ta.Service)
		if repo != "" {
			challenge += fmt.Sprintf(",scope=%q", "repository:"+repo+":pull")
		}
		scheme, raw, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		msg := msgAuthRequired
		if strings.EqualFold(scheme, "bearer") && raw != "" {
			claims, err := r.verifyToken(raw)
			switch {
			case errors.Is(err, errExpired):
				msg = msgExpiredToken
				challenge += `,error="invalid_token"`
			case err != nil:
				msg = msgBadToken
				challenge += `,error="invalid_token"`
			case repo == "" || claims.allows(repo):
				return true
			default:
				msg = msgScope
				challenge += `,error="insufficient_scope"`
			}
		}
		w.Header().Set("WWW-Authenticate", challenge)
		writeError(w, CodeUnauthorized, msg, detail)
		return false
	}
	return true
}

// tokenAccess is one access entry of a token, as distribution's token claims write it.
type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

type tokenClaims struct {
	Issuer     string        `json:"iss"`
	Subject    string        `json:"sub"`
	Audience   string        `json:"aud"`
	Expiration int64         `json:"exp"`
	NotBefore  int64         `json:"nbf"`
	IssuedAt   int64         `json:"iat"`
	ID         string        `json:"jti"`
	Access     []tokenAccess `json:"access"`
	// Generation and ExpiresMs are the kit's own claims: ExpireTokens invalidates older
	// generations, and a TTL below a second (exp has whole seconds) is kept exactly.
	Generation int64 `json:"pullkittest_gen"`
	ExpiresMs  int64 `json:"pullkittest_exp_ms"`
}

func (c *tokenClaims) allows(repo string) bool {
	for _, a := range c.Access {
		if a.Type == "repository" && a.Name == repo {
			for _, act := range a.Actions {
				if act == "pull" || act == "*" {
					return true
				}
			}
		}
	}
	return false
}

const tokenIssuer = "pullkittest"

var errExpired = errors.New("token expired")

// signToken makes a JWT (HS256: the kit both issues and checks it) of claims.
func (r *Registry) signToken(c tokenClaims) string {
	header := base64.RawURLEncoding.EncodeToString([]byte(`{"typ":"JWT","alg":"HS256"}`))
	payload, _ := json.Marshal(c)
	input := header + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, r.tokenKey)
	mac.Write([]byte(input))
	return input + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (r *Registry) verifyToken(raw string) (*tokenClaims, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, errors.New("malformed token")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return nil, errors.New("malformed token")
	}
	mac := hmac.New(sha256.New, r.tokenKey)
	mac.Write([]byte(parts[0] + "." + parts[1]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, errors.New("bad signature")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("malformed token")
	}
	var c tokenClaims
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, errors.New("malformed token")
	}
	at := r.now()
	now := at.Unix()
	switch {
	case c.Issuer != tokenIssuer || c.Audience != r.cfg.token.Service:
		return nil, errors.New("wrong issuer or audience")
	case now < c.NotBefore:
		return nil, errors.New("token not yet valid")
	case now > c.Expiration || at.UnixMilli() >= c.ExpiresMs || c.Generation != r.tokenGen.Load():
		return nil, errExpired
	}
	return &c, nil
}

// serveToken is the token server: GET with basic auth (or none, when Anonymous) as the
// Docker token spec has it, or POST with the OAuth2 password grant as containerd sends
// it. It grants pull on the repository scopes asked for that Allow permits.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	ta := r.cfg.token
	if req.URL.Path != "/token" {
		http.NotFound(w, req)
		return
	}
	var user, pass, service string
	var scopes []string
	var sent bool
	oauth := false
	switch req.Method {
	case http.MethodGet:
		q := req.URL.Query()
		user, pass, sent = req.BasicAuth()
		service = q.Get("service")
		for _, s := range q["scope"] {
			scopes = append(scopes, strings.Fields(s)...)
		}
	case http.MethodPost:
		oauth = true
		if err := req.ParseForm(); err != nil {
			tokenError(w, http.StatusBadRequest, "invalid_request", err.Error())
			return
		}
		if gt := req.PostForm.Get("grant_type"); gt != "password" {
			tokenError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type "+gt+" is not supported; use password")
			return
		}
		user, pass = req.PostForm.Get("username"), req.PostForm.Get("password")
		sent = user != "" || pass != ""
		service = req.PostForm.Get("service")
		scopes = strings.Fields(req.PostForm.Get("scope"))
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	switch {
	case sent && (ta.User == "" || subtle.ConstantTimeCompare([]byte(user), []byte(ta.User)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(ta.Password)) != 1):
		w.Header().Set("WWW-Authenticate", `Basic realm="pullkittest token"`)
		writeError(w, CodeUnauthorized, msgBadPassword, nil)
		return
	case !sent && !ta.Anonymous:
		w.Header().Set("WWW-Authenticate", `Basic realm="pullkittest token"`)
		writeError(w, CodeUnauthorized, msgAuthRequired, nil)
		return
	case !sent:
		user = ""
	}
	if service != ta.Service {
		if oauth {
			tokenError(w, http.StatusBadRequest, "invalid_request", "unknown service "+service)
			return
		}
		writeError(w, CodeDenied, "unknown service "+service, nil)
		return
	}
	access := []tokenAccess{}
	var granted []string
	for _, s := range scopes {
		typ, rest, ok := strings.Cut(s, ":")
		i := strings.LastIndexByte(rest, ':')
		if !ok || typ != "repository" || i <= 0 {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		if !contains(actions, "pull") && !contains(actions, "*") {
			continue
		}
		if ta.Allow != nil && !ta.Allow(user, name) {
			continue
		}
		access = append(access, tokenAccess{Type: "repository", Name: name, Actions: []string{"pull"}})
		granted = append(granted, "repository:"+name+":pull")
	}
	now := r.now()
	token := r.signToken(tokenClaims{
		Issuer:     tokenIssuer,
		Subject:    user,
		Audience:   ta.Service,
		Expiration: now.Add(ta.TTL + time.Second - 1).Unix(),
		ExpiresMs:  now.Add(ta.TTL).UnixMilli(),
		NotBefore:  now.Add(-time.Minute).Unix(),
		IssuedAt:   now.Unix(),
		ID:         rand.Text(),
		Access:     access,
		Generation: r.tokenGen.Load(),
	})
	body := map[string]any{
		"token":        token,
		"access_token": token,
		"expires_in":   int64(math.Max(1, math.Ceil(ta.TTL.Seconds()))),
		"issued_at":    now.UTC().Format(time.RFC3339),
	}
	if oauth {
		delete(body, "token")
		body["scope"] = strings.Join(granted, " ")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(body)
}

// tokenError is an OAuth2 error response (RFC 6749 section 5.2).
func tokenError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// now is the time by the registry's clock.
func (r *Registry) now() time.Time {
	if r.clock != nil {
		return r.clock()
	}
	return time.Now()
}
