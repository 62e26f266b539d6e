package puller

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"net/url"

	"golang.org/x/net/http/httpproxy"

	"github.com/pullkit/pullkit"
)

// WithRootCAs trusts the PEM certificates in pem as root CAs, besides the system's, for
// registry host (host[:port]; "" for every host the client connects to, token servers
// and blob storage included). Repeated calls add.
func WithRootCAs(host string, pem []byte) Option {
	return func(c *Client) error {
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return &pullkit.InvalidError{What: "option WithRootCAs", Reason: "no PEM certificate"}
		}
		return c.addTLS("option WithRootCAs", host, &hostProfile{roots: [][]byte{pem}, caFiles: []string{""}})
	}
}

// WithClientCertificate offers cert for mutual TLS to registry host (host[:port]; "" for
// every host). Load it with tls.LoadX509KeyPair.
func WithClientCertificate(host string, cert tls.Certificate) Option {
	return func(c *Client) error {
		if len(cert.Certificate) == 0 || cert.PrivateKey == nil {
			return &pullkit.InvalidError{What: "option WithClientCertificate", Reason: "a certificate and its private key are required"}
		}
		return c.addTLS("option WithClientCertificate", host, &hostProfile{certs: []tls.Certificate{cert}, certFiles: []string{""}})
	}
}

func (c *Client) addTLS(what, host string, p *hostProfile) error {
	c.tlsOptions = true
	if host == "" {
		c.allHosts = c.allHosts.merge(p)
		return nil
	}
	h, err := normHost(host, what)
	if err != nil {
		return err
	}
	if c.tlsByHost == nil {
		c.tlsByHost = map[string]*hostProfile{}
	}
	if old := c.tlsByHost[h]; old != nil {
		p = old.merge(p)
	}
	c.tlsByHost[h] = p
	return nil
}

// WithProxy sets the proxy of every request, as http.Transport.Proxy does (e.g.
// http.ProxyURL(u)); nil for none. Without it, the proxy comes from the environment
// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY and their lower-case forms, as Go's
// http.ProxyFromEnvironment reads them), read when the client is made. Loopback
// registries are never proxied from the environment. A proxy the user configured is
// trusted even on a loopback address; every address the client resolves itself keeps
// the rule that no registry elsewhere sends it to loopback or link-local addresses.
func WithProxy(proxy func(*http.Request) (*url.URL, error)) Option {
	return func(c *Client) error {
		c.proxy = proxy
		c.proxySet = true
		return nil
	}
}

// envProxy reads the proxy settings of the environment now (net/http's
// ProxyFromEnvironment reads them once per process).
func envProxy() func(*http.Request) (*url.URL, error) {
	cfg := httpproxy.FromEnvironment()
	if cfg.HTTPProxy == "" && cfg.HTTPSProxy == "" {
		return nil
	}
	fn := cfg.ProxyFunc()
	return func(req *http.Request) (*url.URL, error) { return fn(req.URL) }
}
