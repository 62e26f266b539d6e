package policy_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/trust/policy"
)

// testKey is an ECDSA P-256 key pair, as `cosign generate-key-pair` makes.
type testKey struct {
	priv *ecdsa.PrivateKey
	pem  []byte
}

func newKey(t testing.TB) testKey {
	helper(t)
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		fatal(t, err)
	}
	der, err := x509.MarshalPKIXPublicKey(priv.Public())
	if err != nil {
		fatal(t, err)
	}
	return testKey{priv: priv, pem: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})}
}

func (k testKey) sign(t testing.TB, data []byte) []byte {
	helper(t)
	sum := sha256.Sum256(data)
	sig, err := ecdsa.SignASN1(rand.Reader, k.priv, sum[:])
	if err != nil {
		fatal(t, err)
	}
	return sig
}

// payload is a simple-signing payload as cosign 2 writes it.
func payload(identity string, d digest.Digest) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":%q},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, identity, d)
}

// sigLayer is one layer of a ".sig" or ".att" manifest.
type sigLayer struct {
	mediaType string
	data      []byte
	ann       map[string]string
}

// pushTag pushes a cosign-style manifest of layers under tag (e.g. sha256-<hex>.sig).
func pushTag(t testing.TB, reg *pullkittest.Registry, repo, tag string, layers []sigLayer) digest.Digest {
	helper(t)
	cfg := []byte(`{"architecture":"","os":"","config":{},"rootfs":{"type":"layers","diff_ids":[]}}`)
	doc := map[string]any{
		"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": manifest.Descriptor{MediaType: manifest.MediaTypeOCIConfig, Digest: reg.PutBlob(repo, cfg), Size: int64(len(cfg))},
	}
	var ls []manifest.Descriptor
	for _, l := range layers {
		ls = append(ls, manifest.Descriptor{MediaType: l.mediaType, Digest: reg.PutBlob(repo, l.data), Size: int64(len(l.data)), Annotations: l.ann})
	}
	doc["layers"] = ls
	raw, err := json.Marshal(doc)
	if err != nil {
		fatal(t, err)
	}
	return reg.PutManifest(repo, tag, manifest.MediaTypeOCIManifest, raw)
}

func sigTag(d digest.Digest) string { return "sha256-" + d.Encoded() + ".sig" }
func attTag(d digest.Digest) string { return "sha256-" + d.Encoded() + ".att" }

// signTag signs d for identity with k in cosign's .sig tag format.
func signTag(t testing.TB, reg *pullkittest.Registry, repo string, d digest.Digest, identity string, k testKey) {
	helper(t)
	p := payload(identity, d)
	pushTag(t, reg, repo, sigTag(d), []sigLayer{{policy.SimpleSigningMediaType, p,
		map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(k.sign(t, p))}}})
}

// statement is an in-toto statement about subject.
func statement(subject digest.Digest, predicateType string, predicate any) []byte {
	raw, _ := json.Marshal(map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []map[string]any{{"name": "image", "digest": map[string]string{"sha256": subject.Encoded()}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	})
	return raw
}

func pae(payloadType string, body []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(body), body)
}

// envelope signs body as a DSSE envelope with k.
func (k testKey) envelope(t testing.TB, body []byte) *protodsse.Envelope {
	helper(t)
	return &protodsse.Envelope{Payload: body, PayloadType: "application/vnd.in-toto+json",
		Signatures: []*protodsse.Signature{{Sig: k.sign(t, pae("application/vnd.in-toto+json", body))}}}
}

// envelopeJSON is the envelope as cosign's .att layers and DSSE referrers carry it.
func envelopeJSON(env *protodsse.Envelope) []byte {
	raw, _ := json.Marshal(map[string]any{
		"payloadType": env.PayloadType,
		"payload":     base64.StdEncoding.EncodeToString(env.Payload),
		"signatures":  []map[string]string{{"keyid": "", "sig": base64.StdEncoding.EncodeToString(env.Signatures[0].Sig)}},
	})
	return raw
}

// keyBundle is a Sigstore bundle v0.3 of a statement signed with k, without a log entry:
// what `cosign sign --key --tlog-upload=false` pushes.
func (k testKey) keyBundle(t testing.TB, stmt []byte) []byte {
	helper(t)
	b := &protobundle.Bundle{
		MediaType: policy.BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: "test"}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: k.envelope(t, stmt)},
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		fatal(t, err)
	}
	return raw
}

