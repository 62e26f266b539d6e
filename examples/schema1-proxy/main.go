// Command schema1-proxy fronts a registry for clients that only understand Docker schema
// 1 (Docker before 1.10, old tooling). A client whose Accept header names no schema 2,
// list or OCI type and that asks for a manifest by tag gets a signed schema 1 rewrite of
// the image (linux/amd64 for a list or index; 404 when it has none), made with pullkit's
// manifest.ToSchema1. Everything else, including every request by digest, passes through
// unchanged: a rewrite has a new digest, so asking by digest must get the original bytes.
//
//	schema1-proxy --upstream http://127.0.0.1:5000 [--listen 127.0.0.1:5001] [--key key.pem]
//
// The signing key is an EC or RSA private key in PEM (PKCS#8, SEC 1 or PKCS#1); without
// one an ephemeral P-256 key is made at start-up, as the distribution registry does.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"os"
	"time"
)

func main() {
	upstream := flag.String("upstream", "", "registry base URL, e.g. http://127.0.0.1:5000")
	listen := flag.String("listen", "127.0.0.1:5001", "address to listen on")
	keyFile := flag.String("key", "", "PEM private key to sign schema 1 rewrites (default: ephemeral)")
	flag.Parse()
	if err := run(*upstream, *listen, *keyFile); err != nil {
		fmt.Fprintln(os.Stderr, "schema1-proxy:", err)
		os.Exit(1)
	}
}

func run(upstream, listen, keyFile string) error {
	u, err := url.Parse(upstream)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("--upstream %q: want a base URL such as http://127.0.0.1:5000", upstream)
	}
	key, err := loadKey(keyFile)
	if err != nil {
		return err
	}
	p := NewProxy(u, key)
	srv := &http.Server{Addr: listen, Handler: p, ReadHeaderTimeout: 30 * time.Second}
	log.Printf("schema1-proxy: %s -> %s", listen, u)
	return srv.ListenAndServe()
}

// loadKey reads a PEM private key, or makes an ephemeral P-256 key when path is "".
func loadKey(path string) (crypto.Signer, error) {
	if path == "" {
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("--key %s: no PEM block", path)
	}
	var k any
	if k, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if k, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("--key %s: not a PKCS#8, SEC 1 or PKCS#1 private key: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("--key " + path + ": not a signing key")
	}
	return signer, nil
}
