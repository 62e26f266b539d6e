package policy_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
	"github.com/pullkit/pullkit/trust"
	"github.com/pullkit/pullkit/trust/policy"
)

// A pull checked against a containers-policy.json: images under team/ must be signed by
// the key (cosign's formats), everything else is refused. The signature is checked after
// the manifest and before the config or any layer is fetched.
func ExampleLoad() {
	ctx := context.Background()
	reg, _ := pullkittest.Start()
	defer reg.Close()
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(2, 1024))
	key := newKey(nil)                                                  // what `cosign generate-key-pair` makes
	signTag(nil, reg, "team/app", img.Digest, reg.Ref("team/app"), key) // what `cosign sign --key` pushes

	dir, _ := os.MkdirTemp("", "policy")
	defer os.RemoveAll(dir)
	_ = os.WriteFile(filepath.Join(dir, "cosign.pub"), key.pem, 0o600)
	_ = os.WriteFile(filepath.Join(dir, "policy.json"), []byte(`{
	  "default": [{"type": "reject"}],
	  "transports": {"docker": {"`+reg.Host()+`/team": [{
	    "type": "sigstoreSigned",
	    "keyPath": "`+filepath.Join(dir, "cosign.pub")+`",
	    "signedIdentity": {"type": "matchRepository"}
	  }]}}
	}`), 0o600)

	p, err := policy.Load(filepath.Join(dir, "policy.json"))
	if err != nil {
		panic(err)
	}
	v, err := policy.NewVerifier(p)
	if err != nil {
		panic(err)
	}
	c, _ := puller.New(puller.WithVerifier(v))
	var verified *trust.Result
	pulled, err := c.Pull(ctx, reg.Ref("team/app:v1"), store.NewMemory(), puller.WithVerified(func(r *trust.Result) { verified = r }))
	if err != nil {
		panic(err)
	}
	s := verified.Signatures[0]
	fmt.Println("layers:", len(pulled.Layers))
	fmt.Println("signed by a key of the policy:", s.KeyID == policy.KeyID(key.priv.Public()), "format:", s.Format)

	reg.PushImage("other/app", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	_, err = c.Pull(ctx, reg.Ref("other/app:v1"), store.NewMemory())
	fmt.Println("other/app untrusted:", errors.Is(err, pullkit.ErrUntrusted))
	// Output:
	// layers: 2
	// signed by a key of the policy: true format: tag
	// other/app untrusted: true
}

// A pull-by-digest service pins a batch of tags and learns, for each, whether it may
// run: ResolveAll verifies every reference (at most WithJobs at once), one result or
// typed error each, downloading no blob.
func ExampleVerifier_resolveAll() {
	ctx := context.Background()
	reg, _ := pullkittest.Start()
	defer reg.Close()
	key := newKey(nil)
	signed := reg.PushImage("team/api", "v1", pullkittest.OCI, pullkittest.Layers(1, 64))
	reg.PushImage("team/api", "v2", pullkittest.OCI, pullkittest.Layers(1, 64)) // never signed
	pushBundle(nil, reg, "team/api", signed.Descriptor(),
		key.keyBundle(nil, statement(signed.Digest, policy.CosignSignPredicateType, map[string]any{})), policy.CosignSignPredicateType) // cosign 3's bundle

	v, _ := policy.NewVerifier(&policy.Policy{Default: []policy.Requirement{
		policy.SigstoreSignedByKeys(&policy.IdentityMatch{Type: policy.MatchRepository}, key.pem),
	}})
	c, _ := puller.New(puller.WithVerifier(v))
	for _, r := range c.ResolveAll(ctx, []string{reg.Ref("team/api:v1"), reg.Ref("team/api:v2")}, puller.WithJobs(4)) {
		var ue *trust.UntrustedError
		switch {
		case r.Err == nil:
			fmt.Println("run", r.Resolved.Pinned() == reg.Ref("team/api@"+signed.Digest.String()), r.Resolved.Trust.Signatures[0].Format)
		case errors.As(r.Err, &ue):
			fmt.Println("refuse:", ue.Unmet[0].Type, "unmet")
		default:
			fmt.Println("error:", r.Err)
		}
	}
	// Output:
	// run true bundle
	// refuse: sigstoreSigned unmet
}
