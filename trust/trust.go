// Package trust is the verification step of a pull: what a Verifier is asked (a
// Subject: the reference and the digests a pull resolved), what it reads signatures with
// (a Source: the client's own authenticated connection to the registry and its mirrors,
// every read size-capped), and what it answers (a Result, or an *UntrustedError wrapping
// pullkit.ErrUntrusted).
//
// A puller.Client given a Verifier (puller.WithVerifier) calls it in Pull, Inspect,
// Resolve and ResolveAll after the manifests are resolved and verified against their
// digests, and before any config or layer blob is fetched: a refused image costs its
// manifests and its signatures, never a layer byte, and nothing of it is stored.
//
// This package is light on purpose: it depends on nothing but the module's own
// vocabulary, so programs that never verify do not link a cryptography stack. The
// policy engine (containers-policy.json, cosign and Sigstore signatures through
// sigstore-go) is trust/policy; an engine may bring its own Verifier instead.
package trust

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
)

// Verifier decides whether an image may be pulled, before any of its blobs is.
//
// The contract (what puller relies on, and what an implementation must keep):
//   - Verify returns a non-nil *Result and a nil error only when the subject is trusted;
//     a refusal is an error wrapping pullkit.ErrUntrusted (an *UntrustedError naming each
//     requirement unmet and why); a failure to read signatures (network, sizes) that
//     leaves trust undecided is a refusal too, and may also wrap the cause's sentinel
//     (pullkit.ErrUnreachable, …) so that a caller can tell a retry might help.
//   - It reads the registry only through src, and honours ctx: it returns promptly once
//     ctx is done.
//   - It is safe for concurrent use: ResolveAll calls it for several subjects at once.
//   - Its verdict depends only on the subject and what src serves: puller caches an
//     accepted Result per subject for the client's life.
type Verifier interface {
	Verify(ctx context.Context, subject Subject, src Source) (*Result, error)
}

// VerifierFunc adapts a function to a Verifier.
type VerifierFunc func(ctx context.Context, subject Subject, src Source) (*Result, error)

// Verify calls f.
func (f VerifierFunc) Verify(ctx context.Context, subject Subject, src Source) (*Result, error) {
	return f(ctx, subject, src)
}

// Subject is what a verifier is asked about: an image as a pull resolved it.
type Subject struct {
	// Reference is the reference as the caller gave it.
	Reference string
	// Name is the full reference, "registry/repository:tag" or "…@digest", with Docker
	// Hub as "docker.io/…" (what a store names the image by).
	Name string
	// Repository is "registry/repository", e.g. "docker.io/library/alpine".
	Repository string
	// Tag is the tag the reference names, or "" for a reference by digest.
	Tag string
	// Digest is the digest the registry answers to for what the reference names (an
	// index, for a multi-platform tag): what `cosign sign REF` signs.
	Digest digest.Digest
	// MediaType is that manifest's media type.
	MediaType string
	// Manifests are the image manifests the call will use (the platform's, or every
	// platform's), each with its digest, media type and, when an index says, platform.
	// For a reference that names an image manifest it is that manifest alone.
	Manifests []manifest.Descriptor
}

// Digests lists the digests a signature may sign to vouch for the subject: Digest, then
// each image manifest's that differs from it (an index's signature covers its entries by
// digest; a signature on the platform's own manifest covers what is pulled).
func (s Subject) Digests() []digest.Digest {
	out := []digest.Digest{s.Digest}
	for _, m := range s.Manifests {
		if m.Digest != s.Digest {
			out = append(out, m.Digest)
		}
	}
	return out
}

// Document is a manifest as a registry served it, verified against the digest that
// names it (or, read by tag, against the Docker-Content-Digest sent with it).
type Document struct {
	// MediaType is the Content-Type served, without parameters.
	MediaType string
	// Digest is the digest of Raw.
	Digest digest.Digest
	// Raw is the document as served.
	Raw []byte
}