// pushBundle pushes a bundle as cosign 3 does: a referrer of subject whose artifactType
// and one layer are the bundle media type.
func pushBundle(t testing.TB, reg *pullkittest.Registry, repo string, subject manifest.Descriptor, bundle []byte, predicateType string) digest.Digest {
	helper(t)
	a := reg.PushArtifact(repo, subject, policy.BundleMediaType,
		pullkittest.ArtifactBlob(policy.BundleMediaType, bundle),
		pullkittest.Annotations(map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", "dev.sigstore.bundle.predicateType": predicateType}))
	return a.Digest
}

// keyless is sigstore-go's testing CA and log: a Fulcio CA, a Rekor key, nothing that
// leaves the machine.
type keyless struct {
	vs       *ca.VirtualSigstore
	caPEM    []byte // root and intermediate
	rootPEM  []byte // the root alone
	rekorPEM []byte
}

func newKeyless(t testing.TB) keyless {
	helper(t)
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		fatal(t, err)
	}
	k := keyless{vs: vs}
	for _, c := range vs.FulcioCertificateAuthorities() {
		// The CA file as Sigstore publishes it: the root and the intermediate (a bundle
		// carries the leaf alone).
		fc := c.(*root.FulcioCertificateAuthority)
		k.rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fc.Root.Raw})
		for _, cert := range append([]*x509.Certificate{fc.Root}, fc.Intermediates...) {
			k.caPEM = append(k.caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
		}
	}
	for _, l := range vs.RekorLogs() {
		der, err := x509.MarshalPKIXPublicKey(l.PublicKey)
		if err != nil {
			fatal(t, err)
		}
		k.rekorPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	return k
}

// signTag signs d in the .sig tag format with a certificate for email from issuer, and
// logs it: the certificate, chain and Rekor bundle annotations cosign 2 writes.
func (k keyless) signTag(t testing.TB, reg *pullkittest.Registry, repo string, d digest.Digest, identity, email, issuer string) {
	helper(t)
	leaf, priv, err := k.vs.GenerateLeafCert(email, issuer)
	if err != nil {
		fatal(t, err)
	}
	p := payload(identity, d)
	sum := sha256.Sum256(p)
	sig, err := priv.(crypto.Signer).Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		fatal(t, err)
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	var chainPEM []byte
	for _, c := range k.vs.FulcioCertificateAuthorities() {
		fc := c.(*root.FulcioCertificateAuthority)
		for _, i := range fc.Intermediates {
			chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: i.Raw})...)
		}
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fc.Root.Raw})...)
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1", "kind": "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]string{"algorithm": "sha256", "value": hex.EncodeToString(sum[:])}},
			"signature": map[string]any{"content": base64.StdEncoding.EncodeToString(sig), "publicKey": map[string]string{"content": base64.StdEncoding.EncodeToString(leafPEM)}},
		},
	})
	if err != nil {
		fatal(t, err)
	}
	logID, err := k.vs.RekorLogID()
	if err != nil {
		fatal(t, err)
	}
	integrated := time.Now().Add(time.Minute).Unix()
	set, err := k.vs.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(body), IntegratedTime: integrated, LogIndex: 42, LogID: logID})
	if err != nil {
		fatal(t, err)
	}
	rb, _ := json.Marshal(map[string]any{
		"SignedEntryTimestamp": set,
		"Payload":              map[string]any{"body": body, "integratedTime": integrated, "logIndex": 42, "logID": logID},
	})
	pushTag(t, reg, repo, sigTag(d), []sigLayer{{policy.SimpleSigningMediaType, p, map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig),
		"dev.sigstore.cosign/certificate":    string(leafPEM),
		"dev.sigstore.cosign/chain":          string(chainPEM),
		"dev.sigstore.cosign/bundle":         string(rb),
	}}})
}

// helper and fatal let the seeding helpers serve Examples too (t == nil: panic).
func helper(t testing.TB) {
	if t != nil {
		t.Helper()
	}
}

func fatal(t testing.TB, err error) {
	if t == nil {
		panic(err)
	}
	t.Helper()
	t.Fatal(err)
}

// signBundle pushes a cosign 3 bundle for subject, signed with a certificate for email
// from issuer and logged with an inclusion proof, by sigstore-go's testing CA and log.
func (k keyless) signBundle(t testing.TB, reg *pullkittest.Registry, repo string, subject manifest.Descriptor, email, issuer string) {
	helper(t)
	stmt := statement(subject.Digest, policy.CosignSignPredicateType, map[string]any{})
	ent, err := k.vs.AttestAtTime(email, issuer, stmt, time.Now().Add(time.Minute), true)
	if err != nil {
		fatal(t, err)
	}
	vc, _ := ent.VerificationContent()
	sc, _ := ent.SignatureContent()
	env := sc.EnvelopeContent().RawEnvelope()
	entries, _ := ent.TlogEntries()
	tle := entries[0].TransparencyLogEntry()
	var kind struct {
		Kind       string `json:"kind"`
		APIVersion string `json:"apiVersion"`
	}
	if err := json.Unmarshal(tle.CanonicalizedBody, &kind); err != nil {
		fatal(t, err)
	}
	tle.KindVersion = &protorekor.KindVersion{Kind: kind.Kind, Version: kind.APIVersion}
	// The log's promise (SET) as Rekor v1 returns it beside the proof.
	logID, err := k.vs.RekorLogID()
	if err != nil {
		fatal(t, err)
	}
	set, err := k.vs.RekorSignPayload(tlog.RekorPayload{Body: base64.StdEncoding.EncodeToString(tle.CanonicalizedBody),
		IntegratedTime: tle.IntegratedTime, LogIndex: tle.LogIndex, LogID: logID})
	if err != nil {
		fatal(t, err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	body, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		fatal(t, err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		fatal(t, err)
	}
	b := &protobundle.Bundle{
		MediaType: policy.BundleMediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries: []*protorekor.TransparencyLogEntry{tle},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{Payload: body, PayloadType: env.PayloadType,
			Signatures: []*protodsse.Signature{{Sig: sig}}}},
	}
	raw, err := protojson.Marshal(b)
	if err != nil {
		fatal(t, err)
	}
	pushBundle(t, reg, repo, subject, raw, policy.CosignSignPredicateType)
}
