// Package faultproxy is a reverse proxy for tests that stands between a puller and a real
// registry and breaks chosen responses the ways networks and registries break them:
// connections reset or cut midway through a body, error statuses, 429 with Retry-After,
// trickling bodies that stall, wrong bytes, wrong sizes, oversized or malformed
// manifests, lying Content-Types and redirects to another host. It records every request
// so tests can assert what the client asked for (Range, Authorization) and how often.
package faultproxy

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/pullkit/pullkit/pullkittest"
)

// Record is one request the proxy saw.
type Record struct {
	Method, Path, Range string
	// Authorization is the request's Authorization header.
	Authorization string
	// Fault names the fault applied, or "" when the request passed through.
	Fault string
}

// Fault breaks one response: the test kit's Fault, next being the upstream registry.
type Fault = pullkittest.Fault

// Rule applies a Fault to matching requests.
type Rule struct {
	// Method matches the request method; "" matches any.
	Method string
	// PathContains must occur in the request path ("/blobs/", "/manifests/", a digest).
	PathContains string
	// Times is how many matching requests get the fault; 0 means every one.
	Times int
	// Fault is what happens to them.
	Fault Fault

	hits int
}

// Proxy is the fault-injecting reverse proxy. Its zero value is not usable; use New.
type Proxy struct {
	// URL is the proxy's base URL (http://127.0.0.1:port).
	URL    string
	server *httptest.Server
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	rules   []*Rule
	records []Record
	random  *randomFaults
}

// New starts a proxy in front of upstream (a base URL such as http://127.0.0.1:5000).
// Close it when done.
func New(upstream string) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: upstream %q: %w", upstream, err)
	}
	p := &Proxy{rp: httputil.NewSingleHostReverseProxy(u)}
	p.rp.ErrorLog = nil
	p.rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		if r.Context().Err() == nil {
			http.Error(w, "faultproxy upstream: "+err.Error(), http.StatusBadGateway)
		}
	}
	p.server = httptest.NewServer(p)
	p.URL = p.server.URL
	return p, nil
}

// Host is the proxy's host:port, for image references.
func (p *Proxy) Host() string { return strings.TrimPrefix(p.URL, "http://") }

// Close stops the proxy.
func (p *Proxy) Close() {
	p.server.CloseClientConnections()
	p.server.Close()
}

// Add installs rules; the first matching rule with hits left applies.
func (p *Proxy) Add(rules ...*Rule) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, rules...)
}

// Reset removes every rule and record.
func (p *Proxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules, p.records, p.random = nil, nil, nil
}

// Records returns a copy of what the proxy has seen.
func (p *Proxy) Records() []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Record(nil), p.records...)
}

// Count returns how many requests of method had path containing s.
func (p *Proxy) Count(method, s string) int {
	n := 0
	for _, r := range p.Records() {
		if (method == "" || r.Method == method) && strings.Contains(r.Path, s) {
			n++
		}
	}
	return n
}

// ServeHTTP applies the first matching rule, else a random fault when enabled, else
// passes the request through.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	var fault Fault
	for _, rule := range p.rules {
		if (rule.Method == "" || rule.Method == r.Method) && strings.Contains(r.URL.Path, rule.PathContains) &&
			(rule.Times == 0 || rule.hits < rule.Times) {
			rule.hits++
			fault = rule.Fault
			break
		}
	}
	if fault == nil && p.random != nil {
		fault = p.random.pick(r)
	}
	rec := Record{Method: r.Method, Path: r.URL.Path, Range: r.Header.Get("Range"), Authorization: r.Header.Get("Authorization")}
	if fault != nil {
		rec.Fault = fault.Name()
	}
	p.records = append(p.records, rec)
	p.mu.Unlock()
	if fault == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	fault.Apply(w, r, p.rp)
}

