package policy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
	"github.com/pullkit/pullkit/trust/policy"
)

func mustVerifier(t *testing.T, p *policy.Policy, opts ...policy.Option) *policy.Verifier {
	t.Helper()
	v, err := policy.NewVerifier(p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// keyPolicy is "reject by default; scope requires a signature by one of keys".
func keyPolicy(scope string, identity *policy.IdentityMatch, keys ...testKey) *policy.Policy {
	var pems [][]byte
	for _, k := range keys {
		pems = append(pems, k.pem)
	}
	return &policy.Policy{
		Default:    []policy.Requirement{policy.Reject()},
		Transports: map[string]map[string][]policy.Requirement{"docker": {scope: {policy.SigstoreSignedByKeys(identity, pems...)}}},
	}
}

var matchRepository = &policy.IdentityMatch{Type: policy.MatchRepository}

func pull(t *testing.T, v trust.Verifier, ref string) (*trust.Result, error) {
	t.Helper()
	c, err := puller.New(puller.WithKeychain(anonymous{}), puller.WithVerifier(v))
	if err != nil {
		t.Fatal(err)
	}
	var res *trust.Result
	st := store.NewMemory()
	_, err = c.Pull(context.Background(), ref, st, puller.WithVerified(func(r *trust.Result) { res = r }))
	if err != nil {
		storeEmpty(t, st)
	}
	return res, err
}

func wantRefused(t *testing.T, err error, says ...string) {
	t.Helper()
	if !errors.Is(err, pullkit.ErrUntrusted) {
		t.Fatalf("err = %v, want ErrUntrusted", err)
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%v\nwant it to say %q", err, s)
		}
	}
}

// TestKeySignatures: both storage formats, through the referrers API and its tag
// schema, accepted with the right key and refused otherwise.
func TestKeySignatures(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(fmt.Sprintf("referrers API %v", api), func(t *testing.T) {
			var opts []pullkittest.Option
			if !api {
				opts = append(opts, pullkittest.WithoutReferrersAPI())
			}
			reg := pullkittest.NewRegistry(t, opts...)
			right, wrong := newKey(t), newKey(t)
			img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
			other := reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))
			pushBundle(t, reg, "team/app", img.Descriptor(), right.keyBundle(t, statement(img.Digest, policy.CosignSignPredicateType, map[string]any{})), policy.CosignSignPredicateType)
			signTag(t, reg, "team/app", other.Digest, reg.Ref("team/app"), right)
			scope := reg.Host() + "/team"

			res, err := pull(t, mustVerifier(t, keyPolicy(scope, matchRepository, right)), reg.Ref("team/app:v1"))
			if err != nil {
				t.Fatal(err)
			}
			if s := res.Signatures[0]; s.Format != trust.FormatBundle || s.Digest != img.Digest || s.KeyID != policy.KeyID(right.priv.Public()) || s.Identity != "" {
				t.Errorf("bundle signature = %+v", s)
			}
			res, err = pull(t, mustVerifier(t, keyPolicy(scope, matchRepository, wrong, right)), reg.Ref("team/app:v2"))
			if err != nil {
				t.Fatal(err)
			}
			if s := res.Signatures[0]; s.Format != trust.FormatTag || s.Identity != reg.Ref("team/app") {
				t.Errorf("tag signature = %+v", s)
			}
			if !strings.Contains(res.Summary(), "key sha256:") {
				t.Errorf("summary %q", res.Summary())
			}
			_, err = pull(t, mustVerifier(t, keyPolicy(scope, matchRepository, wrong)), reg.Ref("team/app:v1"))
			wantRefused(t, err, "none of 1 signatures accepted", "sigstoreSigned", scope)
			// By digest, the default identity rule accepts a bundle (it names the digest).
			_, err = pull(t, mustVerifier(t, keyPolicy(scope, nil, right)), img.Ref())
			if err != nil {
				t.Errorf("bundle by digest with matchRepoDigestOrExact: %v", err)
			}
			// A bundle signing another image, pushed as this one's referrer.
			third := reg.PushImage("team/app", "v3", pullkittest.OCI, pullkittest.Layers(1, 64))
			pushBundle(t, reg, "team/app", third.Descriptor(), right.keyBundle(t, statement(img.Digest, policy.CosignSignPredicateType, map[string]any{})), policy.CosignSignPredicateType)
			_, err = pull(t, mustVerifier(t, keyPolicy(scope, matchRepository, right)), reg.Ref("team/app:v3"))
			wantRefused(t, err, "none of 1 signatures accepted")
		})
	}
}

