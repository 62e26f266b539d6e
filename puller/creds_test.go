package puller_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// TestPlainCredentials: a plain username and password, without a keychain, for basic and
// token registries.
func TestPlainCredentials(t *testing.T) {
	for name, opt := range map[string]pullkittest.Option{
		"basic": pullkittest.WithBasicAuth("alice", "s3cret"),
		"token": pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "alice", Password: "s3cret"}),
	} {
		t.Run(name, func(t *testing.T) {
			reg := pullkittest.NewRegistry(t, opt)
			reg.PushImage("team/app", "v1", pullkittest.Schema2)
			ref := reg.Ref("team/app:v1")
			hostilePull(t, newClient(t, puller.WithCredentials(reg.Host(), puller.Credential{Username: "alice", Password: "s3cret"})), ref).verified(t)
			_, err := newClient(t, puller.WithCredentials(reg.Host(), puller.Credential{Username: "alice", Password: "wrong"})).Pull(t.Context(), ref, store.NewMemory())
			if !errors.Is(err, pullkit.ErrUnauthorized) {
				t.Errorf("wrong password: err = %v, want ErrUnauthorized", err)
			}
		})
	}
}

// TestPullCredentialsKeptApart: a per-pull credentials callback (kubelet-style) is asked
// first, and a token obtained with one pull's credentials is never used by another
// pull with other credentials on the same client.
func TestPullCredentialsKeptApart(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "alice", Password: "s3cret"}))
	reg.PushImage("team/app", "v1", pullkittest.Schema2)
	ref := reg.Ref("team/app:v1")
	c := newClient(t, puller.WithCredentials(reg.Host(), puller.Credential{Username: "nobody", Password: "x"}))
	var mu sync.Mutex
	var asked []string
	as := func(user, pass string) puller.PullOption {
		return puller.WithPullCredentials(func(_ context.Context, host, repo string) (puller.Credential, error) {
			mu.Lock()
			asked = append(asked, host+"/"+repo)
			mu.Unlock()
			return puller.Credential{Username: user, Password: pass}, nil
		})
	}
	if _, err := c.Pull(t.Context(), ref, store.NewMemory(), as("alice", "s3cret")); err != nil {
		t.Fatal(err)
	}
	_, err := c.Pull(t.Context(), ref, store.NewMemory(), as("mallory", "guess"))
	if !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Fatalf("a second pull with other credentials: err = %v, want ErrUnauthorized (alice's token must not serve it)", err)
	}
	// The client's own credential is asked when the callback has none.
	_, err = c.Pull(t.Context(), ref, store.NewMemory(), puller.WithPullCredentials(func(context.Context, string, string) (puller.Credential, error) {
		return puller.Credential{}, nil
	}))
	if !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Errorf("fallback to WithCredentials(nobody): err = %v, want ErrUnauthorized", err)
	}
	if len(asked) == 0 || asked[0] != reg.Host()+"/team/app" {
		t.Errorf("callback asked for %v", asked)
	}
	// An error from the callback fails the pull, naming the source.
	_, err = c.Pull(t.Context(), ref, store.NewMemory(), puller.WithPullCredentials(func(context.Context, string, string) (puller.Credential, error) {
		return puller.Credential{}, errors.New("provider down")
	}))
	if !errors.Is(err, pullkit.ErrUnauthorized) || !strings.Contains(err.Error(), "provider down") {
		t.Errorf("callback error: %v", err)
	}
}

// TestAuthFileRepositoryScoped: containers-auth.json keys scoped to a namespace give
// credentials to its repositories only.
func TestAuthFileRepositoryScoped(t *testing.T) {
	reg := pullkittest.NewRegistry(t, pullkittest.WithTokenAuth(pullkittest.TokenAuth{User: "alice", Password: "s3cret"}))
	reg.PushImage("team/app", "v1", pullkittest.Schema2)
	reg.PushImage("other/app", "v1", pullkittest.Schema2)
	auth := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	file := writeFileTB(t, t.TempDir(), "auth.json", fmt.Appendf(nil, `{"auths": {%q: {"auth": %q}}}`, reg.Host()+"/team", auth))
	c := newClient(t, puller.WithAuthFile(file))
	hostilePull(t, c, reg.Ref("team/app:v1")).verified(t)
	if _, err := c.Pull(t.Context(), reg.Ref("other/app:v1"), store.NewMemory()); !errors.Is(err, pullkit.ErrUnauthorized) {
		t.Errorf("other/app: err = %v, want ErrUnauthorized (the key is for team/ only)", err)
	}
	plan, err := c.Plan(reg.Ref("team/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Endpoints[0].Credentials; !strings.Contains(got, file) || !strings.Contains(got, reg.Host()+"/team") {
		t.Errorf("Plan credentials %q do not name the file and key", got)
	}
	// REGISTRY_AUTH_FILE is read the same way.
	t.Setenv("REGISTRY_AUTH_FILE", file)
	hostilePull(t, newClient(t), reg.Ref("team/app:v1")).verified(t)
}

// headerRecorder fronts target with a reverse proxy that records each request's
// X-Mirror-Key and Authorization headers.
func headerRecorder(t *testing.T, target string) (string, func() []string) {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	var mu sync.Mutex
	var seen []string
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("X-Mirror-Key"))
		mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seen)
	}
}

// TestHeadersAndCredentialsPerEndpoint: hosts.toml's [header] goes to its host only, and
// credentials are asked per endpoint host (a mirror's own, not the registry's).
func TestHeadersAndCredentialsPerEndpoint(t *testing.T) {
	origin := pullkittest.NewRegistry(t)
	mirrorReg := pullkittest.NewRegistry(t)
	for _, r := range []*pullkittest.Registry{origin, mirrorReg} {
		r.PushImage("team/app", "v1", pullkittest.Schema2, pullkittest.Seed(3))
	}
	mirror, mirrorSaw := headerRecorder(t, mirrorReg.Host())
	originFront, originSaw := headerRecorder(t, origin.Host())
	dir := t.TempDir()
	toml := fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\"]\n  [host.\"http://%s\".header]\n    x-mirror-key = \"k1\"\n", originFront, mirror, mirror)
	writeFileTB(t, filepath.Join(dir, originFront), "hosts.toml", []byte(toml))
	var mu sync.Mutex
	hosts := map[string]bool{}
	c := newClient(t, puller.WithHostsDir(dir), puller.WithCredentialsFunc(func(_ context.Context, host, _ string) (puller.Credential, error) {
		mu.Lock()
		hosts[host] = true
		mu.Unlock()
		return puller.Credential{}, nil
	}))
	hostilePull(t, c, originFront+"/team/app:v1").verified(t)
	for _, h := range mirrorSaw() {
		if h != "k1" {
			t.Errorf("a mirror request without its header: %q", h)
		}
	}
	for _, h := range originSaw() {
		if h != "" {
			t.Errorf("the registry got the mirror's header %q", h)
		}
	}
	if len(mirrorSaw()) == 0 || len(originSaw()) == 0 {
		t.Errorf("mirror saw %d requests, registry %d: want both (the registry resolves, the mirror serves blobs)", len(mirrorSaw()), len(originSaw()))
	}
	if !hosts[mirror] || !hosts[originFront] {
		t.Errorf("credentials asked for %v, want each endpoint's own host", hosts)
	}
}
