package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit/puller"
)

// networkFlags are the flags of the network users have (issue 18): their hosts
// directory, registries.conf, auth file, TLS files, proxy, and --plan.
type networkFlags struct {
	hostsDir, registriesConf, authFile string
	tlsCA, tlsCert, tlsKey             string
	insecure                           stringList
	proxy                              string
	creds                              string
	plan                               bool
}

// stringList is a flag that may be given several times.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// flagAdder is what registers a flag: a --help group, or a flag.FlagSet.
type flagAdder interface {
	StringVar(p *string, name, value, usage string)
	BoolVar(p *bool, name string, value bool, usage string)
	Var(v flag.Value, name, usage string)
}

// register adds the flags to fs (the "Registries" group of --help).
func (n *networkFlags) register(fs flagAdder) {
	fs.StringVar(&n.hostsDir, "hosts-dir", "", "read containerd's/Docker's hosts directory `DIR` (DIR/<host[:port]>/hosts.toml, DIR/_default, certs.d files)")
	fs.StringVar(&n.registriesConf, "registries-conf", "", "read containers-registries.conf `FILE` (version 2) and its FILE.d drop-ins: mirrors, rewrites, blocked and insecure registries, short names")
	fs.StringVar(&n.authFile, "auth-file", "", "read credentials from `FILE` (containers-auth.json or docker config.json; default $REGISTRY_AUTH_FILE, then docker's)")
	fs.StringVar(&n.tlsCA, "tls-ca", "", "trust the root CAs in the PEM `FILE`, besides the system's, for every registry")
	fs.StringVar(&n.tlsCert, "tls-cert", "", "offer the client certificate in the PEM `FILE` (mutual TLS), with --tls-key")
	fs.StringVar(&n.tlsKey, "tls-key", "", "the private key (PEM `FILE`) of --tls-cert")
	fs.Var(&n.insecure, "insecure-registry", "DANGEROUS: speak to `HOST[:PORT]` with TLS unverified, or plain HTTP when it has no TLS (repeatable)")
	fs.StringVar(&n.proxy, "proxy", "", "send every request through the proxy `URL` (default: HTTPS_PROXY, HTTP_PROXY, NO_PROXY; \"none\" for none)")
	fs.StringVar(&n.creds, "creds", "", "plain credentials, `USER:PASSWORD`, for the reference's registry")
	fs.BoolVar(&n.plan, "plan", false, "print which endpoints would be asked, in order, with their TLS, credentials and the file and entry that chose each; send nothing")
}

// check reports a usage error in the flags, or "".
func (n *networkFlags) check() string {
	switch {
	case (n.tlsCert == "") != (n.tlsKey == ""):
		return "--tls-cert and --tls-key go together"
	case n.creds != "" && !strings.Contains(n.creds, ":"):
		return "--creds wants USER:PASSWORD"
	}
	if n.proxy != "" && n.proxy != "none" {
		if u, err := url.Parse(n.proxy); err != nil || u.Host == "" {
			return fmt.Sprintf("--proxy %q: want a URL such as http://proxy.example:3128", n.proxy)
		}
	}
	return ""
}

// options turns the flags into client options; ref names the registry --creds is for.
func (n *networkFlags) options(ref string) ([]puller.Option, error) {
	var out []puller.Option
	if n.hostsDir != "" {
		out = append(out, puller.WithHostsDir(n.hostsDir))
	}
	if n.registriesConf != "" {
		out = append(out, puller.WithRegistriesConf(n.registriesConf))
	}
	if n.authFile != "" {
		out = append(out, puller.WithAuthFile(n.authFile))
	}
	if n.tlsCA != "" {
		b, err := os.ReadFile(n.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		out = append(out, puller.WithRootCAs("", b))
	}
	if n.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(n.tlsCert, n.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		out = append(out, puller.WithClientCertificate("", cert))
	}
	for _, h := range n.insecure {
		out = append(out, puller.WithInsecureRegistry(h))
	}
	switch n.proxy {
	case "":
	case "none":
		out = append(out, puller.WithProxy(nil))
	default:
		u, _ := url.Parse(n.proxy)
		out = append(out, puller.WithProxy(http.ProxyURL(u)))
	}
	if n.creds != "" && ref != "" {
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, err
		}
		user, pass, _ := strings.Cut(n.creds, ":")
		out = append(out, puller.WithCredentials(r.Context().RegistryStr(), puller.Credential{Username: user, Password: pass}))
	}
	return out, nil
}
