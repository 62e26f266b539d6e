package policy_test

import (
	"testing"

	"github.com/pullkit/pullkit/trust/policy"
)

// FuzzParse: no policy document panics the parser or the verifier's construction, and
// what parses validates.
func FuzzParse(f *testing.F) {
	f.Add([]byte(fedoraPolicy))
	f.Add([]byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"*.example.com":[{"type":"sigstoreSigned","keyData":"YQ==","signedIdentity":{"type":"remapIdentity","prefix":"a.example.com/x","signedPrefix":"b.example.com/y"}}]}}}`))
	f.Add([]byte(`{"default":[{"type":"sigstoreSigned","fulcio":{"caData":"YQ==","oidcIssuer":"i","subjectEmail":"e"},"rekorPublicKeyData":"YQ=="}]}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, err := policy.Parse(raw)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed but does not validate: %v", err)
		}
		_, _ = policy.NewVerifier(p) // key data may not parse; it must not panic
		_ = policy.ScopeFor(p, "registry.example.com/team/app:v1")
	})
}

// FuzzParseSimpleSigning: simple-signing payloads come from registries.
func FuzzParseSimpleSigning(f *testing.F) {
	f.Add([]byte(`{"critical":{"identity":{"docker-reference":"r.example/a"},"image":{"docker-manifest-digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"},"type":"cosign container image signature"},"optional":null}`))
	f.Add([]byte(`{"critical":{}}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		id, d, err := policy.ParseSimpleSigning(raw)
		if err == nil && (id == "" || d.Validate() != nil) {
			t.Fatalf("accepted %q, %q", id, d)
		}
	})
}
