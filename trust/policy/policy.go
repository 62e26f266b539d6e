// Package policy is pullkit's trust policy engine: containers-policy.json(5) as podman,
// skopeo and CRI-O read it, evaluated for the "docker" transport, with sigstoreSigned
// requirements checked against cosign's two storage formats (the Sigstore bundle pushed
// as an OCI 1.1 referrer, cosign 3's default; and the "sha256-<hex>.sig" tag of
// simple-signing payloads, cosign 2's), by public key, by Fulcio certificate with a
// Rekor log, or by a private PKI. The cryptography (bundles, certificates,
// transparency-log entries, timestamps) is github.com/sigstore/sigstore-go's.
//
// A Verifier built by NewVerifier is a trust.Verifier for puller.WithVerifier. Programs
// that never verify import neither this package nor sigstore-go.
//
// What is supported, and how it differs from containers/image:
//   - requirements insecureAcceptAnything, reject, sigstoreSigned (keyPath, keyPaths,
//     keyData, keyDatas; fulcio with caPath/caData, oidcIssuer, subjectEmail and
//     rekorPublicKeyPath(s)/Data(s); pki with caRootsPath/Data,
//     caIntermediatesPath/Data, subjectEmail, subjectHostname), with signedIdentity
//     matchExact, matchRepoDigestOrExact (the default), matchRepository,
//     exactReference, exactRepository and remapIdentity;
//   - signedBy (GPG and X.509 simple signing) and signedBaseLayer are read but never met:
//     they are refused as unsupported, naming the scope, so a stock policy.json still
//     loads and images under other scopes are evaluated;
//   - scopes of the "docker" transport only (others are read and ignored): the full
//     reference, the repository, each parent namespace, the registry, then "*.domain"
//     wildcards from the most specific, then the transport's "", then "default";
//   - every requirement of the chosen scope must be met; a sigstoreSigned requirement
//     is met by one signature that verifies, signs one of the subject's digests (what
//     the reference names, or the platform's manifest) and whose identity matches;
//   - a bundle names a digest and no docker reference: its identity is taken to be the
//     repository it was found in, at the digest it signs (so matchRepository and, for
//     references by digest, matchRepoDigestOrExact accept it; exactReference of a tag
//     does not). A simple-signing payload's identity is its critical.identity, as
//     cosign writes it (the repository without a tag): matchRepository is what such
//     signatures need, as with containers/image.
package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// MaxPolicySize caps a policy document (containers-policy.json files are a few KiB).
const MaxPolicySize = 4 << 20

// Requirement types.
const (
	TypeInsecureAcceptAnything = "insecureAcceptAnything"
	TypeReject                 = "reject"
	TypeSignedBy               = "signedBy"
	TypeSignedBaseLayer        = "signedBaseLayer"
	TypeSigstoreSigned         = "sigstoreSigned"
)

// Identity match types (signedIdentity).
const (
	MatchExact             = "matchExact"
	MatchRepoDigestOrExact = "matchRepoDigestOrExact"
	MatchRepository        = "matchRepository"
	ExactReference         = "exactReference"
	ExactRepository        = "exactRepository"
	RemapIdentity          = "remapIdentity"
)

// Policy is a containers-policy.json document: the default requirements, and per
// transport the requirements of each scope. Build one in Go or with Parse / Load.
type Policy struct {
	// Default applies where no scope of the transport matches; it must not be empty.
	Default []Requirement `json:"default"`
	// Transports maps a transport ("docker" is the one pullkit evaluates) to its scopes:
	// "" is the transport's default, otherwise a registry, repository, reference or
	// "*.domain" wildcard, each to its requirements.
	Transports map[string]map[string][]Requirement `json:"transports,omitempty"`
}