// Source reads what signatures are made of from the registry that served the subject,
// with the client's credentials, mirrors, retries and deadlines. Every read is capped:
// a document or blob over its cap is a *pullkit.TooLargeError, and nothing is read past
// it.
type Source interface {
	// Referrers lists the manifests whose subject is d (the OCI 1.1 referrers API, or its
	// tag schema "<alg>-<hex>" on a registry without the API), keeping only those of
	// artifactType unless it is "". None is an empty list, not an error.
	Referrers(ctx context.Context, d digest.Digest, artifactType string) ([]manifest.Descriptor, error)
	// Manifest fetches the manifest tagOrDigest names in the subject's repository (e.g.
	// cosign's "sha256-<hex>.sig"), verified. A missing tag wraps pullkit.ErrNotFound.
	Manifest(ctx context.Context, tagOrDigest string) (*Document, error)
	// Blob fetches a small blob of the subject's repository (a signature payload, a
	// bundle), verified against desc's digest and size.
	Blob(ctx context.Context, desc manifest.Descriptor) ([]byte, error)
}

// Formats of signatures and attestations.
const (
	// FormatBundle is a Sigstore bundle (application/vnd.dev.sigstore.bundle.v0.3+json)
	// pushed as an OCI 1.1 referrer of the image: cosign 3's default.
	FormatBundle = "bundle"
	// FormatTag is cosign's older storage: a manifest tagged "sha256-<hex>.sig" (or
	// ".att" for attestations) whose layers are the signed payloads, the signature and
	// certificates in their annotations (cosign 2, containers/image's
	// use-sigstore-attachments).
	FormatTag = "tag"
	// FormatDSSEReferrer is an attestation pushed as a referrer whose layers are DSSE
	// envelopes with cosign's annotations (cosign attest --registry-referrers-mode).
	FormatDSSEReferrer = "dsse-referrer"
)

// Result is an accepted verification: what was checked and what vouched for the image.
type Result struct {
	// Subject is what was verified.
	Subject Subject
	// Requirements are the requirements that applied, each with its outcome (all met).
	Requirements []Requirement
	// Signatures are the signatures that met them.
	Signatures []Signature
	// Attestations are the attestations found for the subject and verified (their
	// payloads for the caller to read), when the verifier was asked to look for them.
	Attestations []Attestation
	// Cached is set by puller when the result comes from its cache.
	Cached bool
}

// Summary describes the result in one line for people: what vouched for the image.
func (r *Result) Summary() string {
	if r == nil {
		return "not verified"
	}
	var parts []string
	for _, q := range r.Requirements {
		if q.Signature != nil {
			parts = append(parts, q.Signature.String())
			continue
		}
		s := q.Type
		if q.Scope != "" {
			s += " (scope " + text.Clean(q.Scope, 200) + ")"
		}
		parts = append(parts, s)
	}
	for _, a := range r.Attestations {
		parts = append(parts, "attestation "+text.Clean(a.PredicateType, 200)+" by "+a.Signature.signer())
	}
	if len(parts) == 0 {
		return "accepted"
	}
	return strings.Join(parts, "; ")
}

// Requirement is one requirement of a policy and its outcome.
type Requirement struct {
	// Type is the requirement's type as a policy names it, e.g. "sigstoreSigned",
	// "insecureAcceptAnything", "reject", "signedBy", or a custom verifier's own.
	Type string
	// Scope is the policy scope it came from ("" for a transport's or the policy's
	// default; "default" names the latter).
	Scope string
	// Met says whether it is satisfied.
	Met bool
	// Reason says why it is not (or, when met, what met it), for people.
	Reason string
	// Err is the cause when not met; it may wrap a sentinel of the vocabulary (a network
	// failure while reading signatures: pullkit.ErrUnreachable, …).
	Err error
	// Signature is what met it, for signature requirements.
	Signature *Signature
}

