// Package pullkit pulls container images the way an engine needs them, and holds what
// every part of it shares: the error vocabulary, progress events and the retry policy.
//
// A pull is one pipeline, with data flowing one way, left to right:
//
//	reference ──► puller ──────────► manifest ─────────► layers ───────────► store ───────────► unpack
//	"repo:tag"   resolve, negotiate  bytes in, model    verified concurrent  content + names    rootfs dir or
//	"repo@dgst"  auth, HTTP, verify  out (no I/O)       transfer (readers    (OCI layout dir,   overlay snapshots
//	             pick platform                          from an offset)      memory), GC        per chain ID
//
// Imports follow another order, one of layers: each package imports only packages before
// it in pullkit (this package), platforms, manifest, store, layers, and then unpack,
// archive and puller, none of which imports another of those three; pullkittest imports
// only pullkit, platforms and manifest; the configuration parsers (config/hosts,
// config/registries, config/auth), which puller reads users' files with, import none of
// pullkit's packages; trust (what a verifier is given and returns) imports only pullkit
// and manifest, puller imports it, and trust/policy (the policy engine, with
// sigstore-go) imports trust and manifest, never puller, so that a program that never
// verifies links no cryptography stack. So an engine can take the transfer, the store or
// the unpacker without the HTTP client, and the model without any I/O (go list -deps
// shows it; TestImportOrder checks it).
//
// The front door is puller.Client.Pull(ctx, ref, store): it resolves the reference,
// verifies every manifest, fetches the config and the layers at once into the store,
// stores the manifest (converted to OCI by default; schema 1 always converted, its
// config synthesised) and names the image by its full reference last. Resolve gives a
// tag's digest in as few requests as the protocol allows, for pull-by-digest services;
// Inspect gives the model without layers.
//
// Package manifest understands every manifest format still served (Docker schema 1
// signed and unsigned, schema 2, manifest lists, OCI manifests and indexes) and turns each
// into one model, manifest.Image, whose layers are base first. Digests are computed over
// the bytes as served, or for signed schema 1 over the signed payload, whose signatures
// are verified. Package platforms parses, normalises and matches platforms; it is its own
// package because matching is policy an engine may replace (manifest.Choose takes any
// platforms.Matcher).
//
// Package layers is the transfer: every byte verified before a blob gets its name,
// concurrent over connections shared by all the blobs of a pull, resumed from the byte it
// reached, large blobs split into parallel ranges only when one stream is what limits
// them, memory bounded whatever a registry declares. It reads from any layers.Fetcher (the
// puller implements it; the HTTP protocol stays there) and writes into any store.Content.
//
// Package store holds content and names in containerd's content model, in small
// interfaces: writers that commit only verified bytes and resume, readers, info, walk and
// delete, a name index, leases and garbage collection. store.Layout is an OCI image
// layout directory that skopeo, umoci and crane read, and that several processes may pull
// into at once; store.Memory keeps everything in memory; store/storetest is the
// conformance suite any implementation can run.
//
// Package unpack applies layers to a flattened root filesystem or to overlay snapshots
// by chain ID, with every name resolved inside the target, while the layers download. It
// is its own package because it is the most security-sensitive code an engine has.
//
// Package archive writes what the store holds as a docker-archive tar (the format
// `docker save` wrote, with the legacy v1 ids docker computes).
//
// Package pullkittest is the test kit for programs that use pullkit: an in-process
// registry that answers as the CNCF distribution registry does (Accept negotiation,
// canonical schema 1 digests, ranges, error codes, token auth, referrers), seeded with
// images in every format, with faults to inject and a log of requests.
//
// Every error a pullkit package returns wraps one of this package's sentinels
// (ErrNotFound, ErrUnauthorized, ErrDenied, ErrTooManyRequests, ErrDigestMismatch,
// ErrSizeMismatch, ErrNoMatch, ErrUnsupported, ErrInvalid, ErrTooLarge, ErrUnreachable,
// ErrAlreadyExists, ErrUntrusted), a context error, or, when the local file system fails, the
// operating system's own error (errors.Is(err, fs.ErrPermission) and syscall.ENOSPC
// work); the typed errors carry the details.
//
// Internal packages serve the tests and the module: internal/regtest starts the real
// docker-registry (distribution 2.8, schema 1 on) and distribution v3 on loopback,
// internal/faultproxy breaks responses between a puller and them, internal/text escapes
// what the network sent before it is printed, internal/dockerv1 mirrors docker's own v1
// image structures for the ids legacy tools compute.
//
// The example command examples/pull is a thin shell over the library; run it with no
// reference to see a whole pull against an in-process registry. examples/schema1-proxy
// serves schema 1 rewrites to old clients, built on manifest.ToSchema1.
package pullkit
