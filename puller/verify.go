package puller

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/trust"
)

// WithVerifier makes the client verify every image it resolves before it fetches any of
// its blobs: Pull, Inspect, Resolve and ResolveAll call v once the manifests are resolved
// and verified against their digests, and a refusal (an error wrapping
// pullkit.ErrUntrusted) fails the call with nothing fetched past the manifests and the
// signatures, and nothing stored. v reads signatures through the client's own
// connection (credentials, mirrors, retries, deadlines, size caps).
//
// Accepted results are kept per subject (full name and digests) for the client's life,
// so a service that resolves the same image again pays nothing; refusals are not kept
// (a signature may be pushed later). Concurrent calls for one subject share one
// verification. PullArtifact is not verified: it fetches what signatures are made of.
//
// The verifier is typically a trust/policy.Verifier (containers-policy.json, cosign and
// Sigstore signatures); any trust.Verifier will do.
func WithVerifier(v trust.Verifier) Option {
	return func(c *Client) error {
		if v == nil {
			return &pullkit.InvalidError{What: "option WithVerifier", Reason: "nil verifier"}
		}
		c.verifier = v
		return nil
	}
}

// WithVerified gives fn the verification result of the call, once the image is accepted
// and before any blob is fetched (not called when the client has no verifier). Resolve
// also returns it in Resolved.Trust.
func WithVerified(fn func(*trust.Result)) PullOption {
	return func(o *pullOptions) error {
		o.verified = fn
		return nil
	}
}

// trustCache keeps accepted verifications for the client's life, and lets concurrent
// verifications of one subject share the work.
type trustCache struct {
	mu     sync.Mutex
	done   map[string]*trust.Result
	flight map[string]*trustFlight
}

type trustFlight struct {
	wait chan struct{}
	res  *trust.Result
	err  error
}

// subjectKey names what a verdict depends on: the name (policies have scopes and
// identities) and every digest.
func subjectKey(s trust.Subject) string {
	var b strings.Builder
	b.WriteString(s.Name)
	for _, d := range s.Digests() {
		b.WriteString("\x00")
		b.WriteString(d.String())
	}
	return b.String()
}

// verify runs the client's verifier on subject with the endpoints eps (the one that
// served the manifests first). It returns (nil, nil) when the client has no verifier.
// Errors are *pullkit.Error values naming the reference, pullkit.OpVerify and the digest.
func (c *Client) verify(ctx context.Context, subject trust.Subject, eps []*endpoint, o *pullOptions) (*trust.Result, error) {
	if c.verifier == nil {
		return nil, nil
	}
	key := subjectKey(subject)
	for {
		c.trust.mu.Lock()
		if res, ok := c.trust.done[key]; ok {
			c.trust.mu.Unlock()
			cp := *res
			cp.Cached = true
			cp.Subject.Reference = subject.Reference
			o.report(&cp)
			return &cp, nil
		}
		if f, ok := c.trust.flight[key]; ok {
			c.trust.mu.Unlock()
			select {
			case <-f.wait:
			case <-ctx.Done():
				return nil, pullkit.Wrap(subject.Reference, pullkit.OpVerify, subject.Digest, ctx.Err())
			}
			if f.err != nil && ctx.Err() == nil && errors.Is(f.err, context.Canceled) {
				continue // the other caller gave up, not this one: verify anew
			}
			if f.err != nil {
				return nil, f.err
			}
			continue // accepted: read it from the cache, as this caller's
		}
		f := &trustFlight{wait: make(chan struct{})}
		if c.trust.flight == nil {
			c.trust.flight = map[string]*trustFlight{}
			c.trust.done = map[string]*trust.Result{}
		}
		c.trust.flight[key] = f
		c.trust.mu.Unlock()

		f.res, f.err = c.runVerifier(ctx, subject, eps)
		c.trust.mu.Lock()
		delete(c.trust.flight, key)
		if f.err == nil {
			c.trust.done[key] = f.res
		}
		c.trust.mu.Unlock()
		close(f.wait)
		if f.err != nil {
			return nil, f.err
		}
		o.report(f.res)
		return f.res, nil
	}
}

func (o *pullOptions) report(res *trust.Result) {
	if o.verified != nil {
		o.verified(res)
	}
}

// runVerifier calls the verifier and puts its answer in the vocabulary: an accepted
// result, an *UntrustedError, or the context's error.
func (c *Client) runVerifier(ctx context.Context, subject trust.Subject, eps []*endpoint) (res *trust.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, trust.Refuse(subject, trust.Requirement{Type: "verifier", Reason: fmt.Sprintf("the verifier panicked: %v", p)})
		}
		if err != nil {
			err = pullkit.Wrap(subject.Reference, pullkit.OpVerify, subject.Digest, err)
		}
	}()
	res, err = c.verifier.Verify(ctx, subject, &trustSource{c: c, eps: eps})
	switch {
	case err != nil && ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)):
		return nil, ctx.Err()
	case err != nil && !errors.Is(err, pullkit.ErrUntrusted):
		// A verifier that could not decide refuses: trust is never the default.
		return nil, trust.Refuse(subject, trust.Requirement{Type: "verifier", Reason: err.Error(), Err: err})
	case err != nil:
		return nil, err
	case res == nil:
		return nil, trust.Refuse(subject, trust.Requirement{Type: "verifier", Reason: "the verifier returned no result"})
	}
	if res.Subject.Digest == "" {
		res.Subject = subject
	}
	return res, nil
}

