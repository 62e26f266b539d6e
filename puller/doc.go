// Package puller holds the registry conversation of a pull, and the library's front
// door. A Client turns a reference ("repo:tag" or "repo@sha256:…") into a complete,
// verified, named image in a store (Pull); into the normalised manifest.Image without
// layers (Inspect); for pull-by-digest services, into a pinned digest (Resolve,
// ResolveAll); or, for vouching services, into the artifacts that refer to an image
// (Referrers, PullArtifact).
//
// It reuses go-containerregistry for what is settled (reference parsing, credentials
// from the docker config and credential helpers) and owns what decides whether a pull is
// right and how much it costs:
//
//   - the fewest round trips: Pull of a tag is one manifest GET (its
//     Docker-Content-Digest checked); Resolve of a tag is one HEAD (and the index's GET
//     when the tag names one); a digest is one verified GET; /v2/ is never pinged;
//   - authentication learnt from the first 401 per registry and tokens kept per
//     repository scope for the client's life, refreshed when refused or expired; token
//     realms on private or loopback addresses only for registries on such addresses;
//   - one complete Accept header (manifest.AcceptHeader), so no registry down-converts
//     schema 2 to schema 1; every manifest verified against the digest that names it,
//     with the canonical rule for signed schema 1; bodies read through a size cap;
//   - one platform chosen from lists and indexes (or every one, WithAllPlatforms), and
//     a single image checked against a platform asked for explicitly;
//   - one retry policy for requests (5xx, broken connections, and 429 waited for as
//     Retry-After says, then the same request sent again: a HEAD never becomes a GET)
//     and for blobs; deadlines on every request phase and an idle and minimum-rate rule
//     on every body (Timeouts);
//   - the HTTP side of the transfer (a layers.Fetcher): Range requests, 206 and
//     Content-Range checked, a server that ignores ranges read past the offset;
//   - redirects that never carry the registry's Authorization (or an endpoint's
//     configured headers) to another host, HTTPS first to every registry with plain
//     HTTP only for loopback or insecure registries that do not speak TLS (or forced
//     with WithPlainHTTP), and no registry elsewhere sending the puller to loopback or
//     link-local addresses;
//   - TLS per registry (WithRootCAs, WithClientCertificate, WithInsecureRegistry) and
//     proxies (from the environment, or WithProxy), through one per-host seam that keeps
//     every deadline and guard;
//   - the configuration users already have: hosts directories (WithHostsDir),
//     containers-registries.conf (WithRegistriesConf), auth files (WithAuthFile), plain
//     credentials and callbacks (WithCredentials, WithCredentialsFunc,
//     WithPullCredentials), and Client.Plan to see where a pull would go;
//   - mirrors (WithMirrors, or from those files): a tag resolved only by endpoints that
//     may resolve it, content by digest from every endpoint that may pull, mirrors first,
//     each mirror with its own deadlines and skipped for the rest of a call once dead;
//     the registry stays the last resort unless WithMirrorFallback(false);
//   - trust (WithVerifier): a trust.Verifier called once the manifests are verified and
//     before any config or layer blob, reading signatures through the same endpoints;
//     a refusal wraps pullkit.ErrUntrusted and stores nothing.
//
// Every error wraps one sentinel of the module's vocabulary (pullkit.ErrNotFound,
// pullkit.ErrUnauthorized, …) for errors.Is, or is the context's error when the caller
// gave up; a *pullkit.Error names the reference, the step and the digest once, and a
// *pullkit.HTTPError carries the registry's answer (codes, message, Retry-After, whether
// credentials were sent).
package puller
