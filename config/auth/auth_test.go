package auth

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// A containers-auth.json(5) with repository-scoped keys, and a docker config.json's
// legacy Docker Hub key, helpers and store.
var example = `{
  "auths": {
    "quay.io": {"auth": "` + b64("quayuser:quaypass") + `"},
    "quay.io/team": {"auth": "` + b64("teamuser:teampass") + `"},
    "quay.io/team/app": {"username": "appuser", "password": "apppass"},
    "https://index.docker.io/v1/": {"auth": "` + b64("hubuser:hub:pass") + `"},
    "http://legacy.example:5000/v1/ignored/path": {"auth": "` + b64("legacy:pw") + `"},
    "token.example": {"identitytoken": "refresh-me"}
  },
  "credHelpers": {"gcr.io": "gcloud", "https://ecr.example": "ecr-login"},
  "credsStore": "desktop"
}`

func TestLookup(t *testing.T) {
	f, err := Parse("auth.json", []byte(example))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, repo string
		user, key  string
		found      bool
	}{
		{"quay.io", "team/app", "appuser", "quay.io/team/app", true},
		{"quay.io", "team/app/sub", "appuser", "quay.io/team/app", true},
		{"quay.io", "team/other", "teamuser", "quay.io/team", true},
		{"quay.io", "teamx/app", "quayuser", "quay.io", true},
		{"quay.io", "solo", "quayuser", "quay.io", true},
		{"index.docker.io", "library/alpine", "hubuser", "docker.io", true},
		{"docker.io", "library/alpine", "hubuser", "docker.io", true},
		{"registry-1.docker.io", "x/y", "hubuser", "docker.io", true},
		{"legacy.example:5000", "a/b", "legacy", "legacy.example:5000", true},
		{"QUAY.IO", "solo", "quayuser", "quay.io", true},
		{"other.example", "a", "", "", false},
	} {
		e, key, ok := f.Lookup(tc.host, tc.repo)
		if ok != tc.found || e.Username != tc.user || key != tc.key {
			t.Errorf("Lookup(%s, %s) = %+v %q %v; want user %q key %q", tc.host, tc.repo, e, key, ok, tc.user, tc.key)
		}
	}
	if e, _, _ := f.Lookup("index.docker.io", "x"); e.Password != "hub:pass" {
		t.Errorf("a password with a colon: %q", e.Password)
	}
	if e, _, _ := f.Lookup("token.example", "x"); e.IdentityToken != "refresh-me" {
		t.Errorf("identity token: %+v", e)
	}
	if f.Helper("gcr.io") != "gcloud" || f.Helper("ecr.example") != "ecr-login" || f.Helper("elsewhere.io") != "desktop" {
		t.Errorf("helpers %v, store %q", f.CredHelpers, f.CredsStore)
	}
}

func TestParseRefuses(t *testing.T) {
	for name, s := range map[string]string{
		"not JSON":        "{",
		"auth not base64": `{"auths": {"x.io": {"auth": "%%%"}}}`,
		"auth no colon":   `{"auths": {"x.io": {"auth": "` + b64("nocolon") + `"}}}`,
		"auths not a map": `{"auths": []}`,
	} {
		if _, err := Parse("a.json", []byte(s)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	if f, err := Parse("a.json", []byte("  ")); err != nil || len(f.Auths) != 0 {
		t.Errorf("an empty file: %v %v", f, err)
	}
}

func TestDefaultPaths(t *testing.T) {
	dir := t.TempDir()
	write := func(p string) string {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	explicit := write(filepath.Join(dir, "explicit.json"))
	runtime := write(filepath.Join(dir, "run", "containers", "auth.json"))
	cfg := write(filepath.Join(dir, "cfg", "containers", "auth.json"))
	docker := write(filepath.Join(dir, "docker", "config.json"))
	t.Setenv("REGISTRY_AUTH_FILE", explicit)
	t.Setenv("XDG_RUNTIME_DIR", filepath.Join(dir, "run"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "cfg"))
	t.Setenv("DOCKER_CONFIG", filepath.Join(dir, "docker"))
	if got := DefaultPaths(); !reflect.DeepEqual(got, []string{explicit, runtime, cfg, docker}) {
		t.Errorf("DefaultPaths = %v", got)
	}
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(dir, "missing.json"))
	if got := DefaultPaths(); len(got) != 3 {
		t.Errorf("a missing file is left out: %v", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte(`{"auths": {"a/b/c": {"username": "u"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse("a.json", b)
		if err != nil {
			return
		}
		for k := range c.Auths {
			if strings.Contains(k, "://") {
				t.Fatalf("key %q kept its scheme", k)
			}
			host, repo, _ := strings.Cut(k, "/")
			if _, key, ok := c.Lookup(host, repo+"/more"); !ok || key == "" {
				t.Fatalf("key %q not found for %s/%s/more", k, host, repo)
			}
		}
	})
}
