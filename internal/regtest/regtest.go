// Package regtest starts the real CNCF distribution registry (Debian's
// docker-registry, 2.8) for tests of several pullkit packages, and seeds it with images
// written by real tools: skopeo (schema 1, OCI) and go-containerregistry (schema 2,
// manifest lists, OCI indexes).
//
// The registry listens on a free loopback port, keeps its storage in a temporary
// directory, has schema 1 compatibility enabled (so it signs schema 1 and down-converts
// schema 2 for clients that do not accept it) and optionally requires htpasswd (basic)
// or token (bearer) authentication. It stops when the test ends.
//
// When the docker-registry (or skopeo) binary is absent the test is skipped, unless the
// CI environment variable is set (to anything but "", "false" or "0"), in which case it
// fails: CI installs them, so these tests never silently skip there.
package regtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Credentials accepted by a registry started WithHtpasswd, and by TokenServer.
const (
	User     = "pullkit"
	Password = "s3cret-pullkit"
)

// htpasswdLine is User's bcrypt (cost 4) entry for Password, computed once with
// libxcrypt (python3 crypt.crypt with a $2b$04$ salt): golang.org/x/crypto/bcrypt is not
// in the module graph. The registry checks it; a wrong hash fails every auth test.
const htpasswdLine = User + ":$2b$04$0nU2bsC1si3Cxj7txMRtO.lGX0ifPLdig0Wukd.p9V1cYOs91BcX6\n"

