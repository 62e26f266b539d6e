// Package puller holds the registry conversation of a pull: it turns a reference
// ("repo:tag" or "repo@sha256:…") into verified manifests and the normalised
// manifest.Image, and hands out per-repository blob fetchers for the layers package.
//
// It reuses go-containerregistry for what is settled (reference parsing, credentials
// from the docker config and credential helpers, the basic/bearer token handshake) and
// owns what decides whether a pull is right:
//
//   - one complete Accept header (manifest.AcceptHeader), so no registry down-converts
//     schema 2 to schema 1;
//   - tags resolved with HEAD then GET by digest (GET by tag when HEAD is refused, with
//     Docker-Content-Digest checked); every manifest fetched by digest verified, with the
//     canonical rule for signed schema 1; bodies read through a size cap;
//   - one platform chosen from lists and indexes (manifest.Choose), the chosen manifest
//     fetched by digest and verified, then the config fetched and verified;
//   - retries with jittered backoff for idempotent requests on 5xx and broken
//     connections, 429 Retry-After honoured (capped, context-aware);
//   - redirects that never carry the registry's Authorization to another host, and plain
//     HTTP only to loopback registries unless WithPlainHTTP;
//   - mirrors (WithMirrors): an ordered list of endpoints per registry, asked before the
//     origin, with the origin as the last resort for manifests and blobs alike, unless
//     WithMirrorFallback(false) forbids ever contacting the origin.
//
// Every error is an *Error naming the reference, the step and the digest, wrapping a
// sentinel (ErrNotFound, ErrUnauthorized, ErrUnreachable, ErrTooLarge,
// pullkit.ErrDigestMismatch, pullkit.ErrNoMatch, …) for errors.Is, or the context's
// error when the caller gave up.
package puller
