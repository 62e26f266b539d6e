// Package puller is the registry conversation of a pull, and the library's front door:
// Client.Pull(ctx, ref, store) leaves a complete, verified, named image in a store;
// Client.Resolve turns a tag or an index digest into the platform's manifest digest in as
// few requests as the protocol allows; Client.Inspect gives the model without layers.
//
// It reuses go-containerregistry for reference parsing and credentials (the docker
// config and credential helpers) and owns everything that decides whether a pull is
// right and fast:
//
//   - one complete Accept header (manifest.AcceptHeader), so no registry down-converts
//     schema 2 to schema 1; every manifest fetched by digest verified (the canonical rule
//     for signed schema 1), Docker-Content-Digest checked on tags, bodies read through a
//     size cap;
//   - authentication without a /v2/ ping: a 401's challenge is learnt, per registry, and
//     tokens are kept per scope for the client's life; token realms on private or
//     loopback addresses only for registries on such addresses;
//   - a deadline on every request phase (connect, TLS, response headers) and an idle and
//     minimum-rate rule on every body (Timeouts); retries as the pullkit.RetryPolicy says,
//     a 429's Retry-After honoured within it and refused at once beyond it;
//   - redirects that never carry the registry's Authorization to another host, plain HTTP
//     only to loopback registries unless WithPlainHTTP, and no loopback or link-local
//     address reached for a registry that is elsewhere;
//   - the HTTP side of the transfer (a layers.Fetcher): Range requests, 206 and
//     Content-Range checked, a server that ignores ranges read past the offset;
//   - mirrors (WithMirrors): endpoints asked before the registry, which is the last
//     resort unless WithMirrorFallback(false) forbids ever contacting it.
//
// Every error is a *pullkit.Error naming the reference, the step and the digest, wrapping
// a sentinel of the pullkit package, with the registry's answer in a *pullkit.HTTPError.
package puller