// Requirement is one requirement of a policy, as containers-policy.json(5) writes it.
// Type selects which other fields apply.
type Requirement struct {
	Type string `json:"type"`

	// signedBy (read, refused at evaluation as unsupported).
	KeyType string `json:"keyType,omitempty"`

	// sigstoreSigned: public keys (PEM), at most one of the four.
	KeyPath  string   `json:"keyPath,omitempty"`
	KeyPaths []string `json:"keyPaths,omitempty"`
	KeyData  []byte   `json:"keyData,omitempty"`
	KeyDatas [][]byte `json:"keyDatas,omitempty"`
	// Fulcio: certificates issued by a Fulcio CA to an OIDC identity (needs a Rekor key).
	Fulcio *Fulcio `json:"fulcio,omitempty"`
	// Rekor public keys (PEM, ECDSA): with keys, a log entry is then required; with
	// Fulcio, always.
	RekorPublicKeyPath  string   `json:"rekorPublicKeyPath,omitempty"`
	RekorPublicKeyPaths []string `json:"rekorPublicKeyPaths,omitempty"`
	RekorPublicKeyData  []byte   `json:"rekorPublicKeyData,omitempty"`
	RekorPublicKeyDatas [][]byte `json:"rekorPublicKeyDatas,omitempty"`
	// PKI: certificates from a private CA (no log).
	PKI *PKI `json:"pki,omitempty"`

	// SignedIdentity says which identity a signature must claim (default
	// matchRepoDigestOrExact). For signedBy too.
	SignedIdentity *IdentityMatch `json:"signedIdentity,omitempty"`

	// signedBaseLayer (read, refused at evaluation as unsupported).
	BaseLayerIdentity *IdentityMatch `json:"baseLayerIdentity,omitempty"`
}

// Fulcio is a sigstoreSigned requirement's Fulcio CA and the identity it certified.
type Fulcio struct {
	CAPath       string `json:"caPath,omitempty"`
	CAData       []byte `json:"caData,omitempty"`
	OIDCIssuer   string `json:"oidcIssuer,omitempty"`
	SubjectEmail string `json:"subjectEmail,omitempty"`
}

// PKI is a sigstoreSigned requirement's private CA and the subject it certified.
type PKI struct {
	CARootsPath         string `json:"caRootsPath,omitempty"`
	CARootsData         []byte `json:"caRootsData,omitempty"`
	CAIntermediatesPath string `json:"caIntermediatesPath,omitempty"`
	CAIntermediatesData []byte `json:"caIntermediatesData,omitempty"`
	SubjectEmail        string `json:"subjectEmail,omitempty"`
	SubjectHostname     string `json:"subjectHostname,omitempty"`
}

// IdentityMatch is a signedIdentity: how the identity a signature claims must relate to
// the reference pulled.
type IdentityMatch struct {
	Type             string `json:"type"`
	DockerReference  string `json:"dockerReference,omitempty"`  // exactReference
	DockerRepository string `json:"dockerRepository,omitempty"` // exactRepository
	Prefix           string `json:"prefix,omitempty"`           // remapIdentity
	SignedPrefix     string `json:"signedPrefix,omitempty"`     // remapIdentity
}

// InsecureAcceptAnything accepts any image.
func InsecureAcceptAnything() Requirement { return Requirement{Type: TypeInsecureAcceptAnything} }

// Reject refuses every image.
func Reject() Requirement { return Requirement{Type: TypeReject} }

// SigstoreSignedByKeys requires a signature by one of the PEM public keys, with the
// identity match given (nil: matchRepoDigestOrExact).
func SigstoreSignedByKeys(identity *IdentityMatch, pemKeys ...[]byte) Requirement {
	return Requirement{Type: TypeSigstoreSigned, KeyDatas: pemKeys, SignedIdentity: identity}
}

// Parse reads a containers-policy.json document, strictly: unknown fields, unknown
// requirement types and inconsistent requirements are errors (a *pullkit.InvalidError),
// as containers/image treats them, so a typo never weakens a policy. Key files are read
// by NewVerifier, not here.
func Parse(raw []byte) (*Policy, error) {
	if len(raw) > MaxPolicySize {
		return nil, &pullkit.TooLargeError{What: "policy", Limit: MaxPolicySize, Size: int64(len(raw))}
	}
	var p Policy
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, invalid("policy", "not a containers-policy.json document", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("policy", "data after the document", nil)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxPolicySize+1))
	if err != nil {
		return nil, err
	}
	p, err := Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", text.Clean(path, 300), err)
	}
	return p, nil
}

func invalid(what, reason string, err error) error {
	return &pullkit.InvalidError{What: what, Reason: reason, Err: err}
}