// The faults are the test kit's (pullkittest), so that a case tested against the
// in-process registry and one tested against a real registry behind this proxy break
// responses in exactly the same way.
var (
	// ResetAfter sends n bytes of the real body, then resets the connection (TCP RST).
	ResetAfter = pullkittest.ResetAfter
	// TruncateAfter sends n bytes of the real body under the full Content-Length, then
	// closes the connection cleanly (the client sees an unexpected EOF).
	TruncateAfter = pullkittest.TruncateAfter
	// StallAfter sends n bytes of the real body, then nothing for d (for ever when d <= 0)
	// or until the client goes away, then closes the connection.
	StallAfter = pullkittest.StallAfter
	// Status answers with code and the given headers and body instead of asking upstream.
	Status = pullkittest.Status
	// TooManyRequests answers 429 TOOMANYREQUESTS with the given Retry-After.
	TooManyRequests = pullkittest.TooManyRequests
	// Rewrite passes the request upstream and lets fn change the response body and
	// headers.
	Rewrite = pullkittest.Rewrite
	// CorruptByte flips one byte in the middle of the real body (same size, wrong digest).
	CorruptByte = pullkittest.CorruptByte
	// ExtraBytes appends n bytes to the real body (wrong size).
	ExtraBytes = pullkittest.ExtraBytes
	// ContentType keeps the real body but serves it as contentType.
	ContentType = pullkittest.ContentType
	// RedirectTo answers 307 to the same path on another server (base URL), as
	// registries do for blob storage.
	RedirectTo = pullkittest.RedirectTo
)

// Body replaces the response with body served as contentType (malformed JSON, a
// manifest larger than any cap, a document whose Content-Type lies).
func Body(name, contentType string, body []byte) Fault {
	return Rewrite(name, func(_ []byte, h http.Header) []byte {
		h.Set("Content-Type", contentType)
		h.Del("Docker-Content-Digest")
		return body
	})
}

// Kind is a kind of fault EnableRandom may inject.
type Kind int

// The kinds of random fault.
const (
	// KindReset resets the connection after a random prefix (< 4 KiB) of the body.
	KindReset Kind = iota
	// KindTruncate closes the connection cleanly after a random prefix (< 4 KiB) of a
	// body sent under its full Content-Length.
	KindTruncate
	// KindStatus500 answers 500 Internal Server Error.
	KindStatus500
	// KindStatus503 answers 503 Service Unavailable.
	KindStatus503
	// KindTooManyRequests answers 429 with Retry-After: 0.
	KindTooManyRequests
	// KindCorrupt flips one byte of the body (same size, wrong digest): the only kind a
	// client cannot recover from by asking again, unless it does ask again.
	KindCorrupt
	// KindStall sends a random prefix (< 4 KiB) of the body, then nothing until the client
	// gives up (or a minute passes): what its idle deadline must catch. It is not in
	// AllKinds, so that the seeds of soaks written before it replay as they did.
	KindStall
)

// AllKinds are the kinds EnableRandom injects when given none, in this order.
var AllKinds = []Kind{KindReset, KindTruncate, KindStatus500, KindStatus503, KindTooManyRequests, KindCorrupt}

// RecoverableKinds are the faults a retrying, resuming client gets through: every kind
// but KindCorrupt.
var RecoverableKinds = []Kind{KindReset, KindTruncate, KindStatus500, KindStatus503, KindTooManyRequests}

// randomFaults injects faults into a fraction of blob and manifest requests.
type randomFaults struct {
	rng   *rand.Rand
	rate  float64
	kinds []Kind
}

// EnableRandom makes a fraction rate of the requests that no rule matches (except the
// /v2/ ping) fail with one of kinds, chosen by a seeded generator so that a failing soak
// can be replayed (given the same order of requests). With no kinds it draws from
// AllKinds: reset midway, truncation, 500, 503, 429 (Retry-After: 0) or a corrupt byte.
func (p *Proxy) EnableRandom(seed uint64, rate float64, kinds ...Kind) {
	if len(kinds) == 0 {
		kinds = AllKinds
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.random = &randomFaults{
		rng:   rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		rate:  rate,
		kinds: append([]Kind(nil), kinds...),
	}
}

func (rf *randomFaults) pick(r *http.Request) Fault {
	if r.URL.Path == "/v2/" || rf.rng.Float64() >= rf.rate {
		return nil
	}
	switch rf.kinds[rf.rng.IntN(len(rf.kinds))] {
	case KindReset:
		return ResetAfter(rf.rng.Int64N(4096))
	case KindTruncate:
		return TruncateAfter(rf.rng.Int64N(4096))
	case KindStatus500:
		return Status(http.StatusInternalServerError, nil, "")
	case KindStatus503:
		return Status(http.StatusServiceUnavailable, nil, "")
	case KindTooManyRequests:
		return TooManyRequests("0")
	case KindStall:
		return StallAfter(rf.rng.Int64N(4096), time.Minute)
	default:
		return CorruptByte()
	}
}
