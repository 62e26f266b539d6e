// Command tlsfront puts the wire users have in front of the benchmark's registry (issue
// 19): TLS with a certificate from a CA the bench makes (HTTP/1.1 only, or HTTP/2
// offered), and a "CDN" mode in which the registry answers blob GETs with a 307 to a
// second host with a signed URL that expires. It listens and dials on loopback only.
//
//	tlsfront -make-ca DIR
//
// writes DIR/ca.pem (the CA clients trust), DIR/cert.pem and DIR/key.pem (a server
// certificate for 127.0.0.1, ::1 and localhost, signed by it), and exits.
//
//	tlsfront -listen 127.0.0.1:0 -upstream 127.0.0.1:5000 [-tls DIR] [-h2=false]
//	         [-cdn https://127.0.0.1:PORT -ttl 1m [-opaque]]
//
// is the registry's front: a reverse proxy to the registry, over TLS with -tls (HTTP/2
// offered unless -h2=false), plain HTTP without. With -cdn, a blob GET is answered with
// a 307 to the same path on the CDN, signed and valid for -ttl: with the expiry stated in
// the URL (Expires=<Unix seconds>&Signature=…, as CloudFront does), or with -opaque in a
// token the client cannot read (so it learns of the expiry from a 403).
//
//	tlsfront -serve-cdn -listen 127.0.0.1:0 -upstream 127.0.0.1:5000 [-tls DIR] [-h2=false]
//
// is the CDN: it checks the signature and the expiry (403 when either fails), and serves
// the blob from the registry, ranges included, without the registry's credentials.
//
// Both print their address on stdout once they accept. Run it behind bench/wanproxy to
// shape each host's link.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pullkit/pullkit/bench/internal/loopback"
)

// key signs the CDN's URLs; both modes of one bench run share it.
var key = []byte("pullkit bench cdn")

func main() {
	makeCA := flag.String("make-ca", "", "write a CA and a server certificate into DIR, and exit")
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback)")
	upstream := flag.String("upstream", "127.0.0.1:5000", "the registry, host:port (loopback, plain HTTP)")
	tlsDir := flag.String("tls", "", "serve TLS with DIR/cert.pem and DIR/key.pem (plain HTTP without)")
	h2 := flag.Bool("h2", true, "with -tls, offer HTTP/2 (false: HTTP/1.1 only)")
	cdn := flag.String("cdn", "", "redirect blob GETs to this base URL, signed")
	ttl := flag.Duration("ttl", time.Minute, "with -cdn, how long a signed URL is valid")
	opaque := flag.Bool("opaque", false, "with -cdn, keep the expiry in an opaque token rather than in the URL")
	serveCDN := flag.Bool("serve-cdn", false, "be the CDN: check signed URLs and serve the registry's blobs")
	flag.Parse()
	if *makeCA != "" {
		if err := writeCA(*makeCA); err != nil {
			fail(err)
		}
		return
	}
	if !loopback.Addr(*listen) || !loopback.Addr(*upstream) {
		fail(errors.New("-listen and -upstream must be loopback addresses"))
	}
	up := &url.URL{Scheme: "http", Host: *upstream}
	proxy := httputil.NewSingleHostReverseProxy(up)
	proxy.Transport = &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
	var h http.Handler
	switch {
	case *serveCDN:
		h = cdnHandler(proxy)
	case *cdn != "":
		base, err := url.Parse(*cdn)
		if err != nil || !loopback.Addr(base.Host) {
			fail(fmt.Errorf("-cdn %q: want a loopback base URL", *cdn))
		}
		h = frontHandler(proxy, base, *ttl, *opaque)
	default:
		h = proxy
	}
	if p := os.Getenv("TLSFRONT_LOG"); p != "" {
		role := "front"
		if *serveCDN {
			role = "cdn"
		}
		h = logged(h, p, role)
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fail(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second}
	if *tlsDir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(*tlsDir, "cert.pem"), filepath.Join(*tlsDir, "key.pem"))
		if err != nil {
			fail(err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if *h2 {
			srv.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
		} else {
			srv.TLSConfig.NextProtos = []string{"http/1.1"}
			srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		}
		l = tls.NewListener(l, srv.TLSConfig)
	}
	fmt.Println(l.Addr().String())
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fail(err)
	}
}

