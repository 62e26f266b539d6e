package puller_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
)

// sbomRequired is an engine's own admission rule: an image may run only if an SBOM
// refers to it. It reads the registry through the trust.Source it is given: the
// client's own connection, credentials and mirrors.
type sbomRequired struct{}

func (sbomRequired) Verify(ctx context.Context, s trust.Subject, src trust.Source) (*trust.Result, error) {
	sboms, err := src.Referrers(ctx, s.Digest, "application/spdx+json")
	if err != nil {
		return nil, err // puller turns it into a refusal that also wraps the cause
	}
	if len(sboms) == 0 {
		return nil, trust.Refuse(s, trust.Requirement{Type: "sbom", Reason: "no SBOM refers to " + s.Digest.String()})
	}
	return &trust.Result{Subject: s, Requirements: []trust.Requirement{{Type: "sbom", Met: true, Reason: sboms[0].Digest.String()}}}, nil
}

// A custom trust.Verifier: the client calls it after the manifest and before any blob.
func ExampleWithVerifier() {
	ctx := context.Background()
	reg, _ := pullkittest.Start()
	defer reg.Close()
	withSBOM := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	reg.PushArtifact("team/app", withSBOM.Descriptor(), "application/spdx+json")
	reg.PushImage("team/app", "v2", pullkittest.OCI, pullkittest.Layers(1, 64))

	c, _ := puller.New(puller.WithVerifier(sbomRequired{}))
	_, err := c.Pull(ctx, reg.Ref("team/app:v1"), store.NewMemory())
	fmt.Println("v1:", err)
	reg.ResetRequests()
	_, err = c.Pull(ctx, reg.Ref("team/app:v2"), store.NewMemory())
	fmt.Println("v2 untrusted:", errors.Is(err, pullkit.ErrUntrusted))
	fmt.Println("blobs fetched for v2:", reg.Count(pullkittest.Match{Route: pullkittest.RouteBlob}))
	// Output:
	// v1: <nil>
	// v2 untrusted: true
	// blobs fetched for v2: 0
}
