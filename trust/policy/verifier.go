package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/trust"
)

// Verifier evaluates a Policy for puller (a trust.Verifier). Build it with NewVerifier;
// it is safe for concurrent use.
type Verifier struct {
	p        Policy
	compiled map[*Requirement]*compiled
	opts     options
}

// Option configures a Verifier.
type Option func(*options)

type options struct {
	attestations  bool
	required      []string
	maxSignatures int
}

// WithAttestations makes the verifier also list the subject's attestations (in-toto
// statements in DSSE envelopes: Sigstore bundles found through referrers, cosign's
// ".att" tag, DSSE referrers), verify each with the key material of the scope's
// sigstoreSigned requirements and against the subject's digest, and return them in
// Result.Attestations with their statements. Each predicate type given (e.g.
// "https://slsa.dev/provenance/v1") must then have at least one verified attestation,
// or the image is refused.
func WithAttestations(requiredPredicateTypes ...string) Option {
	return func(o *options) {
		o.attestations = true
		o.required = append(o.required, requiredPredicateTypes...)
	}
}

// WithMaxSignatures bounds how many signature (and, separately, attestation) candidates
// are examined per digest (default 32): a registry flooded with referrers costs bounded
// time and memory, and refuses rather than reads on.
func WithMaxSignatures(n int) Option {
	return func(o *options) {
		if n > 0 {
			o.maxSignatures = n
		}
	}
}

// compiled is a sigstoreSigned requirement with its keys, CAs and logs loaded.
type compiled struct {
	kind     string // "key", "fulcio", "pki"
	keys     []keyVerifier
	cas      []*root.FulcioCertificateAuthority // fulcio, pki: the trusted roots
	logs     map[string]*root.TransparencyLog
	vopts    []verify.VerifierOption
	certV    *verify.Verifier    // fulcio, pki: with the roots alone
	identity verify.PolicyOption // fulcio: the certificate identity
	pkiCheck func(*x509.Certificate) error
	rekor    bool
}

// certVerifier returns the certificate verifier, with a signature's untrusted
// intermediates added to each root's (they only help build a path to a root).
func (c *compiled) certVerifier(intermediates []*x509.Certificate) (*verify.Verifier, error) {
	if len(intermediates) == 0 {
		return c.certV, nil
	}
	var cas []root.CertificateAuthority
	for _, ca := range c.cas {
		cp := *ca
		cp.Intermediates = append(append([]*x509.Certificate(nil), ca.Intermediates...), intermediates...)
		cas = append(cas, &cp)
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, c.logs)
	if err != nil {
		return nil, err
	}
	return verify.NewVerifier(tr, c.vopts...)
}

// trustedRoot builds the compiled certificate verifier from cas and logs.
func (c *compiled) build() error {
	var cas []root.CertificateAuthority
	for _, ca := range c.cas {
		cas = append(cas, ca)
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01, cas, nil, nil, c.logs)
	if err != nil {
		return err
	}
	c.certV, err = verify.NewVerifier(tr, c.vopts...)
	return err
}

type keyVerifier struct {
	id string // "sha256:<hex of DER>"
	v  *verify.Verifier
}

// NewVerifier validates p, loads every key, CA and log key its sigstoreSigned
// requirements name (files are read now, once), and returns the Verifier. A key that
// cannot be read or parsed is an error here, not a refusal later.
func NewVerifier(p *Policy, opts ...Option) (*Verifier, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	v := &Verifier{p: clonePolicy(p), compiled: map[*Requirement]*compiled{}, opts: options{maxSignatures: 32}}
	for _, o := range opts {
		o(&v.opts)
	}
	var err error
	each := func(reqs []Requirement, where string) {
		for i := range reqs {
			if err != nil || reqs[i].Type != TypeSigstoreSigned {
				continue
			}
			var c *compiled
			if c, err = compile(&reqs[i]); err != nil {
				err = invalid("policy", fmt.Sprintf("%s, requirement %d", where, i+1), err)
				return
			}
			v.compiled[&reqs[i]] = c
		}
	}
	each(v.p.Default, "default")
	for scope, reqs := range v.p.Transports["docker"] {
		each(reqs, fmt.Sprintf("docker scope %q", scope))
	}
	if err != nil {
		return nil, err
	}
	return v, nil
}

// clonePolicy copies p's lists so that the verifier's requirements are its own.
func clonePolicy(p *Policy) Policy {
	out := Policy{Default: append([]Requirement(nil), p.Default...)}
	if d, ok := p.Transports["docker"]; ok {
		out.Transports = map[string]map[string][]Requirement{"docker": {}}
		for s, reqs := range d {
			out.Transports["docker"][s] = append([]Requirement(nil), reqs...)
		}
	}
	return out
}

