package puller_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/faultproxy"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

// TestMirrorFromConfigFiles names a real pull-through cache (docker-registry 2.8 with
// proxy.remoteurl pointing at another local registry) as a mirror in a hosts.toml and
// in a registries.conf, and checks which endpoint served what: a mirror without the
// resolve capability (or allowed only digests) never resolves a tag, yet serves the
// blobs; one with it serves everything; a dead one costs a fallback.
func TestMirrorFromConfigFiles(t *testing.T) {
	ctx := t.Context()
	originReg := regtest.Start(t)
	origin := proxied(t, originReg.Host)
	img := regtest.LayeredImage(t, 2)
	facts := factsOfImage(t, img)
	originReg.Push(t, "team/app:v1", img)
	tagRef := origin.Host() + "/team/app:v1"
	digestRef := origin.Host() + "/team/app@" + facts.manifest.String()
	cacheReg := regtest.Start(t, regtest.WithProxy("http://"+originReg.Host))
	cache := proxied(t, cacheReg.Host)
	down, err := faultproxy.New("http://" + cacheReg.Host)
	if err != nil {
		t.Fatal(err)
	}
	down.Close() // a port nothing listens on any more

	blobs := append(facts.layers, facts.config)
	countBlobs := func(p *faultproxy.Proxy) int {
		n := 0
		for _, d := range blobs {
			n += p.Count(http.MethodGet, "/blobs/"+d.String())
		}
		return n
	}
	hostsDir := func(t *testing.T, toml string) puller.Option {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, origin.Host()), "hosts.toml", []byte(toml))
		return puller.WithHostsDir(dir)
	}
	regConf := func(t *testing.T, conf string) puller.Option {
		p := writeFile(t, t.TempDir(), "registries.conf", []byte(conf))
		return puller.WithRegistriesConf(p)
	}
	type want struct {
		originManifests, originBlobs, cacheManifests, cacheBlobs bool
	}
	for _, tc := range []struct {
		name string
		opt  func(t *testing.T) puller.Option
		ref  string
		want want
	}{
		{"hosts.toml: pull-only mirror: the registry resolves, the mirror serves the blobs",
			func(t *testing.T) puller.Option {
				return hostsDir(t, fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\"]\n", origin.Host(), cache.Host()))
			}, tagRef, want{originManifests: true, cacheBlobs: true}},
		{"hosts.toml: mirror with resolve serves everything",
			func(t *testing.T) puller.Option {
				return hostsDir(t, fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", origin.Host(), cache.Host()))
			}, tagRef, want{cacheManifests: true, cacheBlobs: true}},
		{"hosts.toml: dead mirror first: falls back",
			func(t *testing.T) puller.Option {
				return hostsDir(t, fmt.Sprintf("[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  dial_timeout = \"500ms\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", down.Host(), cache.Host()))
			}, tagRef, want{cacheManifests: true, cacheBlobs: true}},
		{"registries.conf: digest-only mirror is not used for a tag",
			func(t *testing.T) puller.Option {
				return regConf(t, fmt.Sprintf("[[registry]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\npull-from-mirror = \"digest-only\"\n", origin.Host(), cache.Host()))
			}, tagRef, want{originManifests: true, originBlobs: true}},
		{"registries.conf: digest-only mirror serves a digest",
			func(t *testing.T) puller.Option {
				return regConf(t, fmt.Sprintf("[[registry]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\npull-from-mirror = \"digest-only\"\n", origin.Host(), cache.Host()))
			}, digestRef, want{cacheManifests: true, cacheBlobs: true}},
		{"registries.conf: mirror for all serves a tag",
			func(t *testing.T) puller.Option {
				return regConf(t, fmt.Sprintf("[[registry]]\nprefix = %q\nlocation = %q\n[[registry.mirror]]\nlocation = %q\n", origin.Host()+"/team", origin.Host()+"/team", cache.Host()+"/team"))
			}, tagRef, want{cacheManifests: true, cacheBlobs: true}},
		{"registries.conf: mirror-by-digest-only keeps tags on the registry",
			func(t *testing.T) puller.Option {
				return regConf(t, fmt.Sprintf("[[registry]]\nlocation = %q\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = %q\n", origin.Host(), cache.Host()))
			}, tagRef, want{originManifests: true, originBlobs: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			origin.Reset()
			cache.Reset()
			c := newClient(t, tc.opt(t))
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			st := store.NewMemory()
			pulled, err := c.Pull(pctx, tc.ref, st)
			if err != nil {
				t.Fatal(err)
			}
			if pulled.Digest != facts.manifest || pulled.Name != tc.ref {
				t.Errorf("pulled %s as %s, want %s as %s", pulled.Digest, pulled.Name, facts.manifest, tc.ref)
			}
			got := want{
				originManifests: origin.Count("", "/manifests/") > 0, originBlobs: countBlobs(origin) > 0,
				cacheManifests: cache.Count("", "/manifests/") > 0, cacheBlobs: countBlobs(cache) > 0,
			}
			if got != tc.want {
				t.Errorf("served %+v, want %+v\norigin saw %+v\ncache saw %+v", got, tc.want, origin.Records(), cache.Records())
			}
		})
	}

	t.Run("registries.conf: location rewrite keeps the name, blocked refuses", func(t *testing.T) {
		origin.Reset()
		conf := fmt.Sprintf("[[registry]]\nprefix = \"logical.example/apps\"\nlocation = %q\n\n[[registry]]\nprefix = \"blocked.example\"\nlocation = \"blocked.example\"\nblocked = true\n", origin.Host()+"/team")
		c := newClient(t, regConf(t, conf))
		pulled, err := c.Pull(ctx, "logical.example/apps/app:v1", store.NewMemory())
		if err != nil {
			t.Fatal(err)
		}
		if pulled.Name != "logical.example/apps/app:v1" || pulled.Digest != facts.manifest {
			t.Errorf("pulled %s as %s", pulled.Digest, pulled.Name)
		}
		if origin.Count(http.MethodGet, "/v2/team/app/manifests/v1") != 1 {
			t.Errorf("the rewritten location was not asked: %+v", origin.Records())
		}
		_, err = c.Pull(ctx, "blocked.example/x:v1", store.NewMemory())
		if !errors.Is(err, pullkit.ErrDenied) || !strings.Contains(err.Error(), "blocked") {
			t.Errorf("blocked: err = %v, want ErrDenied naming the block", err)
		}
	})

	t.Run("registries.conf: a short name through an alias and the search list", func(t *testing.T) {
		origin.Reset()
		conf := fmt.Sprintf("unqualified-search-registries = [\"nothing.invalid:1\", %q]\n[aliases]\n\"myapp\" = %q\n", origin.Host(), origin.Host()+"/team/app")
		c := newClient(t, regConf(t, conf))
		pulled, err := c.Pull(ctx, "myapp:v1", store.NewMemory())
		if err != nil {
			t.Fatal(err)
		}
		if pulled.Name != origin.Host()+"/team/app:v1" {
			t.Errorf("alias: named %s", pulled.Name)
		}
		pulled, err = c.Pull(ctx, "team/app:v1", store.NewMemory())
		if err != nil {
			t.Fatal(err)
		}
		if pulled.Name != origin.Host()+"/team/app:v1" {
			t.Errorf("search: named %s", pulled.Name)
		}
	})
}
