package puller_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/elazarl/goproxy"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

// tlsRegistry starts distribution v3 serving HTTPS only on 127.0.0.1, with a
// certificate from a CA the test makes for 127.0.0.1, localhost and names; clientCA
// makes it require client certificates from that CA (mutual TLS). It holds team/app:v1.
func tlsRegistry(t *testing.T, ca *regtest.CA, mtls bool, names ...string) (*regtest.Registry, ggcrFacts) {
	t.Helper()
	cert, key := ca.Server(t, append([]string{"127.0.0.1", "localhost"}, names...)...)
	files := regtest.TLSFiles{Cert: cert, Key: key, Client: &tls.Config{RootCAs: ca.Pool()}}
	if mtls {
		files.ClientCAs = []string{ca.CertFile}
		_, _, pair := ca.Client(t, "seeder")
		files.Client.Certificates = []tls.Certificate{pair}
	}
	reg := regtest.Start(t, regtest.WithV3(), regtest.WithTLS(files))
	img := regtest.LayeredImage(t, 2)
	reg.Push(t, "team/app:v1", img)
	return reg, factsOfImage(t, img)
}

// pullVerified pulls ref with c into a fresh layout and checks what it holds.
func pullVerified(t *testing.T, c *puller.Client, ref string, facts ggcrFacts) {
	t.Helper()
	st, err := store.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	img, err := c.Pull(ctx, ref, st)
	if err != nil {
		t.Fatalf("Pull(%s): %v", ref, err)
	}
	if img.Digest != facts.manifest || img.Config.Digest != facts.config {
		t.Errorf("pulled %s (config %s), want %s (config %s)", img.Digest, img.Config.Digest, facts.manifest, facts.config)
	}
	if n := len(verifiedBlobs(t, st)); n < len(facts.layers)+2 {
		t.Errorf("store holds %d blobs, want the manifest, config and %d layers", n, len(facts.layers))
	}
}

// writeFile writes data to dir/name, making dir.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	return writeFileTB(t, dir, name, data)
}

func writeFileTB(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestTLSRegistry pulls from distribution v3 serving HTTPS only on 127.0.0.1 with a
// private CA: refused without the CA (never by falling back to plain HTTP), pulled with
// the CA given by option (for that host, or for every host), by a certs.d directory and
// by a hosts.toml naming it.
func TestTLSRegistry(t *testing.T) {
	ca := regtest.NewCA(t, "pullkit test CA")
	reg, facts := tlsRegistry(t, ca, false)
	ref := reg.Ref("team/app:v1")

	t.Run("without the CA: refused, naming the certificate", func(t *testing.T) {
		_, err := newClient(t).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
		msg := oneLine(t, err)
		if !strings.Contains(msg, ref) || !strings.Contains(msg, "certificate") {
			t.Errorf("error %q does not name %s and the certificate", msg, ref)
		}
	})
	t.Run("CA for the host", func(t *testing.T) {
		pullVerified(t, newClient(t, puller.WithRootCAs(reg.Host, ca.CertPEM)), ref, facts)
	})
	t.Run("CA for every host: HTTPS on 127.0.0.1 with no scheme flag", func(t *testing.T) {
		pullVerified(t, newClient(t, puller.WithRootCAs("", ca.CertPEM)), ref, facts)
	})
	t.Run("a CA for another host does not apply", func(t *testing.T) {
		_, err := newClient(t, puller.WithRootCAs("127.0.0.1:1", ca.CertPEM)).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	})
	t.Run("certs.d directory", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, reg.Host), "ca.crt", ca.CertPEM)
		pullVerified(t, newClient(t, puller.WithHostsDir(dir)), ref, facts)
	})
	t.Run("containerd's host_port_ directory with hosts.toml", func(t *testing.T) {
		dir := t.TempDir()
		h, p, _ := net.SplitHostPort(reg.Host)
		sub := filepath.Join(dir, h+"_"+p+"_")
		writeFile(t, sub, "my-ca.pem", ca.CertPEM)
		writeFile(t, sub, "hosts.toml", fmt.Appendf(nil, "server = \"https://%s\"\nca = \"my-ca.pem\"\n", reg.Host))
		pullVerified(t, newClient(t, puller.WithHostsDir(dir)), ref, facts)
	})
	t.Run("forced plain HTTP: the TLS-only answer is recognised", func(t *testing.T) {
		_, err := newClient(t, puller.WithPlainHTTP(true), puller.WithRootCAs("", ca.CertPEM)).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) || !strings.Contains(err.Error(), "only TLS") {
			t.Fatalf("err = %v, want ErrUnreachable saying the registry speaks only TLS", err)
		}
	})
}