// TestIndexSignatures: a signature on the index covers the platform pulled; one on the
// platform's manifest alone does too.
func TestIndexSignatures(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	k := newKey(t)
	idx := reg.PushIndex("team/multi", "v1", pullkittest.OCIIndex, pullkittest.Layers(1, 64))
	signTag(t, reg, "team/multi", idx.Digest, reg.Ref("team/multi"), k)
	v := mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k))
	res, err := pull(t, v, reg.Ref("team/multi:v1"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Signatures[0].Digest != idx.Digest {
		t.Errorf("signed digest %s, want the index's", res.Signatures[0].Digest)
	}
	idx2 := reg.PushIndex("team/multi", "v2", pullkittest.OCIIndex, pullkittest.Layers(1, 64), pullkittest.Seed(7))
	for _, m := range idx2.Images {
		signTag(t, reg, "team/multi", m.Digest, reg.Ref("team/multi"), k)
	}
	res, err = pull(t, v, reg.Ref("team/multi:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Signatures[0].Digest == idx2.Digest {
		t.Errorf("the platform's signature was expected")
	}
	// Every platform at once: each image must be signed when the index is not.
	all := func(tag string) error {
		c, _ := puller.New(puller.WithKeychain(anonymous{}), puller.WithVerifier(v))
		_, err := c.Pull(context.Background(), reg.Ref("team/multi:"+tag), store.NewMemory(), puller.WithAllPlatforms())
		return err
	}
	if err := all("v2"); err != nil {
		t.Errorf("every platform signed: %v", err)
	}
	idx3 := reg.PushIndex("team/multi", "v3", pullkittest.OCIIndex, pullkittest.Layers(1, 64), pullkittest.Seed(9))
	signTag(t, reg, "team/multi", idx3.Images[0].Digest, reg.Ref("team/multi"), k)
	wantRefused(t, all("v3"), "and for the image manifest "+idx3.Images[1].Digest.String()+": no signature")
}

// TestKeyless: Fulcio certificates and a Rekor log from sigstore-go's testing CA; the
// certificate's email and issuer checked, the log entry reported.
func TestKeyless(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	kl := newKeyless(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	kl.signTag(t, reg, "team/app", img.Digest, reg.Ref("team/app"), "dev@example.com", "https://issuer.example")
	mk := func(email, issuer string, rekor []byte) *policy.Verifier {
		return mustVerifier(t, &policy.Policy{Default: []policy.Requirement{{
			Type:               policy.TypeSigstoreSigned,
			Fulcio:             &policy.Fulcio{CAData: kl.caPEM, OIDCIssuer: issuer, SubjectEmail: email},
			RekorPublicKeyData: rekor,
			SignedIdentity:     matchRepository,
		}}})
	}
	res, err := pull(t, mk("dev@example.com", "https://issuer.example", kl.rekorPEM), reg.Ref("team/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	s := res.Signatures[0]
	if s.CertSubject != "dev@example.com" || s.CertIssuer != "https://issuer.example" || s.Tlog == nil || s.Tlog.LogIndex != 42 {
		t.Errorf("signature = %+v (tlog %+v)", s, s.Tlog)
	}
	if !strings.Contains(res.Summary(), "rekor entry 42") {
		t.Errorf("summary %q", res.Summary())
	}
	_, err = pull(t, mk("eve@example.com", "https://issuer.example", kl.rekorPEM), reg.Ref("team/app:v1"))
	wantRefused(t, err, "none of 1 signatures accepted")
	_, err = pull(t, mk("dev@example.com", "https://other-issuer.example", kl.rekorPEM), reg.Ref("team/app:v1"))
	wantRefused(t, err, "none of 1 signatures accepted")
	_, err = pull(t, mk("dev@example.com", "https://issuer.example", newKey(t).pem), reg.Ref("team/app:v1"))
	wantRefused(t, err, "none of 1 signatures accepted")
	// The root alone is enough: the .sig's chain annotation brings the intermediate.
	rootOnly := mustVerifier(t, &policy.Policy{Default: []policy.Requirement{{
		Type: policy.TypeSigstoreSigned, Fulcio: &policy.Fulcio{CAData: kl.rootPEM, OIDCIssuer: "https://issuer.example", SubjectEmail: "dev@example.com"},
		RekorPublicKeyData: kl.rekorPEM, SignedIdentity: matchRepository}}})
	if _, err := pull(t, rootOnly, reg.Ref("team/app:v1")); err != nil {
		t.Errorf("root-only CA with the chain annotation: %v", err)
	}
	other := newKeyless(t) // another CA
	_, err = pull(t, mustVerifier(t, &policy.Policy{Default: []policy.Requirement{{
		Type: policy.TypeSigstoreSigned, Fulcio: &policy.Fulcio{CAData: other.caPEM, OIDCIssuer: "https://issuer.example", SubjectEmail: "dev@example.com"},
		RekorPublicKeyData: kl.rekorPEM, SignedIdentity: matchRepository}}}), reg.Ref("team/app:v1"))
	wantRefused(t, err, "none of 1 signatures accepted")

	// cosign 3's format: a bundle with the certificate and a log entry with an inclusion
	// proof, found through the referrers API.
	img2 := reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))
	kl.signBundle(t, reg, "team/app", img2.Descriptor(), "dev@example.com", "https://issuer.example")
	res, err = pull(t, mk("dev@example.com", "https://issuer.example", kl.rekorPEM), reg.Ref("team/app:v2"))
	if err != nil {
		t.Fatal(err)
	}
	if s := res.Signatures[0]; s.Format != trust.FormatBundle || s.CertSubject != "dev@example.com" || s.Tlog == nil {
		t.Errorf("bundle signature = %+v", s)
	}
	_, err = pull(t, mk("eve@example.com", "https://issuer.example", kl.rekorPEM), reg.Ref("team/app:v2"))
	wantRefused(t, err, "none of 1 signatures accepted")
}

// TestAttestations: verified attestations' statements are returned; one whose subject
// is another image does not count, and a required predicate type without one refuses.
func TestAttestations(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	k := newKey(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	other := reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))
	signTag(t, reg, "team/app", img.Digest, reg.Ref("team/app"), k)
	const slsa, spdx = "https://slsa.dev/provenance/v1", "https://spdx.dev/Document"
	// Provenance as a bundle referrer; an SBOM in the .att tag.
	pushBundle(t, reg, "team/app", img.Descriptor(), k.keyBundle(t, statement(img.Digest, slsa, map[string]any{"builder": map[string]string{"id": "ci"}})), slsa)
	pushTag(t, reg, "team/app", attTag(img.Digest), []sigLayer{{policy.DSSEMediaType, envelopeJSON(k.envelope(t, statement(img.Digest, spdx, map[string]any{"name": "sbom"}))), map[string]string{"predicateType": spdx}}})
	v := mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k), policy.WithAttestations(slsa, spdx))
	res, err := pull(t, v, reg.Ref("team/app:v1"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range res.Attestations {
		got[a.PredicateType] = string(a.Statement)
	}
	if !strings.Contains(got[slsa], `"builder"`) || !strings.Contains(got[spdx], `"sbom"`) {
		t.Errorf("attestations = %v", got)
	}

	// v2 is signed, but its only provenance names v1 as its subject.
	signTag(t, reg, "team/app", other.Digest, reg.Ref("team/app"), k)
	pushBundle(t, reg, "team/app", other.Descriptor(), k.keyBundle(t, statement(img.Digest, slsa, map[string]any{})), slsa)
	_, err = pull(t, mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k), policy.WithAttestations(slsa)), reg.Ref("team/app:v2"))
	wantRefused(t, err, "attestation "+slsa, "no verified attestation")
	// Not required: pulled, without it.
	res, err = pull(t, mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k), policy.WithAttestations()), reg.Ref("team/app:v2"))
	if err != nil || len(res.Attestations) != 0 {
		t.Errorf("optional attestations: %v, %d", err, len(res.Attestations))
	}
}

