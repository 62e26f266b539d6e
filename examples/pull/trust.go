package main

import (
	"fmt"
	"io"
	"os"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/trust"
	"github.com/pullkit/pullkit/trust/policy"
)

// trustFlags are --policy and --verify-key (issue 21), and what they verified.
type trustFlags struct {
	policy, verifyKey string
	verified          *trust.Result
}

// register adds the flags to fs (the "Trust" group of --help).
func (f *trustFlags) register(fs flagAdder) {
	fs.StringVar(&f.policy, "policy", "", "verify the image against the containers-policy.json `FILE` before any config or layer is fetched (sigstoreSigned: cosign's bundle and .sig formats, keys, Fulcio and Rekor)")
	fs.StringVar(&f.verifyKey, "verify-key", "", "verify the image is signed (cosign, bundle or .sig) by the public key in the PEM `FILE`, identity in its own repository, before any config or layer is fetched")
}

// check reports a usage error in the flags, or "".
func (f *trustFlags) check(storeCommand bool) string {
	switch {
	case f.policy != "" && f.verifyKey != "":
		return "--policy and --verify-key are one or the other (put the key in the policy)"
	case (f.policy != "" || f.verifyKey != "") && storeCommand:
		return "--policy and --verify-key verify a pull: not with --list, --delete, --gc or --check"
	}
	return ""
}

// options are the client and call options the flags ask for: a verifier, and a
// callback that keeps what it verified for the output.
func (f *trustFlags) options() ([]puller.Option, []puller.PullOption, error) {
	v, err := f.verifier()
	if err != nil || v == nil {
		return nil, nil, err
	}
	return []puller.Option{puller.WithVerifier(v)}, []puller.PullOption{puller.WithVerified(func(r *trust.Result) { f.verified = r })}, nil
}

// verifier builds the verifier --policy or --verify-key asks for, or nil. --verify-key
// FILE is the policy "every image signed by this key, identity in its own repository"
// (cosign signs a repository, not a tag: matchRepository is what its signatures meet).
func (f *trustFlags) verifier() (trust.Verifier, error) {
	var p *policy.Policy
	switch {
	case f.policy != "":
		var err error
		if p, err = policy.Load(f.policy); err != nil {
			return nil, fmt.Errorf("--policy: %w", err)
		}
	case f.verifyKey != "":
		key, err := os.ReadFile(f.verifyKey)
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
		if f.verifyKey != "" {
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
