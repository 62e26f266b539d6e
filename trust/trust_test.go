package trust_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/trust"
)

func TestUntrustedError(t *testing.T) {
	d := digest.FromString("index")
	s := trust.Subject{Reference: "r.example/app:v1", Digest: d}
	net := fmt.Errorf("list referrers: %w", pullkit.ErrUnreachable)
	err := error(trust.Refuse(s,
		trust.Requirement{Type: "sigstoreSigned", Scope: "r.example", Reason: "no signature\x1b[31m", Err: net},
		trust.Requirement{Type: "reject", Scope: "default", Reason: "the policy rejects every image"}))
	if !errors.Is(err, pullkit.ErrUntrusted) || !errors.Is(err, pullkit.ErrUnreachable) || errors.Is(err, pullkit.ErrNotFound) {
		t.Errorf("Unwrap: %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"untrusted: sigstoreSigned (scope r.example): no signature", "; reject (scope default): the policy rejects"} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.ContainsRune(msg, 0x1b) {
		t.Errorf("control character in %q", msg)
	}
	var ue *trust.UntrustedError
	if !errors.As(pullkit.Wrap(s.Reference, "verify", d, err), &ue) || ue.Digest != d || ue.Reference != s.Reference || len(ue.Unmet) != 2 {
		t.Errorf("As: %+v", ue)
	}
	many := make([]trust.Requirement, 20)
	for i := range many {
		many[i] = trust.Requirement{Type: "x", Reason: strings.Repeat("y", 5000)}
	}
	if m := trust.Refuse(s, many...).Error(); len(m) > 20000 || !strings.Contains(m, "and 12 more") {
		t.Errorf("a long refusal is %d bytes: %.200q", len(m), m)
	}
}

func TestSubjectDigests(t *testing.T) {
	idx, img := digest.FromString("index"), digest.FromString("image")
	s := trust.Subject{Digest: idx, Manifests: []manifest.Descriptor{{Digest: img}, {Digest: idx}}}
	if got := s.Digests(); len(got) != 2 || got[0] != idx || got[1] != img {
		t.Errorf("Digests = %v", got)
	}
	r := &trust.Result{Requirements: []trust.Requirement{{Type: "insecureAcceptAnything", Met: true}},
		Attestations: []trust.Attestation{{PredicateType: "https://slsa.dev/provenance/v1", Signature: trust.Signature{KeyID: "sha256:ab"}}}}
	if got := r.Summary(); got != "insecureAcceptAnything; attestation https://slsa.dev/provenance/v1 by key sha256:ab" {
		t.Errorf("Summary = %q", got)
	}
}