// Signature is a verified signature (or, in an UntrustedError, one that was examined).
type Signature struct {
	// Format is FormatBundle or FormatTag.
	Format string
	// Digest is the manifest digest it signs.
	Digest digest.Digest
	// Artifact is the digest of the manifest that carried it (the referrer, or the
	// ".sig" manifest).
	Artifact digest.Digest
	// Identity is the docker reference the signature claims ("critical.identity" of a
	// simple-signing payload), or "" when it claims none (a bundle names a digest only).
	Identity string
	// KeyID names the public key that verified it ("sha256:<hex of the key's DER>"),
	// for a signature by key.
	KeyID string
	// Certificate identity, for a signature by a Fulcio or PKI certificate: its subject
	// (an email or URI) and OIDC issuer.
	CertSubject, CertIssuer string
	// Tlog is the transparency-log entry that vouched for it, when there is one.
	Tlog *TlogEntry
	// Timestamps are the verified times of signing (log or RFC 3161), if any.
	Timestamps []time.Time
}

func (s *Signature) signer() string {
	if s == nil {
		return "?"
	}
	switch {
	case s.CertSubject != "":
		v := "certificate for " + text.Clean(s.CertSubject, 200)
		if s.CertIssuer != "" {
			v += " issued via " + text.Clean(s.CertIssuer, 200)
		}
		return v
	case s.KeyID != "":
		return "key " + s.KeyID
	}
	return "unknown signer"
}

// String describes the signature for people: signer, format, log entry.
func (s *Signature) String() string {
	if s == nil {
		return "no signature"
	}
	v := "signed by " + s.signer() + " (" + s.Format
	if s.Identity != "" {
		v += ", identity " + text.Clean(s.Identity, 300)
	}
	if s.Tlog != nil {
		v += fmt.Sprintf(", rekor entry %d", s.Tlog.LogIndex)
	}
	return v + ")"
}

// TlogEntry is a transparency-log (Rekor) entry.
type TlogEntry struct {
	// LogID is the log's id (hex of the sha256 of its public key).
	LogID string
	// LogIndex is the entry's index in the log.
	LogIndex int64
	// IntegratedTime is when the log integrated it.
	IntegratedTime time.Time
}

// Attestation is a verified in-toto statement about the subject.
type Attestation struct {
	// PredicateType is the statement's predicate type, e.g.
	// "https://slsa.dev/provenance/v1" or "https://spdx.dev/Document".
	PredicateType string
	// Statement is the in-toto statement as signed (JSON): its subject names the image
	// digest, its predicate is what a vouching service reads.
	Statement []byte
	// Signature is how it was signed (format, signer, log entry).
	Signature Signature
}

// UntrustedError is a refusal: the subject and each requirement that was not met, and
// why. It wraps pullkit.ErrUntrusted (and the sentinels of the requirements' causes,
// such as pullkit.ErrUnreachable when signatures could not be read).
type UntrustedError struct {
	// Reference is the reference as given.
	Reference string
	// Digest is the digest refused.
	Digest digest.Digest
	// Unmet are the requirements not met (at least one).
	Unmet []Requirement
}

func (e *UntrustedError) Error() string {
	var b strings.Builder
	b.WriteString("untrusted: ")
	for i, q := range e.Unmet {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == 8 {
			fmt.Fprintf(&b, "and %d more requirements", len(e.Unmet)-i)
			break
		}
		b.WriteString(text.Clean(q.Type, 100))
		if q.Scope != "" {
			b.WriteString(" (scope " + text.Clean(q.Scope, 200) + ")")
		}
		reason := q.Reason
		if reason == "" && q.Err != nil {
			reason = q.Err.Error()
		}
		if reason != "" {
			b.WriteString(": " + text.Clean(reason, 1500))
		}
	}
	if len(e.Unmet) == 0 {
		b.WriteString("refused")
	}
	return text.OneLine(b.String())
}

// Unwrap returns pullkit.ErrUntrusted and the requirements' causes.
func (e *UntrustedError) Unwrap() []error {
	out := []error{pullkit.ErrUntrusted}
	for _, q := range e.Unmet {
		if q.Err != nil && !errors.Is(q.Err, pullkit.ErrUntrusted) {
			out = append(out, q.Err)
		}
	}
	return out
}

// Refuse returns an *UntrustedError for subject with the unmet requirements given.
func Refuse(subject Subject, unmet ...Requirement) *UntrustedError {
	return &UntrustedError{Reference: subject.Reference, Digest: subject.Digest, Unmet: unmet}
}
