package puller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/store"
)

// TestDialerKeepsRegistriesOffLoopback runs the default transport's dialer with a
// resolver that sends test names to 127.0.0.1 (and resolves nothing else, so no traffic
// leaves loopback): a registry named example.com, which the puller cannot tell from one
// elsewhere, is reached by its own name; the names it sends the puller to, foreign URLs
// and redirects, are refused once they resolve to loopback.
func TestDialerKeepsRegistriesOffLoopback(t *testing.T) {
	var asked atomic.Int64
	witness := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "SECRET-PAGE", http.StatusNotFound)
	}))
	defer witness.Close()
	wport := witness.Listener.Addr().(*net.TCPAddr).Port

	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["` + digest.FromString("d").String() + `"]}}`)
	cd := digest.FromBytes(cfg)
	normal := []byte("a layer behind a redirect")
	nd := digest.FromBytes(normal)
	foreign := digest.FromString("foreign")
	mf := func(l string) []byte {
		return []byte(`{"schemaVersion":2,"mediaType":"` + manifest.MediaTypeOCIManifest + `","config":{"mediaType":"` + manifest.MediaTypeOCIConfig +
			`","digest":"` + cd.String() + `","size":` + fmt.Sprint(len(cfg)) + `},"layers":[` + l + `]}`)
	}
	manifests := map[string][]byte{
		"/v2/foreign/manifests/v1":  mf(`{"mediaType":"` + manifest.MediaTypeDockerForeignLayer + `","digest":"` + foreign.String() + `","size":5,"urls":["https://evil.test:` + fmt.Sprint(wport) + `/layer"]}`),
		"/v2/redirect/manifests/v1": mf(`{"mediaType":"` + manifest.MediaTypeOCILayerGzip + `","digest":"` + nd.String() + `","size":` + fmt.Sprint(len(normal)) + `}`),
	}
	reg := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case manifests[r.URL.Path] != nil:
			w.Header().Set("Content-Type", manifest.MediaTypeOCIManifest)
			_, _ = w.Write(manifests[r.URL.Path])
		case strings.HasSuffix(r.URL.Path, "/blobs/"+cd.String()):
			_, _ = w.Write(cfg)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+nd.String()):
			http.Redirect(w, r, fmt.Sprintf("https://evil.test:%d/blob", wport), http.StatusTemporaryRedirect)
		default:
			http.NotFound(w, r)
		}
	}))
	defer reg.Close()
	rport := reg.Listener.Addr().(*net.TCPAddr).Port

	saved := lookupIPAddr
	defer func() { lookupIPAddr = saved }()
	lookupIPAddr = func(ctx context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "example.com", "evil.test":
			return []net.IPAddr{{IP: net.IPv4(127, 0, 0, 1)}}, nil
		}
		return nil, &net.DNSError{Err: "no such host (test resolver)", Name: host, IsNotFound: true}
	}
	tr := newBaseTransport(DefaultTimeouts())
	tr.TLSClientConfig = &tls.Config{RootCAs: reg.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	c, err := New(WithTransport(tr), WithKeychain(authn.NewMultiKeychain()), WithRetry(pullkit.RetryPolicy{Attempts: 2, MaxRetryAfter: 1}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		repo string
		want error
	}{
		{"foreign", pullkit.ErrNotFound},
		{"redirect", pullkit.ErrDenied},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			ref := fmt.Sprintf("example.com:%d/%s:v1", rport, tc.repo)
			_, err := c.Pull(context.Background(), ref, store.NewMemory())
			t.Logf("error: %v", err)
			if !errors.Is(err, tc.want) || !strings.Contains(fmt.Sprint(err), "sent the puller to 127.0.0.1") || strings.Contains(fmt.Sprint(err), "SECRET") {
				t.Errorf("error %v, want %v refusing 127.0.0.1, quoting nothing", err, tc.want)
			}
			if n := asked.Load(); n != 0 {
				t.Errorf("the loopback service was asked %d times", n)
			}
		})
	}
}

// TestRealmAllowed checks the token realm rule without the network: on a private or
// loopback address only for a registry on one; never plain HTTP elsewhere; never
// link-local.
func TestRealmAllowed(t *testing.T) {
	a := &authTransport{}
	for _, tc := range []struct {
		registry, realm string
		ok              bool
	}{
		{"10.0.0.5:5000", "https://10.0.0.6/token", true},
		{"10.0.0.5:5000", "https://192.168.1.2:8443/token", true},
		{"192.168.1.2", "https://127.0.0.1:5001/token", true},
		{"127.0.0.1:5000", "http://127.0.0.1:5001/token", true},
		{"localhost:5000", "http://127.0.0.1:5001/token", true},
		{"[::1]:5000", "http://[::1]:5001/token", true},
		{"registry.example", "https://auth.example/token", true},
		{"registry.example", "https://10.0.0.6/token", false},
		{"registry.example", "https://127.0.0.1/token", false},
		{"registry.example", "https://localhost/token", false},
		{"registry.example", "http://auth.example/token", false},
		{"10.0.0.5:5000", "https://169.254.169.254/token", false},
		{"10.0.0.5:5000", "ftp://10.0.0.6/token", false},
	} {
		u, err := url.Parse(tc.realm)
		if err != nil {
			t.Fatal(err)
		}
		err = a.realmAllowed(tc.registry, u)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, pullkit.ErrDenied)) {
			t.Errorf("registry %s, realm %s: %v, want allowed %v", tc.registry, tc.realm, err, tc.ok)
		}
	}
}