// TestMutualTLS pulls from distribution v3 requiring client certificates
// (http.tls.clientcas): refused without one, pulled with one given by option, by a
// certs.d directory (*.cert + *.key) and by hosts.toml's client pairs.
func TestMutualTLS(t *testing.T) {
	ca := regtest.NewCA(t, "pullkit mTLS CA")
	reg, facts := tlsRegistry(t, ca, true)
	ref := reg.Ref("team/app:v1")
	certFile, keyFile, pair := ca.Client(t, "puller")

	t.Run("without a client certificate: refused", func(t *testing.T) {
		_, err := newClient(t, puller.WithRootCAs("", ca.CertPEM)).Pull(t.Context(), ref, store.NewMemory())
		if err == nil {
			t.Fatal("pulled without a client certificate")
		}
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Errorf("err = %v, want ErrUnreachable", err)
		}
	})
	t.Run("by option", func(t *testing.T) {
		pullVerified(t, newClient(t, puller.WithRootCAs("", ca.CertPEM), puller.WithClientCertificate(reg.Host, pair)), ref, facts)
	})
	t.Run("certs.d: ca.crt, client.cert, client.key", func(t *testing.T) {
		dir := t.TempDir()
		sub := filepath.Join(dir, reg.Host)
		writeFile(t, sub, "ca.crt", ca.CertPEM)
		writeFile(t, sub, "client.cert", readFile(t, certFile))
		writeFile(t, sub, "client.key", readFile(t, keyFile))
		pullVerified(t, newClient(t, puller.WithHostsDir(dir)), ref, facts)
	})
	t.Run("hosts.toml client pair", func(t *testing.T) {
		dir := t.TempDir()
		sub := filepath.Join(dir, reg.Host)
		toml := fmt.Sprintf("server = \"https://%s\"\nca = %q\nclient = [[%q, %q]]\n", reg.Host, ca.CertFile, certFile, keyFile)
		writeFile(t, sub, "hosts.toml", []byte(toml))
		pullVerified(t, newClient(t, puller.WithHostsDir(dir)), ref, facts)
	})
}

// tlsOnlyServer listens on loopback and answers TLS with handler; a connection whose
// first byte is not a TLS handshake gets plain, the answer an HTTPS-only server of some
// kind gives to plain HTTP (it is never handler's).
func tlsOnlyServer(t *testing.T, cfg *tls.Config, handler http.Handler, plain func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan net.Conn)
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	tlsLn := &chanListener{addr: ln.Addr(), conns: conns}
	go func() { _ = srv.Serve(tls.NewListener(tlsLn, cfg)) }()
	var wg sync.WaitGroup
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				br := bufio.NewReader(c)
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				first, err := br.Peek(1)
				_ = c.SetReadDeadline(time.Time{})
				if err != nil {
					c.Close()
					return
				}
				if first[0] == 0x16 {
					conns <- &peekedConn{Conn: c, r: br}
					return
				}
				plain(c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	l.once.Do(func() { l.done = make(chan struct{}) })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error {
	l.once.Do(func() { l.done = make(chan struct{}) })
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}
func (l *chanListener) Addr() net.Addr { return l.addr }

type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// TestHTTPSOnlyAnswersRecognised: a plain-HTTP request to an HTTPS-only server is
// recognised whatever the server answers (nginx's 400 page, a TLS alert, a closed
// connection), and a loopback registry that speaks TLS is pulled with no flag.
func TestHTTPSOnlyAnswersRecognised(t *testing.T) {
	ca := regtest.NewCA(t, "pullkit test CA")
	certFile, keyFile := ca.Server(t, "127.0.0.1")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	reg := newHostileReg(t) // a registry handler, reached here only over TLS
	data := []byte("layer over TLS")
	reg.image("r", "v1", hostileConfig("linux", "amd64", digest.FromBytes(data)), reg.layer(data))
	for name, plain := range map[string]func(net.Conn){
		"nginx 400 page": func(c net.Conn) {
			_, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 62\r\nConnection: close\r\n\r\n<html><h1>The plain HTTP request was sent to HTTPS port</h1>\r\n"))
		},
		"TLS alert": func(c net.Conn) { _, _ = c.Write([]byte{0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46}) },
		"closed":    func(c net.Conn) {},
	} {
		t.Run(name, func(t *testing.T) {
			host := tlsOnlyServer(t, cfg, reg, plain)
			ref := host + "/r:v1"
			// HTTPS first: pulled with no flag.
			hostilePull(t, newClient(t, puller.WithRootCAs("", ca.CertPEM)), ref).verified(t)
			// Forced plain HTTP: the answer is recognised as an HTTPS-only server's.
			_, err := newClient(t, puller.WithPlainHTTP(true), puller.WithRootCAs("", ca.CertPEM)).Pull(t.Context(), ref, store.NewMemory())
			if !errors.Is(err, pullkit.ErrUnreachable) || !strings.Contains(err.Error(), "only TLS") {
				t.Errorf("forced plain HTTP: err = %v, want ErrUnreachable saying the registry speaks only TLS", err)
			}
		})
	}
}

// proxyFor starts an in-process forward proxy (goproxy) on loopback whose dialer alone
// knows the names of routes: it maps each name:port to a loopback address. It counts
// the connections it made for clients.
func proxyFor(t *testing.T, routes map[string]string) (string, *atomic.Int64) {
	t.Helper()
	p := goproxy.NewProxyHttpServer()
	var n atomic.Int64
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		target, ok := routes[addr]
		if !ok {
			return nil, fmt.Errorf("test proxy: no route to %s", addr)
		}
		n.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, target)
	}
	p.Tr = &http.Transport{DialContext: dial, Proxy: nil}
	p.ConnectDial = func(network, addr string) (net.Conn, error) { return dial(context.Background(), network, addr) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), &n
}