// Validate checks the policy's structure: a non-empty default, valid docker scopes, and
// each requirement consistent.
func (p *Policy) Validate() error {
	if p == nil || len(p.Default) == 0 {
		return invalid("policy", `"default" must list at least one requirement`, nil)
	}
	if err := validateList(p.Default, "default"); err != nil {
		return err
	}
	transports := make([]string, 0, len(p.Transports))
	for t := range p.Transports {
		transports = append(transports, t)
	}
	sort.Strings(transports)
	for _, t := range transports {
		for scope, reqs := range p.Transports[t] {
			where := fmt.Sprintf("transport %q scope %q", t, scope)
			if t == "docker" {
				if err := validateScope(scope); err != nil {
					return invalid("policy", where, err)
				}
			}
			if len(reqs) == 0 {
				return invalid("policy", where+": no requirements", nil)
			}
			if err := validateList(reqs, where); err != nil {
				return err
			}
		}
	}
	return nil
}

func validateList(reqs []Requirement, where string) error {
	for i := range reqs {
		if err := reqs[i].validate(); err != nil {
			return invalid("policy", fmt.Sprintf("%s, requirement %d", text.Clean(where, 300), i+1), err)
		}
	}
	return nil
}

// sources counts how many of the given sources are set.
func sources(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

func (r *Requirement) validate() error {
	keys := sources(r.KeyPath != "", r.KeyPaths != nil, r.KeyData != nil, r.KeyDatas != nil)
	rekor := sources(r.RekorPublicKeyPath != "", r.RekorPublicKeyPaths != nil, r.RekorPublicKeyData != nil, r.RekorPublicKeyDatas != nil)
	sigstoreFields := keys > 0 || rekor > 0 || r.Fulcio != nil || r.PKI != nil
	switch r.Type {
	case TypeInsecureAcceptAnything, TypeReject:
		if sigstoreFields || r.KeyType != "" || r.SignedIdentity != nil || r.BaseLayerIdentity != nil {
			return fmt.Errorf("%s takes no other fields", r.Type)
		}
	case TypeSignedBy:
		if r.KeyType == "" {
			return errors.New(`signedBy needs "keyType"`)
		}
		if keys != 1 || rekor > 0 || r.Fulcio != nil || r.PKI != nil {
			return errors.New(`signedBy needs exactly one of "keyPath", "keyPaths", "keyData"`)
		}
	case TypeSignedBaseLayer:
		if r.BaseLayerIdentity == nil {
			return errors.New(`signedBaseLayer needs "baseLayerIdentity"`)
		}
	case TypeSigstoreSigned:
		if r.KeyType != "" || r.BaseLayerIdentity != nil {
			return errors.New(`sigstoreSigned takes no "keyType" or "baseLayerIdentity"`)
		}
		if keys > 1 {
			return errors.New(`at most one of "keyPath", "keyPaths", "keyData", "keyDatas"`)
		}
		if rekor > 1 {
			return errors.New(`at most one of "rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData", "rekorPublicKeyDatas"`)
		}
		switch n := sources(keys == 1, r.Fulcio != nil, r.PKI != nil); {
		case n == 0:
			return errors.New(`sigstoreSigned needs one of public keys, "fulcio" or "pki"`)
		case n > 1:
			return errors.New(`sigstoreSigned takes only one of public keys, "fulcio" and "pki"`)
		}
		if (r.KeyPaths != nil && len(r.KeyPaths) == 0) || (r.KeyDatas != nil && len(r.KeyDatas) == 0) {
			return errors.New("an empty list of keys")
		}
		if r.Fulcio != nil {
			f := r.Fulcio
			if sources(f.CAPath != "", f.CAData != nil) != 1 {
				return errors.New(`fulcio needs exactly one of "caPath", "caData"`)
			}
			if f.OIDCIssuer == "" || f.SubjectEmail == "" {
				return errors.New(`fulcio needs "oidcIssuer" and "subjectEmail"`)
			}
			if rekor == 0 {
				return errors.New(`fulcio needs a Rekor public key ("rekorPublicKeyPath" or "rekorPublicKeyData")`)
			}
		}
		if r.PKI != nil {
			k := r.PKI
			if sources(k.CARootsPath != "", k.CARootsData != nil) != 1 {
				return errors.New(`pki needs exactly one of "caRootsPath", "caRootsData"`)
			}
			if sources(k.CAIntermediatesPath != "", k.CAIntermediatesData != nil) > 1 {
				return errors.New(`pki takes at most one of "caIntermediatesPath", "caIntermediatesData"`)
			}
			if k.SubjectEmail == "" && k.SubjectHostname == "" {
				return errors.New(`pki needs "subjectEmail" or "subjectHostname"`)
			}
			if rekor > 0 {
				return errors.New("pki takes no Rekor public key")
			}
		}
	case "":
		return errors.New(`no "type"`)
	default:
		return fmt.Errorf("unknown requirement type %q", text.Clean(r.Type, 100))
	}
	for _, m := range []*IdentityMatch{r.SignedIdentity, r.BaseLayerIdentity} {
		if m != nil {
			if err := m.validate(); err != nil {
				return fmt.Errorf("signedIdentity: %w", err)
			}
		}
	}
	return nil
}

func (m *IdentityMatch) validate() error {
	none := m.DockerReference == "" && m.DockerRepository == "" && m.Prefix == "" && m.SignedPrefix == ""
	switch m.Type {
	case MatchExact, MatchRepoDigestOrExact, MatchRepository:
		if !none {
			return fmt.Errorf("%s takes no other fields", m.Type)
		}
	case ExactReference:
		if m.DockerRepository != "" || m.Prefix != "" || m.SignedPrefix != "" {
			return errors.New(`exactReference takes only "dockerReference"`)
		}
		r, err := parseRef(m.DockerReference)
		if err != nil {
			return fmt.Errorf("dockerReference: %w", err)
		}
		if r.nameOnly() {
			return errors.New("dockerReference must have a tag or digest")
		}
	case ExactRepository:
		if m.DockerReference != "" || m.Prefix != "" || m.SignedPrefix != "" {
			return errors.New(`exactRepository takes only "dockerRepository"`)
		}
		if _, err := parseRef(m.DockerRepository); err != nil {
			return fmt.Errorf("dockerRepository: %w", err)
		}
	case RemapIdentity:
		if m.DockerReference != "" || m.DockerRepository != "" {
			return errors.New(`remapIdentity takes only "prefix" and "signedPrefix"`)
		}
		for _, p := range []string{m.Prefix, m.SignedPrefix} {
			if err := validateScope(p); err != nil || p == "" || strings.HasPrefix(p, "*.") || strings.ContainsAny(p, ":@") && !hostPortOnly(p) {
				return fmt.Errorf("prefix %q: must be a registry, namespace or repository", text.Clean(p, 200))
			}
		}
	case "":
		return errors.New(`no "type"`)
	default:
		return fmt.Errorf("unknown signedIdentity type %q", text.Clean(m.Type, 100))
	}
	return nil
}

// hostPortOnly reports whether p's colons are a registry's port only.
func hostPortOnly(p string) bool {
	host, _, _ := strings.Cut(p, "/")
	return !strings.Contains(strings.TrimPrefix(p, host), ":") && !strings.Contains(p, "@")
}

// validateScope checks a docker transport scope: "", "*.domain", a registry (host or
// host:port), a repository or namespace in it, or a full reference with tag or digest.
func validateScope(scope string) error {
	switch {
	case scope == "":
		return nil
	case strings.HasPrefix(scope, "*."):
		d := scope[2:]
		if d == "" || strings.ContainsAny(d, "/:@*") {
			return fmt.Errorf("wildcard scope %q: want *.domain", text.Clean(scope, 200))
		}
		return nil
	case strings.ContainsAny(scope, "*") || strings.Contains(scope, "://"):
		return fmt.Errorf("scope %q is not a registry, repository or reference", text.Clean(scope, 200))
	}
	if !strings.Contains(scope, "/") {
		if _, err := name.NewRegistry(scope, name.StrictValidation); err != nil {
			return fmt.Errorf("scope %q: %w", text.Clean(scope, 200), err)
		}
		return nil
	}
	if _, err := parseRef(scope); err != nil {
		return fmt.Errorf("scope %q: %w", text.Clean(scope, 200), err)
	}
	return nil
}