// Registry is a running docker-registry.
type Registry struct {
	// Host is host:port, e.g. "127.0.0.1:40123"; references are Host + "/repo:tag".
	Host string
	// Dir holds the config and the storage.
	Dir string
	// Auth is "", "htpasswd" or "token".
	Auth string
	// V3 says it is distribution v3 (no schema 1) rather than 2.8.
	V3 bool

	// TLS is set for a registry started WithTLS: how a client trusts it (and, with
	// mutual TLS, the client certificate it presents).
	TLS *tls.Config

	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// scheme is "https" for a registry started WithTLS, else "http".
func (r *Registry) scheme() string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// client is an HTTP client that reaches the registry.
func (r *Registry) client() *http.Client {
	if r.TLS == nil {
		return &http.Client{Timeout: 10 * time.Second}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = r.TLS.Clone()
	tr.Proxy = nil
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// Option configures Start.
type Option func(*settings)

type settings struct {
	tls      *TLSFiles
	htpasswd bool
	token    *TokenServer
	proxy    string
	v3       bool
}

// WithV3 runs CNCF distribution v3 (which has no schema 1 at all) instead of Debian's
// 2.8: the binary V3Binary finds, which .ci/run builds from distribution's Go module at
// a pinned version.
func WithV3() Option { return func(s *settings) { s.v3 = true } }

// V3Binary returns distribution v3's registry executable, or "" when it is not built:
// $PULLKIT_DISTRIBUTION_V3, else distribution-v3 on the PATH or in $GOPATH/bin.
func V3Binary() string {
	if p := os.Getenv("PULLKIT_DISTRIBUTION_V3"); p != "" {
		return p
	}
	if p, err := exec.LookPath("distribution-v3"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	return lookPath(filepath.Join(gopath, "bin", "distribution-v3"), "distribution-v3")
}

// TLSFiles are what a registry started WithTLS serves and trusts.
type TLSFiles struct {
	// Cert and Key are the server's certificate and key (PEM files).
	Cert, Key string
	// ClientCAs, when set, makes the registry require client certificates issued by
	// one of these CAs (distribution's http.tls.clientcas: mutual TLS).
	ClientCAs []string
	// Client is how the test's own requests (readiness, seeding) reach it: its roots,
	// and for mutual TLS its client certificate.
	Client *tls.Config
}

// WithTLS makes the registry serve HTTPS only, with f (distribution's http.tls).
func WithTLS(f TLSFiles) Option { return func(s *settings) { s.tls = &f } }

// WithHtpasswd makes the registry require basic auth as User / Password.
func WithHtpasswd() Option { return func(s *settings) { s.htpasswd = true } }

// WithToken makes the registry require bearer tokens issued by ts.
func WithToken(ts *TokenServer) Option { return func(s *settings) { s.token = ts } }

// WithProxy runs the registry as a pull-through cache (distribution's "proxy: remoteurl:")
// of the registry at remoteURL (e.g. "http://127.0.0.1:5000"), the way operators run a
// mirror: it answers pulls from its storage, fetching and keeping what it lacks from
// remoteURL. A pull-through cache refuses pushes, so seed the remote registry instead.
func WithProxy(remoteURL string) Option { return func(s *settings) { s.proxy = remoteURL } }

// Binary returns the docker-registry executable, or "" when it is not installed. The
// environment variable PULLKIT_DOCKER_REGISTRY overrides the search.
func Binary() string {
	if p := os.Getenv("PULLKIT_DOCKER_REGISTRY"); p != "" {
		return p
	}
	return lookPath("/usr/bin/docker-registry", "docker-registry")
}

// SkopeoBinary returns the skopeo executable, or "" when it is not installed.
func SkopeoBinary() string { return lookPath("/usr/bin/skopeo", "skopeo") }

func lookPath(abs, name string) string {
	if st, err := os.Stat(abs); err == nil && !st.IsDir() {
		return abs
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// need skips (or under CI fails) the test when bin is "".
func need(t testing.TB, bin, what string) {
	t.Helper()
	if bin != "" {
		return
	}
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("%s is not installed, and CI=%s: CI must install it (apt-get install docker-registry skopeo)", what, os.Getenv("CI"))
	}
	t.Skipf("%s is not installed (set CI to make this a failure)", what)
}

// Start starts a registry for the test and stops it when the test ends.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	bin := Binary()
	need(t, bin, "docker-registry")
	if s.v3 {
		bin = V3Binary()
		need(t, bin, "distribution v3 (.ci/run builds it as distribution-v3)")
	}
	dir := t.TempDir()
	var lastErr error
	for try := 0; try < 3; try++ {
		r, err := start(t, bin, dir, &s)
		if err == nil {
			return r
		}
		lastErr = err
	}
	t.Fatalf("start docker-registry: %v", lastErr)
	return nil
}

func start(t testing.TB, bin, dir string, s *settings) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1:" + strconv.Itoa(port)
	storage := filepath.Join(dir, "storage-"+strconv.Itoa(port))
	var cfg strings.Builder
	fmt.Fprintf(&cfg, `version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: regtest-secret
`, storage, host)
	if s.tls != nil {
		fmt.Fprintf(&cfg, "  tls:\n    certificate: %s\n    key: %s\n", s.tls.Cert, s.tls.Key)
		if len(s.tls.ClientCAs) > 0 {
			cfg.WriteString("    clientcas:\n")
			for _, ca := range s.tls.ClientCAs {
				fmt.Fprintf(&cfg, "      - %s\n", ca)
			}
		}
	}
	if !s.v3 {
		cfg.WriteString("compatibility:\n  schema1:\n    enabled: true\n")
	}
	r := &Registry{Host: host, Dir: dir, V3: s.v3, log: &lockedBuffer{}, done: make(chan struct{})}
	if s.tls != nil {
		r.TLS = s.tls.Client
		if r.TLS == nil {
			r.TLS = &tls.Config{}
		}
	}
	switch {
	case s.htpasswd:
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(htpasswdLine), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: regtest\n    path: %s\n", pw)
		r.Auth = "htpasswd"
	case s.token != nil:
		bundle := filepath.Join(dir, "token-root.pem")
		if err := os.WriteFile(bundle, s.token.CertPEM, 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			s.token.Realm(), s.token.Service, s.token.Issuer, bundle)
		r.Auth = "token"
	}
	if s.proxy != "" {
		fmt.Fprintf(&cfg, "proxy:\n  remoteurl: %s\n", s.proxy)
	}
	cfgPath := filepath.Join(dir, "config-"+strconv.Itoa(port)+".yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		return nil, err
	}
	r.cmd = exec.Command(bin, "serve", cfgPath)
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	if err := r.waitReady(); err != nil {
		r.stop()
		return nil, fmt.Errorf("%w; log: %s", err, r.log.String())
	}
	t.Cleanup(func() {
		r.stop()
		if t.Failed() {
			t.Logf("docker-registry log:\n%s", r.log.String())
		}
	})
	return r, nil
}

// waitReady polls /v2/ until the registry answers (200, or 401 when it wants auth).
func (r *Registry) waitReady() error {
	client := r.client()
	client.Timeout = 2 * time.Second
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			return fmt.Errorf("docker-registry exited before it was ready")
		default:
		}
		resp, err := client.Get(r.scheme() + "://" + r.Host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("docker-registry on %s not ready after 20s", r.Host)
}

func (r *Registry) stop() {
	select {
	case <-r.done:
		return
	default:
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}

// Ref returns Host + "/" + repoAndTag.
func (r *Registry) Ref(repoAndTag string) string { return r.Host + "/" + repoAndTag }

// Log returns what the registry has printed so far.
func (r *Registry) Log() string { return r.log.String() }

// Get sends an unauthenticated-or-basic GET (User/Password when the registry uses
// htpasswd) to the registry's path with the given Accept header, for tests that need
// to see the registry's own answer.
func (r *Registry) Get(t testing.TB, method, path, accept string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), method, r.scheme()+"://"+r.Host+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if r.Auth == "htpasswd" {
		req.SetBasicAuth(User, Password)
	}
	resp, err := r.client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, buf.Bytes()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer is a bytes.Buffer safe for the registry's output goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
