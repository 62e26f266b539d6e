package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/trust"
)

// What cosign writes, as its specifications and code name it.
const (
	// BundleMediaType is a Sigstore bundle v0.3, the artifactType of cosign 3's
	// signature and attestation referrers and the media type of their one layer.
	BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// CosignSignPredicateType is the predicate of the in-toto statement cosign 3 signs
	// for an image (its subject the image's digest).
	CosignSignPredicateType = "https://sigstore.dev/cosign/sign/v1"
	// SimpleSigningMediaType is a layer of a ".sig" manifest: a simple-signing payload.
	SimpleSigningMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// DSSEMediaType is a layer of an ".att" manifest: a DSSE envelope.
	DSSEMediaType = "application/vnd.dsse.envelope.v1+json"
	// InTotoArtifactType is the artifactType of cosign's DSSE attestation referrers.
	InTotoArtifactType = "application/vnd.in-toto+json"

	annSignature   = "dev.cosignproject.cosign/signature"
	annCertificate = "dev.sigstore.cosign/certificate"
	annChain       = "dev.sigstore.cosign/chain"
	annBundle      = "dev.sigstore.cosign/bundle"
	annPredicate   = "predicateType"
	annBundlePred  = "dev.sigstore.bundle.predicateType"

	bundleV01MediaType = "application/vnd.dev.sigstore.bundle+json;version=0.1"
)

// Caps on what is read from the registry for one candidate.
const (
	maxPayload    = 256 << 10 // a simple-signing payload
	maxBundleBlob = 4 << 20   // a bundle or a DSSE envelope (SBOM attestations are large)
	maxLayers     = 64        // layers of a ".sig" or ".att" manifest examined
)

// candidate is one signature or attestation found for a digest, read but not verified.
type candidate struct {
	format    string
	artifact  digest.Digest // the manifest that carried it
	signs     digest.Digest // the digest it was found for
	entity    *bundle.Bundle
	payload   []byte // a simple-signing payload: the artifact of its message signature
	predicate string // for DSSE content: the predicate type claimed (unverified)
	problem   error  // why it could not be read
	// intermediates are the chain annotation's CA certificates: untrusted, used only to
	// build a path from the leaf to a trusted root.
	intermediates []*x509.Certificate
}

func (c *candidate) where() string {
	a := string(c.artifact)
	if len(a) > 19 {
		a = a[:19] + "…"
	}
	return c.format + " " + a
}

// gathered is what was found for one digest, read once per verification.
type gathered struct {
	once    sync.Once
	tagOnce sync.Once
	sigs    []*candidate // bundles found through referrers
	tagSigs []*candidate // the .sig tag's, read only when no bundle is accepted
	atts    []*candidate
	more    int   // candidates over the cap, not examined
	err     error // listing failed
	tagErr  error
}

// tagged reads the .sig tag's candidates of d, once.
func (ev *evaluation) tagged(ctx context.Context, d digest.Digest, g *gathered) ([]*candidate, error) {
	g.tagOnce.Do(func() {
		tag := d.Algorithm().String() + "-" + d.Encoded() + ".sig"
		g.tagSigs, g.tagErr = ev.readTag(ctx, d, tag, SimpleSigningMediaType, ev.v.opts.maxSignatures)
	})
	return g.tagSigs, g.tagErr
}

// evaluation is one Verify call's state.
type evaluation struct {
	v        *Verifier
	subject  trust.Subject
	intended dockerRef
	src      trust.Source
	mu       sync.Mutex
	sigs     map[string]*gathered
}

// gather lists and reads the candidates for d: bundle referrers (the referrers API or
// its tag schema), then cosign's "sha256-<hex>.sig" and, when attestations are wanted,
// ".att" tags and DSSE referrers.
func (ev *evaluation) gather(ctx context.Context, d digest.Digest) *gathered {
	ev.mu.Lock()
	g, ok := ev.sigs[d.String()]
	if !ok {
		g = &gathered{}
		ev.sigs[d.String()] = g
	}
	ev.mu.Unlock()
	g.once.Do(func() { ev.read(ctx, d, g) })
	return g
}