// TestForwardProxy pulls from a TLS registry named by a name only a real forward proxy
// (goproxy, in-process) can resolve: the pull succeeds only through it, by option and
// from the environment, and NO_PROXY sends the name past the proxy (where it does not
// resolve).
func TestForwardProxy(t *testing.T) {
	const name = "registry.pullkit-proxy.test"
	ca := regtest.NewCA(t, "pullkit proxy CA")
	reg, facts := tlsRegistry(t, ca, false, name)
	_, port, _ := net.SplitHostPort(reg.Host)
	ref := name + ":" + port + "/team/app:v1"
	// A plain-HTTP registry elsewhere (by name), reached through the same proxy.
	plainReg := regtest.Start(t)
	plainImg := regtest.LayeredImage(t, 1)
	plainReg.Push(t, "team/plain:v1", plainImg)
	_, plainPort, _ := net.SplitHostPort(plainReg.Host)
	plainHost := "plain.pullkit-proxy.test:" + plainPort
	proxyURL, served := proxyFor(t, map[string]string{name + ":" + port: reg.Host, plainHost: plainReg.Host})

	t.Run("by option", func(t *testing.T) {
		served.Store(0)
		u, _ := url.Parse(proxyURL)
		pullVerified(t, newClient(t, puller.WithRootCAs("", ca.CertPEM), puller.WithProxy(http.ProxyURL(u))), ref, facts)
		if served.Load() == 0 {
			t.Error("the proxy served nothing")
		}
	})
	t.Run("a plain-HTTP registry elsewhere: refused unless named insecure", func(t *testing.T) {
		u, _ := url.Parse(proxyURL)
		proxy := puller.WithProxy(http.ProxyURL(u))
		plainRef := plainHost + "/team/plain:v1"
		_, err := newClient(t, proxy).Pull(t.Context(), plainRef, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) || !strings.Contains(err.Error(), "does not speak TLS") {
			t.Fatalf("err = %v, want ErrUnreachable saying it does not speak TLS", err)
		}
		pullVerified(t, newClient(t, proxy, puller.WithInsecureRegistry(plainHost)), plainRef, factsOfImage(t, plainImg))
		conf := writeFile(t, t.TempDir(), "registries.conf", fmt.Appendf(nil, "[[registry]]\nlocation = %q\ninsecure = true\n", plainHost))
		pullVerified(t, newClient(t, proxy, puller.WithRegistriesConf(conf)), plainRef, factsOfImage(t, plainImg))
		hd := t.TempDir()
		writeFile(t, filepath.Join(hd, plainHost), "hosts.toml", fmt.Appendf(nil, "server = \"http://%s\"\n", plainHost))
		pullVerified(t, newClient(t, proxy, puller.WithHostsDir(hd)), plainRef, factsOfImage(t, plainImg))
	})
	t.Run("no proxy: the name does not resolve", func(t *testing.T) {
		_, err := newClient(t, puller.WithRootCAs("", ca.CertPEM), puller.WithProxy(nil)).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
	})
	t.Run("from the environment", func(t *testing.T) {
		served.Store(0)
		t.Setenv("HTTPS_PROXY", proxyURL)
		t.Setenv("NO_PROXY", "")
		t.Setenv("no_proxy", "")
		pullVerified(t, newClient(t, puller.WithRootCAs("", ca.CertPEM)), ref, facts)
		if served.Load() == 0 {
			t.Error("the proxy served nothing")
		}
	})
	t.Run("NO_PROXY honoured", func(t *testing.T) {
		served.Store(0)
		t.Setenv("HTTPS_PROXY", proxyURL)
		t.Setenv("NO_PROXY", ".pullkit-proxy.test")
		_, err := newClient(t, puller.WithRootCAs("", ca.CertPEM)).Pull(t.Context(), ref, store.NewMemory())
		if !errors.Is(err, pullkit.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable (the name resolves only through the proxy)", err)
		}
		if n := served.Load(); n != 0 {
			t.Errorf("NO_PROXY names the registry, yet the proxy served %d connections", n)
		}
	})
}
