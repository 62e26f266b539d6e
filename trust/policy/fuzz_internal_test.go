package policy

import (
	"testing"

	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
)

// FuzzLegacySignature: what a ".sig" or ".att" layer carries (annotations, a DSSE
// envelope, the manifest of layers) comes from registries; none of it may panic.
func FuzzLegacySignature(f *testing.F) {
	f.Add("MEUCIQ==", "", "", `{"SignedEntryTimestamp":"MEU=","Payload":{"body":"e30=","integratedTime":1,"logIndex":1,"logID":"00"}}`, []byte(`{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"keyid":"","sig":"MEU="}]}`))
	f.Add("", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", "x", "{}", []byte(`{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","layers":[{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","size":1}]}`))
	f.Fuzz(func(t *testing.T, sig, cert, chain, rekor string, doc []byte) {
		ann := map[string]string{annSignature: sig, annCertificate: cert, annChain: chain, annBundle: rekor}
		_, _, _ = legacyBundle(ann, doc, nil)
		var env protodsse.Envelope
		if unmarshalEnvelope(doc, &env) == nil {
			_, _, _ = legacyBundle(ann, nil, &env)
		}
		_, _ = parseLayersManifest(doc)
		_ = predicateOf(string(doc), InTotoArtifactType)
	})
}
