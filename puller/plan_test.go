package puller_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
)

// TestPlanRegistriesConf: Plan names, per endpoint, the file and table that chose it,
// follows pull-from-mirror for tags and digests, and says which host is insecure.
func TestPlanRegistriesConf(t *testing.T) {
	conf := writeFileTB(t, t.TempDir(), "registries.conf", []byte(`unqualified-search-registries = ["quay.io", "docker.io"]
[[registry]]
prefix = "quay.io/team"
location = "internal.example/quay-team"
[[registry.mirror]]
location = "mirror.example/team"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "cache.example:5000/team"
insecure = true
`))
	c := newClient(t, puller.WithRegistriesConf(conf), puller.WithProxy(nil))
	plan, err := c.Plan("team/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, e := range plan.Endpoints {
		urls = append(urls, e.URL)
	}
	want := []string{"https://cache.example:5000/v2/team/app", "https://internal.example/v2/quay-team/app", "https://index.docker.io/v2/team/app"}
	if strings.Join(urls, " ") != strings.Join(want, " ") {
		t.Fatalf("tag plan %v, want %v\n%s", urls, want, plan)
	}
	e := plan.Endpoints[0]
	if !e.Mirror || e.Name != "quay.io/team/app:v1" || !strings.Contains(e.Source, conf) || !strings.Contains(e.Source, `prefix "quay.io/team"`) ||
		!strings.Contains(e.Source, "unqualified-search-registries") || !strings.Contains(e.Scheme, "insecure") || !strings.Contains(e.TLS, "SKIPPED") {
		t.Errorf("mirror endpoint %+v", e)
	}
	if e := plan.Endpoints[2]; e.Name != "docker.io/team/app:v1" || e.Mirror {
		t.Errorf("second search registry: %+v", e)
	}
	plan, err = c.Plan("quay.io/team/app@sha256:" + strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Endpoints) != 3 || plan.Endpoints[0].URL != "https://mirror.example/v2/team/app" {
		t.Errorf("digest plan:\n%s", plan)
	}
	if !strings.Contains(plan.String(), "chosen by:") {
		t.Errorf("String():\n%s", plan)
	}
}

// TestNetworkOptionsRefused: options that cannot work together or hold nothing usable
// are refused when the client is made.
func TestNetworkOptionsRefused(t *testing.T) {
	ca := regtest.NewCA(t, "options CA")
	if _, err := puller.New(puller.WithRootCAs("", ca.CertPEM)); err != nil {
		t.Fatalf("a real CA refused: %v", err)
	}
	for name, opts := range map[string][]puller.Option{
		"WithTransport and WithRootCAs": {puller.WithTransport(http.DefaultTransport), puller.WithRootCAs("", ca.CertPEM)},
		"WithTransport and WithProxy":   {puller.WithTransport(http.DefaultTransport), puller.WithProxy(nil)},
		"WithRootCAs without PEM":       {puller.WithRootCAs("", []byte("not pem"))},
		"missing auth file":             {puller.WithAuthFile("/nonexistent/auth.json")},
		"missing registries.conf":       {puller.WithRegistriesConf("/nonexistent/registries.conf")},
		"bad mirror timeouts":           {puller.WithMirrorTimeouts(puller.MirrorTimeouts{})},
		"empty hosts dir":               {puller.WithHostsDir("")},
	} {
		if _, err := puller.New(opts...); !errors.Is(err, pullkit.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}