// TestReferrerFlood: hundreds of bundle referrers are read at most WithMaxSignatures
// at a time, in bounded requests; the .sig tag is still looked at.
func TestReferrerFlood(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	k := newKey(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	junk := newKey(t)
	for i := range 400 {
		b := junk.keyBundle(t, statement(img.Digest, policy.CosignSignPredicateType, map[string]int{"n": i}))
		pushBundle(t, reg, "team/app", img.Descriptor(), b, policy.CosignSignPredicateType)
	}
	v := mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k), policy.WithMaxSignatures(16))
	reg.ResetRequests()
	_, err := pull(t, v, reg.Ref("team/app:v1"))
	wantRefused(t, err, "none of 16 signatures accepted", "384 more not examined")
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteManifest}); n > 16+3 {
		t.Errorf("%d manifest requests for a flood of 400 referrers, want at most 19", n)
	}
	if n := reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n > 16 {
		t.Errorf("%d blob requests, want at most 16 (one bundle per referrer examined)", n)
	}
	// A real signature in the .sig tag is found behind the flood.
	signTag(t, reg, "team/app", img.Digest, reg.Ref("team/app"), k)
	if _, err := pull(t, v, reg.Ref("team/app:v1")); err != nil {
		t.Errorf("the .sig signature behind the flood: %v", err)
	}
}

