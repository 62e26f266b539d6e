package pullkittest

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestBasicAuth(t *testing.T) {
	r := NewRegistry(t, WithBasicAuth("alice", "s3cret"))
	r.PushImage("x", "latest", Schema2)
	for _, tc := range []struct {
		name, path, auth string
		status           int
		message, detail  string
	}{
		{"ping, none", "/v2/", "", 401, "authentication required", "null"},
		{"ping, wrong", "/v2/", "alice:nope", 401, "invalid username or password", "null"},
		{"ping, right", "/v2/", "alice:s3cret", 200, "", ""},
		{"manifest, none", "/v2/x/manifests/latest", "", 401, "authentication required", `[{"Type":"repository","Class":"","Name":"x","Action":"pull"}]`},
		{"manifest, wrong user", "/v2/x/manifests/latest", "bob:s3cret", 401, "invalid username or password", `[{"Type":"repository","Class":"","Name":"x","Action":"pull"}]`},
		{"manifest, right", "/v2/x/manifests/latest", "alice:s3cret", 200, "", ""},
		// Auth comes before the lookup, as in distribution: no oracle for what exists.
		{"missing, none", "/v2/nosuch/manifests/latest", "", 401, "authentication required", `[{"Type":"repository","Class":"","Name":"nosuch","Action":"pull"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.auth != "" {
				u, p, _ := strings.Cut(tc.auth, ":")
				req, _ := http.NewRequest("GET", "/", nil)
				req.SetBasicAuth(u, p)
				hdr = append(hdr, "Authorization: "+req.Header.Get("Authorization"))
			}
			resp, body := get(t, http.MethodGet, r.URL()+tc.path, hdr...)
			if resp.StatusCode != tc.status {
				t.Fatalf("%d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status != 401 {
				return
			}
			if ch := resp.Header.Get("WWW-Authenticate"); ch != `Basic realm="pullkittest"` {
				t.Errorf("challenge %q", ch)
			}
			e := errorsOf(body)
			if len(e) != 1 || e[0].Code != "UNAUTHORIZED" || e[0].Message != tc.message || string(e[0].Detail) != tc.detail {
				t.Errorf("body %s", body)
			}
		})
	}
}

// tokenFor asks the realm named by a 401's challenge for a token, as a client does.
func tokenFor(t *testing.T, challenge, user, pass string) (string, *http.Response) {
	t.Helper()
	params := map[string]string{}
	rest, ok := strings.CutPrefix(challenge, "Bearer ")
	if !ok {
		t.Fatalf("challenge %q is not Bearer", challenge)
	}
	for _, kv := range strings.Split(rest, ",") {
		k, v, _ := strings.Cut(kv, "=")
		params[k] = strings.Trim(v, `"`)
	}
	q := url.Values{"service": {params["service"]}}
	if params["scope"] != "" {
		q.Set("scope", params["scope"])
	}
	req, err := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	if resp.StatusCode == 200 && (tok.Token == "" || (tok.AccessToken != "" && tok.Token != tok.AccessToken) || tok.ExpiresIn < 1) {
		t.Errorf("token response %+v", tok)
	}
	return tok.Token, resp
}

func TestTokenAuth(t *testing.T) {
	r := NewRegistry(t, WithTokenAuth(TokenAuth{
		User: "alice", Password: "s3cret",
		Allow: func(user, repo string) bool { return repo != "secret" },
	}))
	r.PushImage("x", "latest", Schema2)
	r.PushImage("y", "latest", Schema2)
	r.PushImage("secret", "latest", Schema2)
	if !strings.HasPrefix(r.TokenURL(), "http://localhost:") || strings.Contains(r.TokenURL(), r.Host()) {
		t.Fatalf("realm %s is not on another loopback port than %s", r.TokenURL(), r.Host())
	}

	// The ping challenges without a scope; a repository request with its pull scope.
	resp, body := get(t, http.MethodGet, r.URL()+"/v2/")
	want := `Bearer realm="` + r.TokenURL() + `",service="pullkittest"`
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != want || codeOf(body) != "UNAUTHORIZED" {
		t.Fatalf("ping: %d %q %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
	}
	resp, _ = get(t, http.MethodGet, r.URL()+"/v2/x/manifests/latest")
	challenge := resp.Header.Get("WWW-Authenticate")
	if challenge != want+`,scope="repository:x:pull"` {
		t.Fatalf("challenge %q", challenge)
	}

	// Wrong credentials at the token server are a 401 there, and say so.
	if _, resp := tokenFor(t, challenge, "alice", "nope"); resp.StatusCode != 401 {
		t.Errorf("token with a wrong password: %d", resp.StatusCode)
	}
	if _, resp := tokenFor(t, challenge, "", ""); resp.StatusCode != 401 {
		t.Errorf("anonymous token without Anonymous: %d", resp.StatusCode)
	}
	tok, resp := tokenFor(t, challenge, "alice", "s3cret")
	if resp.StatusCode != 200 {
		t.Fatalf("token: %d", resp.StatusCode)
	}
	bearer := "Authorization: Bearer " + tok
	for _, tc := range []struct {
		path, auth string
		status     int
		message    string
		errorParam string
	}{
		{"/v2/", bearer, 200, "", ""},
		{"/v2/x/manifests/latest", bearer, 200, "", ""},
		{"/v2/y/manifests/latest", bearer, 401, "insufficient scope", "insufficient_scope"},
		{"/v2/x/manifests/latest", "Authorization: Bearer garbage", 401, "invalid token", "invalid_token"},
		{"/v2/x/manifests/latest", "Authorization: Basic YWxpY2U6czNjcmV0", 401, "authentication required", ""},
	} {
		resp, body := get(t, http.MethodGet, r.URL()+tc.path, tc.auth)
		if resp.StatusCode != tc.status {
			t.Errorf("%s with %.30s: %d, want %d", tc.path, tc.auth, resp.StatusCode, tc.status)
			continue
		}
		if tc.status == 401 {
			e := errorsOf(body)
			ch := resp.Header.Get("WWW-Authenticate")
			if len(e) != 1 || e[0].Message != tc.message || (tc.errorParam != "") != strings.Contains(ch, `error="`+tc.errorParam+`"`) {
				t.Errorf("%s with %.30s: %q %s", tc.path, tc.auth, ch, body)
			}
		}
	}

	// A repository Allow refuses: the token comes without it, the registry says
	// insufficient_scope.
	resp, _ = get(t, http.MethodGet, r.URL()+"/v2/secret/manifests/latest")
	tok, _ = tokenFor(t, resp.Header.Get("WWW-Authenticate"), "alice", "s3cret")
	resp, _ = get(t, http.MethodGet, r.URL()+"/v2/secret/manifests/latest", "Authorization: Bearer "+tok)
	if resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Errorf("denied repository: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}

	// ExpireTokens: the old token is now expired.
	r.ExpireTokens()
	resp, body = get(t, http.MethodGet, r.URL()+"/v2/x/manifests/latest", bearer)
	if resp.StatusCode != 401 || errorsOf(body)[0].Message != "token expired" || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("after ExpireTokens: %d %s", resp.StatusCode, body)
	}
	if n := r.Count(Match{Route: RouteToken}); n != 4 {
		t.Errorf("%d token requests logged, want 4", n)
	}
}

func TestTokenTTL(t *testing.T) {
	r := NewRegistry(t, WithTokenAuth(TokenAuth{Anonymous: true, TTL: 300 * time.Millisecond}))
	// The registry's clock is the test's: a token expires when the test says time has
	// passed, not when a loaded machine took long.
	var mu sync.Mutex
	now := time.Now()
	r.clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r.PushImage("x", "latest", OCI)
	resp, _ := get(t, http.MethodGet, r.URL()+"/v2/x/manifests/latest")
	tok, resp := tokenFor(t, resp.Header.Get("WWW-Authenticate"), "", "")
	if resp.StatusCode != 200 {
		t.Fatalf("anonymous token: %d", resp.StatusCode)
	}
	if resp, _ := get(t, http.MethodHead, r.URL()+"/v2/x/manifests/latest", "Authorization: Bearer "+tok, acceptAll); resp.StatusCode != 200 {
		t.Fatalf("fresh token: %d", resp.StatusCode)
	}
	mu.Lock()
	now = now.Add(299 * time.Millisecond)
	mu.Unlock()
	if resp, _ := get(t, http.MethodHead, r.URL()+"/v2/x/manifests/latest", "Authorization: Bearer "+tok, acceptAll); resp.StatusCode != 200 {
		t.Fatalf("token 1 ms before its expiry: %d", resp.StatusCode)
	}
	mu.Lock()
	now = now.Add(time.Millisecond)
	mu.Unlock()
	resp, body := get(t, http.MethodGet, r.URL()+"/v2/x/manifests/latest", "Authorization: Bearer "+tok)
	if resp.StatusCode != 401 || errorsOf(body)[0].Message != "token expired" {
		t.Errorf("expired token: %d %s", resp.StatusCode, body)
	}
}

func TestTokenOAuthPost(t *testing.T) {
	r := NewRegistry(t, WithTokenAuth(TokenAuth{User: "alice", Password: "s3cret", Service: "reg"}))
	for _, tc := range []struct {
		form   url.Values
		status int
	}{
		{url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}, "service": {"reg"}, "scope": {"repository:x:pull,push"}}, 200},
		{url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"bad"}, "service": {"reg"}}, 401},
		{url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}, "service": {"reg"}}, 400},
		{url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"s3cret"}, "service": {"other"}}, 400},
	} {
		resp, err := testClient.PostForm(r.TokenURL(), tc.form)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			AccessToken string `json:"access_token"`
			Scope       string `json:"scope"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%v: %d, want %d", tc.form, resp.StatusCode, tc.status)
		}
		if tc.status == 200 && (body.AccessToken == "" || body.Scope != "repository:x:pull") {
			t.Errorf("%v: %+v", tc.form, body)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	for name, opts := range map[string][]Option{
		"two schemes":        {WithBasicAuth("a", "b"), WithTokenAuth(TokenAuth{Anonymous: true})},
		"no user, not anon":  {WithTokenAuth(TokenAuth{})},
		"negative TTL":       {WithTokenAuth(TokenAuth{Anonymous: true, TTL: -time.Second})},
		"empty basic user":   {WithBasicAuth("", "x")},
		"rule without fault": {WithFaults(&Rule{})},
		"negative Nth":       {WithFaults(&Rule{Nth: -1, Fault: CorruptByte()})},
	} {
		if r, err := Start(opts...); err == nil {
			r.Close()
			t.Errorf("%s: Start accepted it", name)
		}
	}
}

// A real client, go-containerregistry's, gets through the token dance (its SSRF guard
// refuses realms on loopback IP literals, hence the localhost realm).
func TestTokenAuthGoContainerregistry(t *testing.T) {
	r := NewRegistry(t, WithTokenAuth(TokenAuth{User: "alice", Password: "s3cret"}))
	idx := r.PushIndex("multi", "v1", OCIIndex, Attestations())
	ref, err := name.ParseReference(r.Ref("multi:v1"), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Get(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "s3cret"}))
	if err != nil {
		t.Fatal(err)
	}
	if desc.Digest.String() != idx.Digest.String() {
		t.Errorf("go-containerregistry resolved %s, want %s", desc.Digest, idx.Digest)
	}
	if _, err := remote.Get(ref, remote.WithAuth(&authn.Basic{Username: "alice", Password: "bad"})); err == nil {
		t.Errorf("wrong password: no error")
	}
}