func (ev *evaluation) read(ctx context.Context, d digest.Digest, g *gathered) {
	max := ev.v.opts.maxSignatures
	refs, err := ev.src.Referrers(ctx, d, "")
	if err != nil {
		g.err = err
		return
	}
	var sigRefs, attRefs []manifest.Descriptor
	for _, r := range refs {
		switch r.ArtifactType {
		case BundleMediaType:
			if p := r.Annotations[annBundlePred]; p != "" && p != CosignSignPredicateType {
				attRefs = append(attRefs, r)
			} else {
				sigRefs = append(sigRefs, r)
			}
		case InTotoArtifactType:
			attRefs = append(attRefs, r)
		}
	}
	if len(sigRefs) > max {
		g.more += len(sigRefs) - max
		sigRefs = sigRefs[:max]
	}
	for _, r := range sigRefs {
		if ctx.Err() != nil {
			return
		}
		c := ev.readBundleReferrer(ctx, d, r)
		if c.predicate != "" && c.predicate != CosignSignPredicateType {
			g.atts = append(g.atts, c)
			continue
		}
		g.sigs = append(g.sigs, c)
	}
	tag := d.Algorithm().String() + "-" + d.Encoded()
	if !ev.v.opts.attestations {
		return
	}
	if len(attRefs) > max {
		attRefs = attRefs[:max]
	}
	for _, r := range attRefs {
		if ctx.Err() != nil {
			return
		}
		if r.ArtifactType == BundleMediaType {
			g.atts = append(g.atts, ev.readBundleReferrer(ctx, d, r))
			continue
		}
		atts, err := ev.readManifestLayers(ctx, d, r.Digest.String(), FormatDSSE, DSSEMediaType, max-len(g.atts))
		if err != nil {
			g.atts = append(g.atts, &candidate{format: FormatDSSE, artifact: r.Digest, signs: d, problem: err})
			continue
		}
		g.atts = append(g.atts, atts...)
	}
	atts, err := ev.readTag(ctx, d, tag+".att", DSSEMediaType, max-len(g.atts))
	if err == nil {
		g.atts = append(g.atts, atts...)
	}
}

// FormatDSSE names attestations found as DSSE referrers in results.
const FormatDSSE = trust.FormatDSSEReferrer

// readBundleReferrer reads a bundle referrer: its manifest (whose subject must be d) and
// its bundle layer.
func (ev *evaluation) readBundleReferrer(ctx context.Context, d digest.Digest, r manifest.Descriptor) *candidate {
	c := &candidate{format: trust.FormatBundle, artifact: r.Digest, signs: d}
	if r.Size > maxBundleBlob {
		c.problem = &pullkit.TooLargeError{What: "bundle referrer manifest", Limit: maxBundleBlob, Size: r.Size}
		return c
	}
	doc, err := ev.src.Manifest(ctx, r.Digest.String())
	if err != nil {
		c.problem = err
		return c
	}
	a, err := manifest.ParseArtifact(doc.Raw, doc.MediaType)
	if err != nil {
		c.problem = err
		return c
	}
	if a.Subject != nil && a.Subject.Digest != d {
		c.problem = fmt.Errorf("its manifest's subject is %s, not %s", a.Subject.Digest, d)
		return c
	}
	for _, l := range a.Blobs {
		if !strings.HasPrefix(l.MediaType, "application/vnd.dev.sigstore.bundle") {
			continue
		}
		if l.Size > maxBundleBlob {
			c.problem = &pullkit.TooLargeError{What: "bundle", Limit: maxBundleBlob, Size: l.Size}
			return c
		}
		raw, err := ev.src.Blob(ctx, l)
		if err != nil {
			c.problem = err
			return c
		}
		var b bundle.Bundle
		if err := b.UnmarshalJSON(raw); err != nil {
			c.problem = invalid("sigstore bundle", "does not parse", err)
			return c
		}
		c.entity = &b
		if env, err := b.Envelope(); err == nil && env != nil {
			c.predicate = predicateOf(env.RawEnvelope().Payload, env.RawEnvelope().PayloadType)
		}
		return c
	}
	c.problem = errors.New("its manifest has no bundle layer")
	return c
}

