package main

import (
	"fmt"
	"io"
	"os"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/trust"
	"github.com/pullkit/pullkit/trust/policy"
)

// verifierFor builds the verifier --policy or --verify-key asks for, or nil. --verify-key
// FILE is the policy "every image signed by this key, identity in its own repository"
// (cosign signs a repository, not a tag: matchRepository is what its signatures meet).
func verifierFor(o *options) (trust.Verifier, error) {
	var p *policy.Policy
	switch {
	case o.policy != "":
		var err error
		if p, err = policy.Load(o.policy); err != nil {
			return nil, fmt.Errorf("--policy: %w", err)
		}
	case o.verifyKey != "":
		key, err := os.ReadFile(o.verifyKey)
		if err != nil {
			return nil, fmt.Errorf("--verify-key: %w", err)
		}
		p = &policy.Policy{Default: []policy.Requirement{
			policy.SigstoreSignedByKeys(&policy.IdentityMatch{Type: policy.MatchRepository}, key),
		}}
	default:
		return nil, nil
	}
	v, err := policy.NewVerifier(p)
	if err != nil {
		flag := "--policy"
		if o.verifyKey != "" {
			flag = "--verify-key"
		}
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	return v, nil
}

// printTrust writes what vouched for the image, one line per requirement met.
func printTrust(w io.Writer, r *trust.Result) {
	if r == nil {
		return
	}
	for _, q := range r.Requirements {
		line := "  verified   " + clean(q.Type)
		if q.Scope != "" {
			line += " (scope " + clean(q.Scope) + ")"
		}
		if s := q.Signature; s != nil {
			line += ": " + clean(s.String()) + " for " + clean(string(s.Digest))
			if s.Tlog != nil {
				line += fmt.Sprintf(", logged %s", s.Tlog.IntegratedTime.Format(time.RFC3339))
			}
		}
		fmt.Fprintln(w, line)
	}
	for _, a := range r.Attestations {
		fmt.Fprintln(w, "  attested   "+clean(a.PredicateType)+": "+clean(a.Signature.String()))
	}
}

// jsonVerified is --json's "verified": what was checked and what vouched.
type jsonVerified struct {
	Requirements []jsonRequirement `json:"requirements"`
	Attestations []jsonAttestation `json:"attestations,omitempty"`
	Cached       bool              `json:"cached,omitempty"`
}

type jsonRequirement struct {
	Type      string         `json:"type"`
	Scope     string         `json:"scope,omitempty"`
	Signature *jsonSignature `json:"signature,omitempty"`
}

type jsonSignature struct {
	Format      string         `json:"format"` // "bundle" or "tag"
	Digest      digest.Digest  `json:"digest"`
	Artifact    digest.Digest  `json:"artifact"`
	Identity    string         `json:"identity,omitempty"`
	KeyID       string         `json:"keyID,omitempty"`
	CertSubject string         `json:"certSubject,omitempty"`
	CertIssuer  string         `json:"certIssuer,omitempty"`
	Tlog        *jsonTlogEntry `json:"tlog,omitempty"`
}

type jsonTlogEntry struct {
	LogID          string    `json:"logID"`
	LogIndex       int64     `json:"logIndex"`
	IntegratedTime time.Time `json:"integratedTime"`
}

type jsonAttestation struct {
	PredicateType string        `json:"predicateType"`
	Signature     jsonSignature `json:"signature"`
}

func jsonSig(s *trust.Signature) *jsonSignature {
	if s == nil {
		return nil
	}
	j := &jsonSignature{Format: s.Format, Digest: s.Digest, Artifact: s.Artifact, Identity: s.Identity, KeyID: s.KeyID,
		CertSubject: s.CertSubject, CertIssuer: s.CertIssuer}
	if s.Tlog != nil {
		j.Tlog = &jsonTlogEntry{LogID: s.Tlog.LogID, LogIndex: s.Tlog.LogIndex, IntegratedTime: s.Tlog.IntegratedTime}
	}
	return j
}

// jsonTrust is r in the --json shape (nil without verification).
func jsonTrust(r *trust.Result) *jsonVerified {
	if r == nil {
		return nil
	}
	v := &jsonVerified{Requirements: []jsonRequirement{}, Cached: r.Cached}
	for _, q := range r.Requirements {
		v.Requirements = append(v.Requirements, jsonRequirement{Type: q.Type, Scope: q.Scope, Signature: jsonSig(q.Signature)})
	}
	for _, a := range r.Attestations {
		v.Attestations = append(v.Attestations, jsonAttestation{PredicateType: a.PredicateType, Signature: *jsonSig(&a.Signature)})
	}
	return v
}