// load returns the data of one of path, paths, data, datas (at most one is set).
func load(path string, paths []string, data []byte, datas [][]byte) ([][]byte, error) {
	switch {
	case path != "":
		paths = []string{path}
	case data != nil:
		return [][]byte{data}, nil
	case datas != nil:
		return datas, nil
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, nil
}

// KeyID names a public key as results do: "sha256:" and the hex of the sha256 of its
// PKIX DER encoding.
func KeyID(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unknown key"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func compile(r *Requirement) (*compiled, error) {
	c := &compiled{}
	var rekorLogs map[string]*root.TransparencyLog
	rekorPEMs, err := load(r.RekorPublicKeyPath, r.RekorPublicKeyPaths, r.RekorPublicKeyData, r.RekorPublicKeyDatas)
	if err != nil {
		return nil, fmt.Errorf("rekor public key: %w", err)
	}
	if len(rekorPEMs) > 0 {
		c.rekor = true
		rekorLogs = map[string]*root.TransparencyLog{}
		for i, pemData := range rekorPEMs {
			pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemData)
			if err != nil {
				return nil, fmt.Errorf("rekor public key %d: %w", i+1, err)
			}
			if _, ok := pub.(*ecdsa.PublicKey); !ok {
				return nil, fmt.Errorf("rekor public key %d is not ECDSA", i+1)
			}
			der, err := x509.MarshalPKIXPublicKey(pub)
			if err != nil {
				return nil, fmt.Errorf("rekor public key %d: %w", i+1, err)
			}
			id := sha256.Sum256(der)
			rekorLogs[hex.EncodeToString(id[:])] = &root.TransparencyLog{
				ID: id[:], PublicKey: pub, HashFunc: crypto.SHA256, SignatureHashFunc: crypto.SHA256,
				ValidityPeriodStart: time.Unix(1, 0), BaseURL: "https://rekor.invalid",
			}
		}
	}
	logsOnly, err := root.NewTrustedRoot(root.TrustedRootMediaType01, nil, nil, nil, rekorLogs)
	if err != nil {
		return nil, err
	}
	keyPEMs, err := load(r.KeyPath, r.KeyPaths, r.KeyData, r.KeyDatas)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	switch {
	case len(keyPEMs) > 0:
		c.kind = "key"
		for i, pemData := range keyPEMs {
			pub, err := cryptoutils.UnmarshalPEMToPublicKey(pemData)
			if err != nil {
				return nil, fmt.Errorf("public key %d: %w", i+1, err)
			}
			sv, err := signature.LoadVerifier(pub, crypto.SHA256)
			if err != nil {
				return nil, fmt.Errorf("public key %d: %w", i+1, err)
			}
			key := root.NewExpiringKey(sv, time.Time{}, time.Time{})
			var tm root.TrustedMaterial = root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
			vopts := []verify.VerifierOption{verify.WithNoObserverTimestamps()}
			if c.rekor {
				tm = root.TrustedMaterialCollection{tm, logsOnly}
				vopts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
			}
			v, err := verify.NewVerifier(tm, vopts...)
			if err != nil {
				return nil, err
			}
			c.keys = append(c.keys, keyVerifier{id: KeyID(pub), v: v})
		}
	case r.Fulcio != nil:
		c.kind = "fulcio"
		pems, err := load(r.Fulcio.CAPath, nil, r.Fulcio.CAData, nil)
		if err != nil {
			return nil, fmt.Errorf("fulcio CA: %w", err)
		}
		certs, err := cryptoutils.UnmarshalCertificatesFromPEM(pems[0])
		if err != nil || len(certs) == 0 {
			return nil, fmt.Errorf("fulcio CA: no certificates (%v)", err)
		}
		for _, cert := range certs {
			// Each certificate given is a trust anchor, as in containers/image's pool.
			c.cas = append(c.cas, &root.FulcioCertificateAuthority{Root: cert})
		}
		c.logs = rekorLogs
		c.vopts = []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithIntegratedTimestamps(1)}
		if err := c.build(); err != nil {
			return nil, err
		}
		id, err := verify.NewShortCertificateIdentity(r.Fulcio.OIDCIssuer, "", r.Fulcio.SubjectEmail, "")
		if err != nil {
			return nil, err
		}
		c.identity = verify.WithCertificateIdentity(id)
	case r.PKI != nil:
		c.kind = "pki"
		pems, err := load(r.PKI.CARootsPath, nil, r.PKI.CARootsData, nil)
		if err != nil {
			return nil, fmt.Errorf("pki roots: %w", err)
		}
		roots, err := cryptoutils.UnmarshalCertificatesFromPEM(pems[0])
		if err != nil || len(roots) == 0 {
			return nil, fmt.Errorf("pki roots: no certificates (%v)", err)
		}
		var inter []*x509.Certificate
		if r.PKI.CAIntermediatesPath != "" || r.PKI.CAIntermediatesData != nil {
			ipems, err := load(r.PKI.CAIntermediatesPath, nil, r.PKI.CAIntermediatesData, nil)
			if err != nil {
				return nil, fmt.Errorf("pki intermediates: %w", err)
			}
			if inter, err = cryptoutils.UnmarshalCertificatesFromPEM(ipems[0]); err != nil {
				return nil, fmt.Errorf("pki intermediates: %w", err)
			}
		}
		for _, cert := range roots {
			c.cas = append(c.cas, &root.FulcioCertificateAuthority{Root: cert, Intermediates: inter})
		}
		c.vopts = []verify.VerifierOption{verify.WithCurrentTime()}
		if err := c.build(); err != nil {
			return nil, err
		}
		email, host := r.PKI.SubjectEmail, r.PKI.SubjectHostname
		c.pkiCheck = func(cert *x509.Certificate) error {
			if email != "" && !containsFold(cert.EmailAddresses, email) {
				return fmt.Errorf("certificate is not for email %q (it names %q)", email, cert.EmailAddresses)
			}
			if host != "" && !containsFold(cert.DNSNames, host) {
				return fmt.Errorf("certificate is not for host %q (it names %q)", host, cert.DNSNames)
			}
			return nil
		}
	}
	return c, nil
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