// TestUnsupportedAndDefaults: signedBy is refused as unsupported (errors.Is
// ErrUnsupported too); a default reject with an insecureAcceptAnything scope.
func TestUnsupportedAndDefaults(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("open/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	reg.PushImage("gpg/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	reg.PushImage("closed/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	p, err := policy.Parse([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{
		"` + reg.Host() + `/open":[{"type":"insecureAcceptAnything"}],
		"` + reg.Host() + `/gpg/app":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/nonexistent"}]},
		"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	v := mustVerifier(t, p)
	if res, err := pull(t, v, reg.Ref("open/app:v1")); err != nil || res.Requirements[0].Type != "insecureAcceptAnything" {
		t.Errorf("open: %v", err)
	}
	_, err = pull(t, v, reg.Ref("gpg/app:v1"))
	wantRefused(t, err, "signedBy", "not verified by pullkit")
	if !errors.Is(err, pullkit.ErrUnsupported) {
		t.Errorf("signedBy: %v is not ErrUnsupported", err)
	}
	_, err = pull(t, v, reg.Ref("closed/app:v1"))
	wantRefused(t, err, "reject", "scope default")
}

// TestLegacyPayloadChecks: a .sig payload for another digest, or claiming another
// identity, is refused, whatever the key.
func TestLegacyPayloadChecks(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	k := newKey(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	other := reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))
	// The payload names v2's digest, under v1's tag.
	p := payload(reg.Ref("team/app"), other.Digest)
	pushTag(t, reg, "team/app", sigTag(img.Digest), []sigLayer{{policy.SimpleSigningMediaType, p,
		map[string]string{"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(k.sign(t, p))}}})
	_, err := pull(t, mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k)), reg.Ref("team/app:v1"))
	wantRefused(t, err, "it signs "+other.Digest.String())
	// The right digest, another repository's identity.
	signTag(t, reg, "team/app", other.Digest, reg.Ref("elsewhere/app"), k)
	_, err = pull(t, mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k)), reg.Ref("team/app:v2"))
	wantRefused(t, err, "identity mismatch", "elsewhere/app")
	// exactRepository accepts exactly that.
	if _, err := pull(t, mustVerifier(t, keyPolicy(reg.Host(), &policy.IdentityMatch{Type: policy.ExactRepository, DockerRepository: reg.Ref("elsewhere/app")}, k)), reg.Ref("team/app:v2")); err != nil {
		t.Errorf("exactRepository: %v", err)
	}
	// remapIdentity: pulled from team/, signed as elsewhere/ (with a tag identity).
	third := reg.PushImage("team/app", "v3", pullkittest.OCI, pullkittest.Layers(1, 64))
	signTag(t, reg, "team/app", third.Digest, reg.Ref("elsewhere/app:v3"), k)
	remap := &policy.IdentityMatch{Type: policy.RemapIdentity, Prefix: reg.Host() + "/team", SignedPrefix: reg.Host() + "/elsewhere"}
	if _, err := pull(t, mustVerifier(t, keyPolicy(reg.Host(), remap, k)), reg.Ref("team/app:v3")); err != nil {
		t.Errorf("remapIdentity: %v", err)
	}
	// A damaged signature annotation, a payload that is not JSON.
	bad := reg.PushImage("team/app", "v4", pullkittest.OCI, pullkittest.Layers(1, 64))
	pushTag(t, reg, "team/app", sigTag(bad.Digest), []sigLayer{
		{policy.SimpleSigningMediaType, []byte("not json"), map[string]string{"dev.cosignproject.cosign/signature": "!!"}},
		{policy.SimpleSigningMediaType, []byte("{}"), nil},
	})
	_, err = pull(t, mustVerifier(t, keyPolicy(reg.Host(), matchRepository, k)), reg.Ref("team/app:v4"))
	wantRefused(t, err, "none of 2 signatures accepted")
}

var _ = digest.FromBytes
var _ = manifest.Descriptor{}

// TestMirrorSignatures: the manifest comes from a mirror that lacks the signatures; the
// verifier reads them from the registry behind it, through the client's endpoints.
func TestMirrorSignatures(t *testing.T) {
	origin, mirror := pullkittest.NewRegistry(t), pullkittest.NewRegistry(t)
	img := origin.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64), pullkittest.Seed(3))
	if m := mirror.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64), pullkittest.Seed(3)); m.Digest != img.Digest {
		t.Fatalf("mirror holds %s, origin %s", m.Digest, img.Digest)
	}
	k := newKey(t)
	signTag(t, origin, "team/app", img.Digest, origin.Ref("team/app"), k)
	other := origin.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64), pullkittest.Seed(4))
	mirror.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64), pullkittest.Seed(4))
	pushBundle(t, origin, "team/app", other.Descriptor(), k.keyBundle(t, statement(other.Digest, policy.CosignSignPredicateType, map[string]any{})), policy.CosignSignPredicateType)
	v := mustVerifier(t, keyPolicy(origin.Host(), matchRepository, k))
	c, err := puller.New(puller.WithKeychain(anonymous{}), puller.WithVerifier(v), puller.WithMirrors(origin.Host(), mirror.Host()))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range []string{"v1", "v2"} {
		origin.ResetRequests()
		if _, err := c.Pull(context.Background(), origin.Ref("team/app:"+tag), store.NewMemory()); err != nil {
			t.Fatalf("%s: %v", tag, err)
		}
		if n := origin.Count(pullkittest.Match{Route: pullkittest.RouteBlob}); n != 1 {
			t.Errorf("%s: the origin served %d blobs, want the signature's alone", tag, n)
		}
	}
}