// frontHandler passes everything to the registry but blob GETs, which it redirects to
// the CDN with a signed URL.
func frontHandler(proxy http.Handler, cdn *url.URL, ttl time.Duration, opaque bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
			proxy.ServeHTTP(w, r)
			return
		}
		// Whole seconds, rounded up: a URL lives ttl at least.
		exp := strconv.FormatInt(time.Now().Add(ttl+time.Second-1).Unix(), 10)
		sig := sign(r.URL.Path, exp)
		q := "Expires=" + exp + "&Signature=" + sig
		if opaque {
			q = "token=" + hex.EncodeToString([]byte(exp)) + "." + sig
		}
		u := *cdn
		u.Path, u.RawQuery = r.URL.Path, q
		http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
	})
}

// cdnHandler serves blob GETs whose URL is signed and not expired.
func cdnHandler(proxy http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		exp, sig := q.Get("Expires"), q.Get("Signature")
		if t := q.Get("token"); t != "" {
			e, s, _ := strings.Cut(t, ".")
			b, err := hex.DecodeString(e)
			if err == nil {
				exp, sig = string(b), s
			}
		}
		n, err := strconv.ParseInt(exp, 10, 64)
		switch {
		case err != nil || !hmac.Equal([]byte(sig), []byte(sign(r.URL.Path, exp))):
			http.Error(w, "<Error><Code>AccessDenied</Code><Message>bad signature</Message></Error>", http.StatusForbidden)
			return
		case time.Now().Unix() >= n:
			http.Error(w, "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", http.StatusForbidden)
			return
		case r.Header.Get("Authorization") != "":
			http.Error(w, "<Error><Code>InvalidArgument</Code><Message>a registry's credentials sent to blob storage</Message></Error>", http.StatusBadRequest)
			return
		}
		r.URL.RawQuery = ""
		proxy.ServeHTTP(w, r)
	})
}

func sign(path, exp string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(path + "\n" + exp))
	return hex.EncodeToString(m.Sum(nil))
}

// writeCA writes a CA and a server certificate for loopback into dir.
func writeCA(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pullkit bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, DNSNames: []string{"localhost"}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		return err
	}
	for name, b := range map[string]*pem.Block{
		"ca.pem":   {Type: "CERTIFICATE", Bytes: caDER},
		"cert.pem": {Type: "CERTIFICATE", Bytes: srvDER},
		"key.pem":  {Type: "EC PRIVATE KEY", Bytes: keyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "tlsfront:", err)
	os.Exit(2)
}

// logged logs every request h answers to the file path (appended; TLSFRONT_LOG, for
// finding which stretch of a blob went twice): when it started, role, protocol, the
// blob's digest (12 hex digits), Range, status, the body bytes written, and how long it
// took.
func logged(h http.Handler, path, role string) http.Handler {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	var mu sync.Mutex
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t := time.Now()
		cw := &countingWriter{ResponseWriter: w, status: http.StatusOK}
		// Logged in a defer: the registry's proxy aborts its handler with a panic
		// (http.ErrAbortHandler) when the client goes away mid-body, and a request
		// cut short is what the log is for.
		defer func() {
			v := recover()
			end := ""
			if v != nil {
				end = " aborted"
			}
			d := r.URL.Path
			if i := strings.LastIndex(d, "sha256:"); i >= 0 && len(d) >= i+19 {
				d = d[i+7 : i+19]
			}
			mu.Lock()
			fmt.Fprintf(f, "%s %s %s %s range=%q status=%d bytes=%d took=%v%s\n", t.Format("15:04:05.000"), role, r.Proto, d, r.Header.Get("Range"), cw.status, cw.n, time.Since(t).Round(time.Millisecond), end)
			mu.Unlock()
			if v != nil {
				panic(v)
			}
		}()
		h.ServeHTTP(cw, r)
	})
}

// countingWriter counts the body bytes written and keeps the status.
type countingWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (c *countingWriter) WriteHeader(code int) {
	c.status = code
	c.ResponseWriter.WriteHeader(code)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.ResponseWriter.Write(b)
	c.n += int64(n)
	return n, err
}

func (c *countingWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
