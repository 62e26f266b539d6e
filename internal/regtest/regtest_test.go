package regtest

import (
	"net/http"
	"strings"
	"testing"
)

func TestStartServesAndStops(t *testing.T) {
	r := Start(t)
	resp, _ := r.Get(t, http.MethodGet, "/v2/", "")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Distribution-Api-Version") != "registry/2.0" {
		t.Fatalf("GET /v2/: %s %v", resp.Status, resp.Header)
	}
	r.stop()
	if _, err := http.Get("http://" + r.Host + "/v2/"); err == nil {
		t.Error("registry still answers after stop")
	}
}

// TestHtpasswd proves the embedded bcrypt entry: the registry refuses anonymous and
// wrong credentials, and accepts User / Password.
func TestHtpasswd(t *testing.T) {
	r := Start(t, WithHtpasswd())
	for _, tc := range []struct {
		user, pass string
		want       int
	}{
		{"", "", http.StatusUnauthorized},
		{User, "wrong", http.StatusUnauthorized},
		{User, Password, http.StatusOK},
	} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+r.Host+"/v2/", nil)
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%q/%q: %s, want %d", tc.user, tc.pass, resp.Status, tc.want)
		}
	}
}

// TestTokenServerChallenge checks the registry points clients at the token server.
func TestTokenServerChallenge(t *testing.T) {
	ts := NewTokenServer(t)
	r := Start(t, WithToken(ts))
	resp, _ := r.Get(t, http.MethodGet, "/v2/", "")
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(ch, ts.Realm()) || !strings.Contains(ch, ts.Service) {
		t.Fatalf("%s, challenge %q; want a bearer challenge for %s", resp.Status, ch, ts.Realm())
	}
	tokenResp, err := http.Get(ts.Realm() + "?service=" + ts.Service + "&scope=repository:x:pull")
	if err != nil {
		t.Fatal(err)
	}
	tokenResp.Body.Close()
	if tokenResp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous token request: %s, want 401", tokenResp.Status)
	}
}

// TestStartV3 starts distribution v3 with token auth whose realm is on another port:
// it serves and challenges as 2.8 does, and has no schema 1.
func TestStartV3(t *testing.T) {
	ts := NewTokenServer(t)
	r := Start(t, WithV3(), WithToken(ts))
	if !r.V3 || r.Auth != "token" {
		t.Fatalf("registry %+v", r)
	}
	resp, _ := r.Get(t, "GET", "/v2/", "")
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), ts.Realm()) {
		t.Errorf("/v2/: %s, challenge %q; want 401 naming realm %s", resp.Status, resp.Header.Get("WWW-Authenticate"), ts.Realm())
	}
}
