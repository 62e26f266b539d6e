package puller

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// Plan says, for one reference, where a pull would go and why, without asking any
// registry: mirror configuration is a support burden because nobody can see it.
type Plan struct {
	// Reference is the reference as given.
	Reference string
	// Endpoints are asked in this order (for a tag, those that may resolve it; then
	// content by digest from those that may pull).
	Endpoints []PlanEndpoint
}

// PlanEndpoint is one endpoint of a Plan.
type PlanEndpoint struct {
	// Name is the reference the endpoint serves, as the store would name the image.
	Name string
	// URL is where the repository's API is, e.g.
	// "https://mirror.example/v2/library/alpine" (the scheme asked first).
	URL string
	// Scheme says how it is spoken to: "https", "https, then http if it does not speak
	// TLS", or "http (WithPlainHTTP)".
	Scheme string
	// Mirror says it stands in for the registry.
	Mirror bool
	// Capabilities are "resolve" (may resolve a tag) and "pull" (may serve content by
	// digest).
	Capabilities []string
	// Use says what this reference asks of it.
	Use string
	// TLS describes the TLS settings: roots, client certificates, verification.
	TLS string
	// Proxy is the proxy the requests go through ("" for none).
	Proxy string
	// Credentials says where its credentials come from, in the order asked.
	Credentials string
	// Connect and FirstByte are its deadlines (connecting; each response's headers).
	Connect, FirstByte time.Duration
	// Headers are the names of the headers its configuration adds.
	Headers []string
	// Source is the file and entry (or option) that chose it.
	Source string
}

// Plan returns where ref would be fetched from, in order, with each endpoint's
// capabilities, TLS settings, credentials source and the configuration that chose it.
// It reads configuration (the hosts directory of ref's registry) but sends nothing.
func (c *Client) Plan(ref string) (*Plan, error) {
	r, err := c.parse(ref)
	if err != nil {
		return nil, err
	}
	eps, err := c.endpoints(ref, r, nil)
	if err != nil {
		return nil, pullkit.Wrap(ref, pullkit.OpPlan, "", err)
	}
	_, byDigest := r.(name.Digest)
	p := &Plan{Reference: ref}
	for _, ep := range eps {
		pe := PlanEndpoint{Name: fullName(ep.logical), Mirror: ep.mirror, Source: ep.source, Headers: headerNames(ep.header)}
		sort.Strings(pe.Headers)
		u := ep.c.scheme(ep.host) + "://" + ep.host + ep.path + "/" + ep.repo
		if ep.ns != "" {
			u += "?ns=" + url.QueryEscape(ep.ns)
		}
		pe.URL = u
		switch {
		case c.plainHTTP:
			pe.Scheme = "http (WithPlainHTTP)"
		case c.base != nil && c.route == nil:
			pe.Scheme = "https, then http if it does not speak TLS and is loopback (the caller's transport)"
		case isLoopbackName(ep.host):
			pe.Scheme = "https, then http if it does not speak TLS (loopback)"
		case c.insecureHost(ep.host) || (ep.profile != nil && ep.profile.insecure):
			pe.Scheme = "https without verification, then http if it does not speak TLS (insecure)"
		default:
			pe.Scheme = "https"
		}
		if ep.resolve {
			pe.Capabilities = append(pe.Capabilities, "resolve")
		}
		if ep.pull {
			pe.Capabilities = append(pe.Capabilities, "pull")
		}
		switch {
		case byDigest && ep.pull:
			pe.Use = "manifests and blobs by digest"
		case !byDigest && ep.resolve:
			pe.Use = "resolve the tag; manifests and blobs by digest"
		case !byDigest && ep.pull:
			pe.Use = "manifests and blobs by digest, once another endpoint resolved the tag"
		default:
			pe.Use = "nothing for this reference"
		}
		if c.route == nil && c.base != nil {
			pe.TLS = "the caller's transport (WithTransport)"
		} else {
			prof := ep.profile
			if prof == nil {
				prof = c.hostProfile(ep.host)
			}
			pe.TLS = describeProfile(prof)
			if why := c.insecureWhy[ep.host]; why != "" && prof != nil && prof.insecure {
				pe.TLS += " [insecure by " + why + "]"
			}
			pe.Proxy = c.planProxy(u)
		}
		pe.Credentials = c.credentialSource(ep.host, ep.repo, false)
		pe.Connect, pe.FirstByte = c.timeouts.Connect, c.timeouts.TLSHandshake+c.timeouts.ResponseHeader
		if ep.connect > 0 {
			pe.Connect = ep.connect
		}
		if ep.firstByte > 0 {
			pe.FirstByte = ep.firstByte
		}
		p.Endpoints = append(p.Endpoints, pe)
	}
	return p, nil
}

// planProxy names the proxy a request to u would go through.
func (c *Client) planProxy(u string) string {
	if c.proxy == nil {
		return ""
	}
	pu, err := url.Parse(u)
	if err != nil {
		return ""
	}
	req := &http.Request{URL: pu, Header: http.Header{}, Method: http.MethodGet}
	proxy, err := c.proxy(req)
	if err != nil {
		return "error: " + text.Clean(err.Error(), 100)
	}
	if proxy == nil {
		return ""
	}
	return redactURL(proxy)
}

// String renders the plan as lines for people.
func (p *Plan) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d endpoint(s), asked in order\n", text.Clean(p.Reference, 300), len(p.Endpoints))
	for i, e := range p.Endpoints {
		kind := "registry"
		if e.Mirror {
			kind = "mirror"
		}
		fmt.Fprintf(&b, "%d. %s %s\n", i+1, kind, text.Clean(e.URL, 300))
		fmt.Fprintf(&b, "   name:         %s\n", text.Clean(e.Name, 300))
		fmt.Fprintf(&b, "   used for:     %s (capabilities: %s)\n", e.Use, strings.Join(e.Capabilities, ", "))
		fmt.Fprintf(&b, "   scheme:       %s\n", e.Scheme)
		fmt.Fprintf(&b, "   tls:          %s\n", text.Clean(e.TLS, 400))
		if e.Proxy != "" {
			fmt.Fprintf(&b, "   proxy:        %s\n", text.Clean(e.Proxy, 200))
		}
		fmt.Fprintf(&b, "   credentials:  %s\n", text.Clean(e.Credentials, 400))
		fmt.Fprintf(&b, "   deadlines:    connect %v, first byte %v\n", e.Connect, e.FirstByte)
		if len(e.Headers) > 0 {
			fmt.Fprintf(&b, "   headers:      %s\n", text.Clean(strings.Join(e.Headers, ", "), 300))
		}
		fmt.Fprintf(&b, "   chosen by:    %s\n", text.Clean(e.Source, 400))
	}
	return b.String()
}