// predicateOf reads the predicate type an in-toto statement claims (unverified: to sort
// candidates only).
func predicateOf(payloadB64 string, payloadType string) string {
	if payloadType != InTotoArtifactType {
		return ""
	}
	raw, err := base64.StdEncoding.DecodeString(payloadB64)
	if err != nil {
		return ""
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if json.Unmarshal(raw, &st) != nil {
		return ""
	}
	return st.PredicateType
}

// readTag reads cosign's tag for d ("sha256-<hex>.sig" or ".att"); no such tag is no
// candidates.
func (ev *evaluation) readTag(ctx context.Context, d digest.Digest, tag, layerType string, max int) ([]*candidate, error) {
	out, err := ev.readManifestLayers(ctx, d, tag, trust.FormatTag, layerType, max)
	if errors.Is(err, pullkit.ErrNotFound) {
		return nil, nil
	}
	return out, err
}

// readManifestLayers reads the layers of layerType of the manifest ident names, each a
// simple-signing payload or a DSSE envelope with cosign's annotations.
func (ev *evaluation) readManifestLayers(ctx context.Context, d digest.Digest, ident, format, layerType string, max int) ([]*candidate, error) {
	doc, err := ev.src.Manifest(ctx, ident)
	if err != nil {
		return nil, err
	}
	a, err := manifest.ParseArtifact(doc.Raw, doc.MediaType)
	if err != nil {
		// cosign's ".sig" manifests are OCI or Docker schema 2 manifests of layers.
		m, perr := parseLayersManifest(doc.Raw)
		if perr != nil {
			return []*candidate{{format: format, artifact: doc.Digest, signs: d, problem: err}}, nil
		}
		a = m
	}
	var out []*candidate
	for i, l := range a.Blobs {
		if l.MediaType != layerType {
			continue
		}
		if len(out) >= max || i >= maxLayers {
			break
		}
		c := &candidate{format: format, artifact: doc.Digest, signs: d}
		out = append(out, c)
		limit := int64(maxPayload)
		if layerType == DSSEMediaType {
			limit = maxBundleBlob
		}
		if l.Size > limit {
			c.problem = &pullkit.TooLargeError{What: "signature layer", Limit: limit, Size: l.Size}
			continue
		}
		raw, err := ev.src.Blob(ctx, l)
		if err != nil {
			c.problem = err
			if ctx.Err() != nil {
				return out, nil
			}
			continue
		}
		if layerType == SimpleSigningMediaType {
			c.payload = raw
			c.entity, c.intermediates, c.problem = legacyBundle(l.Annotations, raw, nil)
		} else {
			var env protodsse.Envelope
			if c.problem = unmarshalEnvelope(raw, &env); c.problem == nil {
				c.predicate = l.Annotations[annPredicate]
				if p := predicateOf(base64.StdEncoding.EncodeToString(env.Payload), env.PayloadType); p != "" {
					c.predicate = p
				}
				c.entity, c.intermediates, c.problem = legacyBundle(l.Annotations, nil, &env)
			}
		}
	}
	return out, nil
}

// parseLayersManifest reads a Docker schema 2 manifest's layers (ParseArtifact reads
// OCI manifests only; old cosign and some registries write schema 2).
func parseLayersManifest(raw []byte) (*manifest.Artifact, error) {
	var w struct {
		MediaType string                `json:"mediaType"`
		Layers    []manifest.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, err
	}
	if w.MediaType != manifest.MediaTypeDockerSchema2 {
		return nil, errors.New("not a manifest of layers")
	}
	for _, l := range w.Layers {
		if l.Digest.Validate() != nil || l.Size < 0 {
			return nil, errors.New("a layer without a valid digest or size")
		}
	}
	return &manifest.Artifact{MediaType: w.MediaType, Digest: digest.FromBytes(raw), Blobs: w.Layers, Raw: raw}, nil
}

// unmarshalEnvelope reads a DSSE envelope as JSON writes it (payload and signatures
// base64).
func unmarshalEnvelope(raw []byte, env *protodsse.Envelope) error {
	var w struct {
		PayloadType string `json:"payloadType"`
		Payload     string `json:"payload"`
		Signatures  []struct {
			KeyID string `json:"keyid"`
			Sig   string `json:"sig"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return invalid("DSSE envelope", "does not parse", err)
	}
	p, err := base64.StdEncoding.DecodeString(w.Payload)
	if err != nil || len(w.Signatures) == 0 {
		return invalid("DSSE envelope", "no payload or no signature", err)
	}
	env.Payload, env.PayloadType = p, w.PayloadType
	for _, s := range w.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			return invalid("DSSE envelope", "a signature is not base64", err)
		}
		env.Signatures = append(env.Signatures, &protodsse.Signature{Sig: sig, Keyid: s.KeyID})
	}
	return nil
}

// rekorBundle is cosign's "dev.sigstore.cosign/bundle" annotation: a Rekor entry with
// its signed entry timestamp.
type rekorBundle struct {
	SignedEntryTimestamp []byte `json:"SignedEntryTimestamp"`
	Payload              struct {
		Body           []byte `json:"body"`
		IntegratedTime int64  `json:"integratedTime"`
		LogIndex       int64  `json:"logIndex"`
		LogID          string `json:"logID"`
	} `json:"Payload"`
}

// legacyBundle turns a ".sig" layer (simple-signing payload and annotations) or an
// ".att" layer (DSSE envelope) into a Sigstore bundle v0.1 for sigstore-go to verify:
// the signature and, from the annotations, the certificate chain and the Rekor entry.
func legacyBundle(ann map[string]string, payload []byte, env *protodsse.Envelope) (*bundle.Bundle, []*x509.Certificate, error) {
	b, err := legacyBundleOf(ann, payload, env)
	if err != nil || ann[annChain] == "" {
		return b, nil, err
	}
	chain, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(ann[annChain]), 8)
	if err != nil {
		return nil, nil, invalid("chain annotation", "not PEM certificates", err)
	}
	var inter []*x509.Certificate
	for _, c := range chain {
		if c.IsCA && !bytes.Equal(c.RawIssuer, c.RawSubject) {
			inter = append(inter, c)
		}
	}
	return b, inter, nil
}

func legacyBundleOf(ann map[string]string, payload []byte, env *protodsse.Envelope) (*bundle.Bundle, error) {
	pb := &protobundle.Bundle{MediaType: bundleV01MediaType, VerificationMaterial: &protobundle.VerificationMaterial{}}
	if env != nil {
		pb.Content = &protobundle.Bundle_DsseEnvelope{DsseEnvelope: env}
	} else {
		sigB64, ok := ann[annSignature]
		if !ok {
			return nil, fmt.Errorf("no %s annotation", annSignature)
		}
		sig, err := base64.StdEncoding.DecodeString(sigB64)
		if err != nil {
			return nil, invalid("signature annotation", "not base64", err)
		}
		sum := sha256.Sum256(payload)
		pb.Content = &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: protocommon.HashAlgorithm_SHA2_256, Digest: sum[:]},
			Signature:     sig,
		}}
	}
	if certPEM := ann[annCertificate]; certPEM != "" {
		certs, err := cryptoutils.UnmarshalCertificatesFromPEMLimited([]byte(certPEM), 4)
		if err != nil || len(certs) != 1 {
			return nil, invalid("certificate annotation", "not one PEM certificate", err)
		}
		// The leaf only: a v0.1 bundle's verifier takes no chain; the intermediates are
		// given to it with the trusted roots (legacyBundle).
		chain := &protocommon.X509CertificateChain{Certificates: []*protocommon.X509Certificate{{RawBytes: certs[0].Raw}}}
		pb.VerificationMaterial.Content = &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: chain}
	} else {
		pb.VerificationMaterial.Content = &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{}}
	}
	if rb := ann[annBundle]; rb != "" {
		var r rekorBundle
		if err := json.Unmarshal([]byte(rb), &r); err != nil {
			return nil, invalid("rekor bundle annotation", "does not parse", err)
		}
		logID, err := hex.DecodeString(r.Payload.LogID)
		if err != nil {
			return nil, invalid("rekor bundle annotation", "logID is not hex", err)
		}
		var kind struct {
			Kind       string `json:"kind"`
			APIVersion string `json:"apiVersion"`
		}
		if err := json.Unmarshal(r.Payload.Body, &kind); err != nil {
			return nil, invalid("rekor entry", "body does not parse", err)
		}
		pb.VerificationMaterial.TlogEntries = []*protorekor.TransparencyLogEntry{{
			LogIndex:          r.Payload.LogIndex,
			LogId:             &protocommon.LogId{KeyId: logID},
			KindVersion:       &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion},
			IntegratedTime:    r.Payload.IntegratedTime,
			InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: r.SignedEntryTimestamp},
			CanonicalizedBody: r.Payload.Body,
		}}
	}
	b, err := bundle.NewBundle(pb)
	if err != nil {
		return nil, invalid("cosign signature", "cannot be read as a bundle", err)
	}
	return b, nil
}

// simpleSigning is a simple-signing payload, as cosign and containers/image write it.
type simpleSigning struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
}

// ParseSimpleSigning reads a simple-signing payload (the critical section: the signed
// identity and manifest digest). It checks structure only; the signature over it is
// verified elsewhere.
func ParseSimpleSigning(raw []byte) (identity string, d digest.Digest, err error) {
	if len(raw) > maxPayload {
		return "", "", &pullkit.TooLargeError{What: "simple-signing payload", Limit: maxPayload, Size: int64(len(raw))}
	}
	var p simpleSigning
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&p); err != nil {
		return "", "", invalid("simple-signing payload", "does not parse", err)
	}
	switch p.Critical.Type {
	case "cosign container image signature", "atomic container signature":
	default:
		return "", "", invalid("simple-signing payload", "critical.type is "+text.Clean(p.Critical.Type, 100), nil)
	}
	d, err = digest.Parse(p.Critical.Image.DockerManifestDigest)
	if err != nil {
		return "", "", invalid("simple-signing payload", "critical.image.docker-manifest-digest", err)
	}
	if p.Critical.Identity.DockerReference == "" {
		return "", "", invalid("simple-signing payload", "no critical.identity.docker-reference", nil)
	}
	return p.Critical.Identity.DockerReference, d, nil
}

// check verifies candidate c against requirement r: the signature with sigstore-go, the
// digest it signs, and the identity it claims against r's signedIdentity.
func (ev *evaluation) check(r *Requirement, cr *compiled, c *candidate, wantPredicate string) (*trust.Signature, []byte, error) {
	if c.problem != nil {
		return nil, nil, c.problem
	}
	hexd, err := hex.DecodeString(c.signs.Encoded())
	if err != nil || c.signs.Algorithm() != digest.SHA256 {
		return nil, nil, fmt.Errorf("digest %s: only sha256 is signed by cosign", c.signs)
	}
	artifact := func() verify.ArtifactPolicyOption {
		if c.payload != nil {
			return verify.WithArtifact(bytes.NewReader(c.payload))
		}
		return verify.WithArtifactDigest("sha256", hexd)
	}
	type attempt struct {
		v     *verify.Verifier
		id    verify.PolicyOption
		keyID string
	}
	var attempts []attempt
	switch cr.kind {
	case "key":
		for _, k := range cr.keys {
			attempts = append(attempts, attempt{k.v, verify.WithKey(), k.id})
		}
	case "fulcio", "pki":
		v, err := cr.certVerifier(c.intermediates)
		if err != nil {
			return nil, nil, err
		}
		id := cr.identity
		if cr.kind == "pki" {
			id = verify.WithoutIdentitiesUnsafe()
		}
		attempts = []attempt{{v, id, ""}}
	}
	var res *verify.VerificationResult
	var used attempt
	var errs []string
	for _, a := range attempts {
		out, err := a.v.Verify(c.entity, verify.NewPolicy(artifact(), a.id))
		if err == nil {
			res, used = out, a
			break
		}
		errs = append(errs, err.Error())
	}
	if res == nil {
		if cr.kind == "key" && len(cr.keys) > 1 {
			return nil, nil, fmt.Errorf("no key of the policy verifies it (%s)", strings.Join(dedupe(errs), "; "))
		}
		return nil, nil, errors.New(strings.Join(dedupe(errs), "; "))
	}
	sig := &trust.Signature{Format: c.format, Digest: c.signs, Artifact: c.artifact, KeyID: used.keyID}
	vc, _ := c.entity.VerificationContent()
	if vc != nil && vc.Certificate() != nil {
		if cr.pkiCheck != nil {
			if err := cr.pkiCheck(vc.Certificate()); err != nil {
				return nil, nil, err
			}
		}
		if res.Signature != nil && res.Signature.Certificate != nil {
			sig.CertSubject = res.Signature.Certificate.SubjectAlternativeName
			sig.CertIssuer = res.Signature.Certificate.Issuer
		}
	}
	for _, ts := range res.VerifiedTimestamps {
		sig.Timestamps = append(sig.Timestamps, ts.Timestamp)
	}
	if cr.rekor {
		if entries, err := c.entity.TlogEntries(); err == nil && len(entries) > 0 {
			e := entries[0]
			sig.Tlog = &trust.TlogEntry{LogID: hex.EncodeToString([]byte(e.LogKeyID())), LogIndex: e.LogIndex(), IntegratedTime: e.IntegratedTime().UTC()}
		}
	}
	var statement []byte
	switch {
	case c.payload != nil:
		// A simple-signing payload: the digest and identity it claims, now verified.
		ident, d, err := ParseSimpleSigning(c.payload)
		if err != nil {
			return nil, nil, err
		}
		if d != c.signs {
			return nil, nil, fmt.Errorf("it signs %s, not %s", d, c.signs)
		}
		sig.Identity = ident
	default:
		env, _ := c.entity.Envelope()
		if env != nil {
			statement, _ = base64.StdEncoding.DecodeString(env.RawEnvelope().Payload)
			// sigstore-go checked that the statement's subject names the digest.
			pt := ""
			if res.Statement != nil {
				pt = res.Statement.GetPredicateType()
			}
			if wantPredicate != "" && pt != wantPredicate {
				return nil, nil, fmt.Errorf("its predicate is %q, not %q", text.Clean(pt, 200), wantPredicate)
			}
		}
	}
	// The identity the signature vouches for: the one it claims, or the repository it
	// was found in at the digest it signs.
	identity := dockerRef{repo: ev.intended.repo, digest: c.signs.String()}
	if sig.Identity != "" {
		id, err := parseRef(sig.Identity)
		if err != nil {
			return nil, nil, fmt.Errorf("its identity %q is not a docker reference", text.Clean(sig.Identity, 300))
		}
		identity = id
	}
	if !r.SignedIdentity.matches(ev.intended, identity) {
		return nil, nil, fmt.Errorf("%w: identity %q does not satisfy %s for %s", errIdentity, text.Clean(identity.String(), 300), r.SignedIdentity, ev.intended)
	}
	return sig, statement, nil
}

var errIdentity = errors.New("identity mismatch")

func dedupe(list []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// sigstoreSigned evaluates one sigstoreSigned requirement: a signature that verifies on
// the digest the reference names meets it; otherwise one on each image manifest the call
// uses (the platform's, or with every platform each of them) does.
func (ev *evaluation) sigstoreSigned(ctx context.Context, r *Requirement, cr *compiled) (*trust.Signature, string, error) {
	if cr == nil {
		return nil, "internal: requirement not compiled", nil
	}
	sig, why, cause := ev.signed(ctx, r, cr, ev.subject.Digest)
	if sig != nil || ctx.Err() != nil {
		return sig, "", ctx.Err()
	}
	others := ev.subject.Digests()[1:]
	if len(others) == 0 {
		return nil, why, cause
	}
	var first *trust.Signature
	for _, d := range others {
		s, w, err := ev.signed(ctx, r, cr, d)
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if s == nil {
			if cause == nil {
				cause = err
			}
			return nil, why + "; and for the image manifest " + d.String() + ": " + w, cause
		}
		if first == nil {
			first = s
		}
	}
	return first, "", nil
}

// signed looks for a signature of d that meets r: bundles found through referrers, then
// cosign's .sig tag (read only when no bundle is accepted). It returns the signature, or
// why there is none.
func (ev *evaluation) signed(ctx context.Context, r *Requirement, cr *compiled, d digest.Digest) (*trust.Signature, string, error) {
	g := ev.gather(ctx, d)
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	if g.err != nil {
		return nil, "reading the signatures of " + d.String() + ": " + g.err.Error(), g.err
	}
	var reasons []string
	examined := 0
	try := func(cs []*candidate) *trust.Signature {
		for _, c := range cs {
			examined++
			sig, _, err := ev.check(r, cr, c, CosignSignPredicateType)
			if err == nil {
				return sig
			}
			if len(reasons) < 6 {
				reasons = append(reasons, c.where()+": "+err.Error())
			}
		}
		return nil
	}
	if sig := try(g.sigs); sig != nil {
		return sig, "", nil
	}
	tagged, err := ev.tagged(ctx, d, g)
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	if err != nil {
		return nil, "reading the .sig tag of " + d.String() + ": " + err.Error(), err
	}
	if sig := try(tagged); sig != nil {
		return sig, "", nil
	}
	if examined == 0 {
		return nil, "no signature: none found for " + d.String() + " (bundle referrers, or cosign's .sig tag)", errNoSignature
	}
	why := fmt.Sprintf("none of %d signatures accepted for %s", examined, shortDigest(d))
	if g.more > 0 {
		why += fmt.Sprintf(" (%d more not examined: at most %d per digest)", g.more, ev.v.opts.maxSignatures)
	}
	return nil, why + ": " + strings.Join(reasons, "; "), nil
}

func shortDigest(d digest.Digest) string {
	s := d.String()
	if len(s) > 19 {
		return s[:19] + "…"
	}
	return s
}

type missing struct{ predicateType, why string }

// attestations verifies the subject's attestations with the scope's sigstoreSigned
// requirements' key material, returns those that verify, and lists the required
// predicate types none of them has.
func (ev *evaluation) attestations(ctx context.Context, reqs []Requirement) ([]trust.Attestation, []missing, error) {
	var crs []*Requirement
	for i := range reqs {
		if reqs[i].Type == TypeSigstoreSigned {
			crs = append(crs, &reqs[i])
		}
	}
	var out []trust.Attestation
	var rejected []string
	var cause error
	for _, d := range ev.subject.Digests() {
		g := ev.gather(ctx, d)
		if g.err != nil {
			cause = g.err
			continue
		}
		for _, c := range g.atts {
			var lastErr error
			for _, r := range crs {
				sig, statement, err := ev.check(r, ev.v.compiled[r], c, "")
				if err == nil && statement != nil {
					var st struct {
						PredicateType string `json:"predicateType"`
					}
					_ = json.Unmarshal(statement, &st)
					out = append(out, trust.Attestation{PredicateType: st.PredicateType, Statement: statement, Signature: *sig})
					lastErr = nil
					break
				}
				if err == nil {
					err = errors.New("not an in-toto statement")
				}
				lastErr = err
			}
			if len(crs) == 0 {
				lastErr = errors.New("the scope has no sigstoreSigned requirement to verify it with")
			}
			if lastErr != nil && len(rejected) < 6 {
				p := c.predicate
				if p == "" {
					p = "unknown predicate"
				}
				rejected = append(rejected, c.where()+" ("+text.Clean(p, 200)+"): "+lastErr.Error())
			}
		}
	}
	var miss []missing
	for _, want := range ev.v.opts.required {
		found := false
		for _, a := range out {
			found = found || a.PredicateType == want
		}
		if !found {
			why := "no verified attestation of this predicate type for " + ev.subject.Digest.String()
			if len(rejected) > 0 {
				why += "; rejected: " + strings.Join(rejected, "; ")
			}
			miss = append(miss, missing{want, why})
		}
	}
	return out, miss, cause
}