// subjectOf is what r resolved to: the digest the registry answers to for what it
// names, and the image manifests the call uses.
func subjectOf(ref string, r name.Reference, named manifest.Descriptor, images []manifest.Descriptor) trust.Subject {
	s := trust.Subject{Reference: ref, Name: fullName(r), Repository: repositoryName(r.Context()),
		Digest: named.Digest, MediaType: named.MediaType, Manifests: images}
	if t, ok := r.(name.Tag); ok {
		s.Tag = t.TagStr()
	}
	return s
}

// verifyTree verifies what fetchTree fetched.
func (c *Client) verifyTree(ctx context.Context, ref string, r name.Reference, t *tree, o *pullOptions) error {
	if c.verifier == nil {
		return nil
	}
	named := manifest.Descriptor{MediaType: t.named.MediaType, Digest: t.served, Size: int64(len(t.named.Raw))}
	images := make([]manifest.Descriptor, 0, len(t.images))
	for _, ti := range t.images {
		if ti.entry != nil {
			images = append(images, *ti.entry)
		} else {
			images = append(images, named)
		}
	}
	_, err := c.verify(ctx, subjectOf(ref, r, named, images), t.eps, o)
	return err
}

// trustSource is the trust.Source of one subject: its repository on the endpoints that
// served it, in order.
type trustSource struct {
	c   *Client
	eps []*endpoint
}

// Referrers asks each endpoint in turn until one lists some (a mirror may lack the
// signatures its origin has); none anywhere is an empty list.
func (s *trustSource) Referrers(ctx context.Context, d digest.Digest, artifactType string) ([]manifest.Descriptor, error) {
	if err := d.Validate(); err != nil {
		return nil, &pullkit.InvalidError{What: "digest", Reason: text.Clean(string(d), 140), Err: err}
	}
	var last error
	found := false
	for _, ep := range s.eps {
		list, err := ep.referrersOf(ctx, d, artifactType)
		if err == nil {
			found = true
			if len(list) > 0 {
				return list, nil
			}
			continue
		}
		last = pullkit.WrapDetail("", pullkit.OpReferrers, ep.via(), d, err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
	if found {
		return []manifest.Descriptor{}, nil
	}
	return nil, last
}

// tagPattern is the distribution spec's tag grammar.
var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// Manifest fetches tagOrDigest from the first endpoint that has it, verified.
func (s *trustSource) Manifest(ctx context.Context, tagOrDigest string) (*trust.Document, error) {
	var want digest.Digest
	if strings.Contains(tagOrDigest, ":") {
		d, err := digest.Parse(tagOrDigest)
		if err != nil {
			return nil, &pullkit.InvalidError{What: "digest", Reason: text.Clean(tagOrDigest, 140), Err: err}
		}
		want = d
	} else if !tagPattern.MatchString(tagOrDigest) {
		return nil, &pullkit.InvalidError{What: "tag", Reason: text.Clean(tagOrDigest, 140) + " is not a tag"}
	}
	var last error
	for _, ep := range s.eps {
		doc, err := ep.document2(ctx, tagOrDigest, want)
		if err == nil {
			return doc, nil
		}
		last = pullkit.WrapDetail("", pullkit.OpFetchManifest, "(signature) "+text.Clean(tagOrDigest, 140)+ep.via(), "", err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var he *pullkit.HTTPError
		if !errors.Is(err, pullkit.ErrNotFound) && !errors.Is(err, pullkit.ErrUnreachable) && !(errors.As(err, &he) && he.StatusCode >= 500) {
			break
		}
	}
	return nil, last
}

// document2 fetches a manifest of any kind (an artifact's too) through the size cap and
// checks it against want, or against the Docker-Content-Digest a tag is served with.
func (ep *endpoint) document2(ctx context.Context, ident string, want digest.Digest) (*trust.Document, error) {
	expected := "manifest"
	if want == "" {
		expected = fmt.Sprintf("a manifest for tag %q", ident)
	}
	for attempt := 1; ; attempt++ {
		sv, err := ep.get(ctx, ident, expected)
		if err != nil {
			return nil, err
		}
		check := want
		if check == "" {
			check = sv.contentDigest
		}
		got := digest.FromBytes(sv.raw)
		if check != "" {
			got = check.Algorithm().FromBytes(sv.raw)
			if got != check {
				if attempt < ep.c.retry.Attempts {
					if err := ep.c.sleep(ctx, ep.c.retry.Delay(attempt)); err != nil {
						return nil, err
					}
					continue
				}
				return nil, &pullkit.DigestMismatchError{What: "manifest", Want: check, Got: got}
			}
		}
		return &trust.Document{MediaType: mediaTypeOf(sv.contentType), Digest: got, Raw: sv.raw}, nil
	}
}

// Blob fetches a small blob through the size cap from the first endpoint that has it.
func (s *trustSource) Blob(ctx context.Context, desc manifest.Descriptor) ([]byte, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, &pullkit.InvalidError{What: "digest", Reason: text.Clean(string(desc.Digest), 140), Err: err}
	}
	var last error
	for _, ep := range s.eps {
		raw, err := ep.document(ctx, desc, "signature blob")
		if err == nil {
			return raw, nil
		}
		last = pullkit.WrapDetail("", pullkit.OpFetchBlob, "(signature)"+ep.via(), desc.Digest, err)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		var he *pullkit.HTTPError
		if !errors.Is(err, pullkit.ErrNotFound) && !errors.Is(err, pullkit.ErrUnreachable) && !(errors.As(err, &he) && he.StatusCode >= http.StatusInternalServerError) {
			break
		}
	}
	return nil, last
}
