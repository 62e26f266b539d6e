// Package pullkit pulls container images the way an engine needs them.
//
// A pull is one pipeline, with data flowing one way through three packages:
//
//	reference ──► puller ──────────────► manifest ───────────► layers ─────────────► store / export
//	"repo:tag"     resolve + negotiate    bytes in, model out    verified concurrent    OCI layout dir,
//	"repo@dgst"    verify, pick platform  (no I/O)               transfer, resume       docker-archive tar
//
// Package manifest understands every manifest format still served (Docker schema 1 signed
// and unsigned, Docker schema 2, Docker manifest lists, OCI manifests and indexes) and turns
// each into one model, manifest.Image, whose layers are base first (schema 1's newest-first
// list is reversed; throwaway layers are kept and flagged Empty). Digests are computed over
// the bytes as served, or for signed schema 1 over the signed payload, and schema 1
// signatures are verified. It chooses a platform from an index and does no I/O at all.
//
// Package puller is the registry conversation: one complete Accept header, HEAD to resolve
// a tag, digest verification, a manifest size cap, credentials from go-containerregistry's
// keychains, retries with backoff, and redirects that never carry the registry's
// Authorization to another host. puller.Client.Resolve turns a tag or a list digest into a
// platform manifest's digest without downloading a blob.
//
// Package layers downloads blobs into an OCI image layout directory with bounded
// concurrency, verifying every byte before a blob gets its final name, resuming broken
// bodies with Range requests and fetching each digest once per store.
//
// Package archive writes what the store holds as a docker-archive tar (the format `docker
// save` writes, with the legacy v1 ids docker computes); it is its own package because
// writing that format is neither parsing nor transfer.
//
// Two internal packages serve tests of several packages: internal/regtest starts the real
// docker-registry (CNCF distribution 2.8) on loopback and seeds it, because negotiation,
// schema 1 digests and resume must be proven against the real server; internal/faultproxy
// stands between a puller and it and breaks responses the ways networks do.
//
// The example command examples/pull is the CLI contract; run it with no reference to see a
// whole pull against an in-process registry. examples/schema1-proxy serves schema 1
// rewrites to old clients, built on manifest.ToSchema1.
package pullkit
