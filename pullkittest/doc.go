// Package pullkittest is an in-process container registry for the tests of programs
// that pull images: an engine's own fetch helpers, a mirror, a vouching service. It is
// to registries what net/http/httptest is to HTTP servers.
//
// It exists because the registries a test can start in-process get wrong exactly what
// pull code has to get right. go-containerregistry's pkg/registry ignores Accept,
// reports sha256 of the raw bytes as Docker-Content-Digest for signed schema 1, and
// answers 416 to an open-ended Range; a client tested against it passes and then fails
// against the real thing. This registry answers as CNCF distribution (the registry most
// others copy) does: by default as distribution 3, the current release, and
// WithDistribution28 as Debian's docker-registry 2.8, which still serves schema 1. A test
// asks both real registries the same questions as the kit and compares every answer a
// client can see (distribution 3 with the defaults, 2.8 with WithDistribution28):
//
//   - GET and HEAD of /v2/ (any method, as distribution's base route), manifests, blobs,
//     tags/list (n and last, and the Link to the next page; 2.8 answers every tag
//     whatever they say), the catalog, and the OCI 1.1 referrers API, which distribution
//     does not have and the kit serves by default as registries that have it do
//     (WithoutReferrersAPI answers its 404, and keeps the sha256-<hex> tag schema);
//   - Accept negotiation: an OCI manifest asked for without its media type is 404
//     MANIFEST_UNKNOWN (and an OCI index too with 2.8; distribution 3 serves an index to
//     any client), a manifest list asked for by tag without the list type is its
//     linux/amd64 entry, and schema 2 is rewritten as signed schema 1 for clients that do
//     not accept it only WithSchema1Conversion (2.8 does, 3 does not);
//   - Docker-Content-Digest, Content-Type, Content-Length and ETag as distribution sets
//     them, the canonical payload digest for signed schema 1 included (and,
//     WithSchema1Resigning, schema 1 signed anew by the registry on every request, as
//     2.8 serves it);
//   - Range on blobs: 206 with Content-Range for bytes=N- and bytes=N-M, 416 when it
//     cannot be satisfied;
//   - error bodies with distribution's codes, messages and details (3's details are
//     text, "unknown tag=v1"; 2.8's are objects, {"Tag":"v1"}): MANIFEST_UNKNOWN for a
//     missing tag and for a repository that does not exist (distribution tells them apart
//     only in tags/list, which says NAME_UNKNOWN; WithNameUnknown makes manifests and
//     blobs say it too), BLOB_UNKNOWN, UNAUTHORIZED with the WWW-Authenticate challenge,
//     and DENIED or TOOMANYREQUESTS on demand;
//   - basic auth, or bearer tokens from a token server on another loopback port, with
//     scopes checked and tokens that expire.
//
// It is a registry to pull from: pushes and deletes are not served (405 UNSUPPORTED),
// nor uploads (404), since content is seeded through Go.
//
// Content is seeded through Go, not pushed: PutBlob and PutManifest store bytes as
// given, and the builders (PushImage, PushIndex, PushArtifact) make deterministic images
// in every format — Docker schema 2, OCI, signed schema 1, manifest lists, OCI indexes
// with BuildKit attestations, and artifacts with a subject — and return what they
// pushed, digests and layers included.
//
// Faults are injected per request: a Rule matches method, route, repository and
// reference, counts the requests it matches (the Nth, Times of them) and applies a Fault:
// connection resets, truncation, stalls, trickles, 5xx, 429 with Retry-After, wrong bytes,
// extra bytes, a wrong Content-Type, or a redirect of blobs to a second server, so that a
// test can check whether the client carried Authorization there. Every request is logged
// (Requests, Count), so a test can assert the round trips a client made.
//
// Everything listens on 127.0.0.1. NewRegistry ties a registry to a test and closes it
// with t.Cleanup; Start makes one without a test, for a demo.
package pullkittest
