// Package layers moves blobs from a registry into a content store, verified, concurrent
// and resumable, at the speed of the machine.
//
// The store is an OCI image layout directory ([Layout], opened with [OpenLayout]):
// oci-layout, index.json and blobs/<alg>/<hex>, readable as is by skopeo, umoci and
// crane. Transfers in progress live in <dir>/ingest/, outside blobs/, so readers of the
// layout never see them.
//
// [Fetch] downloads a list of blobs through a [Fetcher] (the puller's repository client):
//
//   - every body streams through the digest's hash and a size check into an ingest file,
//     which is moved into blobs/ only once it verifies: nothing unverified ever carries
//     a final name;
//   - at most [WithJobs] requests are in flight; a blob the store has is not fetched
//     again, and one digest is fetched once even when it is listed twice or wanted by
//     concurrent Fetch calls into the same store (layouts of one directory share a
//     singleflight);
//   - an interrupted body is resumed with "Range: bytes=N-" from the byte it reached,
//     and only a 206 whose Content-Range starts at N (with the blob's size as total) is
//     appended; a 200 means the server ignored the Range, and the transfer starts over
//     from byte 0 on that same body. A blob fails after [WithMaxAttempts] attempts in a
//     row without progress; a body silent for [WithStallTimeout] is cancelled and counts
//     as a failed attempt;
//   - a partial file left by a killed process (ingest/<alg>-<hex>.partial, flock'ed while
//     in use) is re-hashed and continued with a Range request on the next Fetch; if the
//     result does not verify, the blob is fetched once more from scratch. Blobs under
//     1 MiB use an unnamed file instead (O_TMPFILE, linked into blobs/ once verified),
//     which costs one metadata operation less and leaves nothing behind after a crash;
//   - a blob of 1 MiB or more goes through a pipe: its receiver reads into aligned
//     blocks and writes them at their offsets, with O_DIRECT where the file system
//     takes it ([WithDirectIO]), while another goroutine hashes the blocks in order from
//     memory; a window bounds how far receiving may run ahead of the hash;
//   - a large blob (by default from 32 MiB, and only once no other blob of the call
//     waits for a request slot) whose one stream proves to be the limit has the rest of
//     it split into parallel ranged requests through the same pipe; [WithParallelRanges]
//     splits from the first byte instead, or never;
//   - diffIDs (sha256 of the uncompressed layer, gzip, zstd or plain, sniffed from the
//     bytes) are computed while the blob streams, in a goroutine of their own, when asked
//     for ([Blob].DiffID, always for schema 1) and checked against [Blob].WantDiffID;
//   - progress is reported per blob as [Event] values.
//
// Memory does not grow with blob size: each transfer owns a few fixed buffers (see
// [WithBufferSize]), which are reused, and bytes are handed over by buffer, never by
// byte; a pipe holds at most its window (4 MiB for one stream, 16 MiB for parallel
// ranges) plus a block per receiver.
//
// Failure leaves the store clean: the ingest files of a blob that failed to verify
// (digest or size) are deleted; those of an interrupted transfer (network error, stall,
// cancellation) are kept for the next run to resume. A layer whose blob verifies but whose
// diffID does not match is stored (its content is what its digest names) and reported
// with [ErrDiffIDMismatch].
package layers