// requirementsFor returns the requirements that apply to the docker reference ref (a
// full name) and the scope they came from.
func (v *Verifier) requirementsFor(ref dockerRef) ([]Requirement, string) {
	return requirementsFor(&v.p, ref)
}

func requirementsFor(p *Policy, ref dockerRef) ([]Requirement, string) {
	d := p.Transports["docker"]
	for _, s := range scopes(ref) {
		if reqs, ok := d[s]; ok {
			return reqs, s
		}
	}
	if reqs, ok := d[""]; ok {
		return reqs, `docker ""`
	}
	return p.Default, "default"
}

// ScopeFor names the scope of p whose requirements apply to ref (e.g.
// "quay.io/org/app:v1"): a docker scope's key, `docker ""` for the transport's default,
// or "default"; "" when ref is not a docker reference.
func ScopeFor(p *Policy, ref string) string {
	r, err := parseRef(ref)
	if err != nil {
		return ""
	}
	_, s := requirementsFor(p, r)
	return s
}

// Verify evaluates the policy for subject: every requirement of the most specific
// scope that names it must be met.
func (v *Verifier) Verify(ctx context.Context, subject trust.Subject, src trust.Source) (*trust.Result, error) {
	intended, err := parseRef(subject.Name)
	if err != nil {
		return nil, trust.Refuse(subject, trust.Requirement{Type: "reference", Reason: "cannot read " + text.Clean(subject.Name, 300), Err: invalid("reference", subject.Name, err)})
	}
	reqs, scope := v.requirementsFor(intended)
	ev := &evaluation{v: v, subject: subject, intended: intended, src: src, sigs: map[string]*gathered{}}
	res := &trust.Result{Subject: subject}
	var unmet []trust.Requirement
	for i := range reqs {
		r := &reqs[i]
		out := trust.Requirement{Type: r.Type, Scope: scope}
		switch r.Type {
		case TypeInsecureAcceptAnything:
			out.Met, out.Reason = true, "insecureAcceptAnything"
		case TypeReject:
			out.Reason = "the policy rejects every image in this scope"
		case TypeSignedBy, TypeSignedBaseLayer:
			out.Err = &pullkit.UnsupportedError{What: "requirement " + r.Type, Reason: "GPG and X.509 simple signing are not verified by pullkit; use sigstoreSigned"}
			out.Reason = out.Err.Error()
		case TypeSigstoreSigned:
			sig, why, err := ev.sigstoreSigned(ctx, r, v.compiled[r])
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if sig != nil {
				out.Met, out.Signature = true, sig
				out.Reason = sig.String()
				res.Signatures = append(res.Signatures, *sig)
			} else {
				out.Reason, out.Err = why, err
			}
		}
		if out.Met {
			res.Requirements = append(res.Requirements, out)
		} else {
			unmet = append(unmet, out)
		}
	}
	if len(unmet) == 0 && v.opts.attestations {
		atts, missing, err := ev.attestations(ctx, reqs)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		res.Attestations = atts
		for _, m := range missing {
			unmet = append(unmet, trust.Requirement{Type: "attestation " + m.predicateType, Scope: scope, Reason: m.why, Err: err})
		}
	}
	if len(unmet) > 0 {
		return nil, trust.Refuse(subject, unmet...)
	}
	return res, nil
}

// errNoSignature is the cause of a sigstoreSigned requirement that found nothing to
// verify.
var errNoSignature = errors.New("no signature")
