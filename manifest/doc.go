// Package manifest turns the bytes of any manifest a registry serves into one model, and
// converts between the formats; it does no I/O at all.
//
// Parse understands Docker schema 1 (signed and unsigned), Docker schema 2, Docker
// manifest lists, OCI image manifests and OCI indexes, and sniffs the format when a
// registry's Content-Type says nothing (application/json, text/plain); a specific type
// that contradicts the document is refused. Artifacts (an OCI manifest with an
// artifactType or a config that is not an image's) are refused as images with
// pullkit.ErrUnsupported, and read as artifacts by ParseArtifact.
//
// A manifest's digest is the sha256 of its bytes as served; for signed schema 1 it is the
// canonical digest of the signed payload, whose libtrust signatures are verified, with
// every field read from the payload only. Verify checks bytes against the digest they
// were asked by.
//
// Image is the model of a pull, the same for every format: layers base first (schema 1's
// newest-first list reversed; throwaway layers kept and flagged Empty), diffIDs from the
// config, the runtime defaults (Env, Cmd, Entrypoint, …) from ImageConfig, what was
// served and what was stored. Choose picks an index's entry with a platforms.Matcher.
//
// The conversions are here too: ConvertImage between Docker schema 2 and OCI, FromSchema1
// (a config synthesised from the history and the diffIDs, as docker and skopeo do),
// ToSchema1 (a signed rewrite for old clients, by tag only), NewIndex, and ChainIDs.
package manifest
