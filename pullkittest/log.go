package pullkittest

import (
	"errors"
	"sync/atomic"
)

// Route is the kind of endpoint a request asked for. Fault rules and counters select
// requests by it.
type Route int

// The routes of the registry, its storage server and its token server.
const (
	// RouteAny matches every route in a Match; no request has it.
	RouteAny Route = iota
	// RoutePing is GET or HEAD /v2/.
	RoutePing
	// RouteManifest is /v2/<name>/manifests/<tag or digest>.
	RouteManifest
	// RouteBlob is /v2/<name>/blobs/<digest>, on the registry or on its storage server.
	RouteBlob
	// RouteTags is /v2/<name>/tags/list.
	RouteTags
	// RouteReferrers is /v2/<name>/referrers/<digest>.
	RouteReferrers
	// RouteToken is a request to the token realm.
	RouteToken
	// RouteOther is any other path (uploads, garbage).
	RouteOther
	// RouteCatalog is /v2/_catalog.
	RouteCatalog
)

// String names the route as the constants do, without the prefix ("manifest").
func (r Route) String() string {
	switch r {
	case RouteAny:
		return "any"
	case RoutePing:
		return "ping"
	case RouteManifest:
		return "manifest"
	case RouteBlob:
		return "blob"
	case RouteTags:
		return "tags"
	case RouteReferrers:
		return "referrers"
	case RouteToken:
		return "token"
	case RouteCatalog:
		return "catalog"
	}
	return "other"
}

// Request is one request the registry (or its storage or token server) received, as
// the request log keeps it, so a test can assert what a client asked for and how often.
type Request struct {
	// Host is the Host the client sent: Registry.Host(), or the storage or token
	// server's localhost:port.
	Host string
	// Route, Repo and Ref say what was asked for: Ref is the tag or digest in the path
	// (empty for the ping, tags/list and token requests); for a token request, Repo is
	// the repository of the first repository scope.
	Route     Route
	Repo, Ref string
	// Method, Path and Query are the request line's.
	Method, Path, Query string
	// Range and Accept are the request's headers ("" when absent; several Accept
	// headers are joined with ", ").
	Range, Accept string
	// Authorization is the request's Authorization header, "" when it sent none.
	Authorization string
	// Status is the status the response started with, 0 while (or if) none was sent.
	// A fault that cuts a body after its headers leaves the status those headers had.
	Status int
	// Bytes counts the body bytes written to the connection.
	Bytes int64
	// Fault names the fault applied, "" when the request was served as it is.
	Fault string
}

// Match selects requests, for fault rules and for Count. A zero field matches anything.
type Match struct {
	// Method is the request method ("GET", "HEAD").
	Method string
	// Route is the kind of endpoint.
	Route Route
	// Repo is the repository name.
	Repo string
	// Ref is the tag or digest in the path.
	Ref string
	// Host is the Host the request named: to single out the storage server, give
	// strings.TrimPrefix(r.StorageURL(), "http://").
	Host string
}

func (m Match) matches(rec Request) bool {
	return (m.Host == "" || m.Host == rec.Host) &&
		(m.Method == "" || m.Method == rec.Method) &&
		(m.Route == RouteAny || m.Route == rec.Route) &&
		(m.Repo == "" || m.Repo == rec.Repo) &&
		(m.Ref == "" || m.Ref == rec.Ref)
}

// Rule applies a Fault to some of the requests a Match selects: counting the matching
// requests from 1 in the order they arrive, those from the Nth on, Times of them (every
// one when Times is 0). Keep the pointer to read Hits.
type Rule struct {
	Match
	// Nth is the first matching request that gets the fault; 0 and 1 both mean the
	// first.
	Nth int
	// Times is how many matching requests get the fault; 0 means all from Nth on.
	Times int
	// Fault is what happens to them.
	Fault Fault

	seen, hits atomic.Int64
}

func (rule *Rule) check() error {
	switch {
	case rule == nil:
		return errors.New("nil rule")
	case rule.Fault == nil:
		return errors.New("rule has no Fault")
	case rule.Nth < 0 || rule.Times < 0:
		return errors.New("rule has a negative Nth or Times")
	}
	return nil
}

// take counts a request against the rule and reports whether the rule applies to it.
// The registry calls it under its lock, so counting follows arrival order.
func (rule *Rule) take(rec Request) bool {
	if !rule.matches(rec) {
		return false
	}
	n := rule.seen.Add(1)
	first := int64(max(rule.Nth, 1))
	if n < first || (rule.Times > 0 && n >= first+int64(rule.Times)) {
		return false
	}
	rule.hits.Add(1)
	return true
}

// Hits is how many requests the rule has applied its fault to.
func (rule *Rule) Hits() int { return int(rule.hits.Load()) }

// Inject adds fault rules; for each request the first rule (in the order added) that
// applies to it decides its fault. It panics on a rule without a Fault.
func (r *Registry) Inject(rules ...*Rule) {
	for _, rule := range rules {
		if err := rule.check(); err != nil {
			panic("pullkittest: Inject: " + err.Error())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules = append(r.rules, rules...)
}

// ClearFaults removes every fault rule.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rules = nil
}

// Requests returns a copy of the request log, in arrival order. The log keeps every
// request until ResetRequests; a long-lived registry (a demo) should reset it now and
// then.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Request, len(r.reqs))
	for i, rec := range r.reqs {
		out[i] = *rec
	}
	return out
}

// Count is how many logged requests m matches: the round trips a client made.
func (r *Registry) Count(m Match) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.reqs {
		if m.matches(*rec) {
			n++
		}
	}
	return n
}

// ResetRequests empties the request log (fault rules keep their counts).
func (r *Registry) ResetRequests() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = nil
}
