// Package layers moves blobs into a content store: verified, concurrent over shared
// connections, resumable, in bounded memory, at the speed of the link or of the
// machine, whichever is less.
//
// Fetch reads blobs through a Fetcher (the puller implements it over HTTP; anything that
// returns a blob's bytes from an offset will do) and writes them through a store's
// writers (store.Content), which commit only what hashes to the digest and has the size
// the descriptor says: nothing unverified ever carries a final name.
//
// One engine runs a call. Its workers, WithJobs of them (16 by default), share the
// connections among all the blobs:
//
//   - a blob under 1 MiB, or of unknown size (schema 1), is received inline by one
//     worker, into one buffer; many of them are in flight at once, which is what a long
//     round trip needs;
//   - a larger blob gets a transfer: its parts receive aligned blocks, and its writer
//     goroutine hands them in order to the store's writer (which hashes and writes them
//     at once) and to the blob's taps (the diffID, an unpacker); four large blobs start
//     at once, more only while those running are limited by their link;
//   - a transfer whose writer waits for its one stream (a long or capped link) is split
//     into parallel ranged requests, each asking for a stretch nobody has asked for:
//     no request is ever cut short, so every byte is asked for, and sent, once; a
//     server that answers a range with the whole blob has that answer taken as the
//     whole fetch;
//   - bytes that arrive ahead of the writer are held by the store's writer
//     (store.RangeWriter: a Layout keeps them in the partial file, with a record) until
//     the bytes before them are written, so memory never grows with the blob, nor with
//     what a registry declares, and an interrupted transfer keeps every stretch it
//     received;
//   - connections are added only while they add throughput (see the controller), and a
//     429 halves them.
//
// A body that breaks is resumed from the byte it reached; a blob that does not verify is
// fetched again from the start; both within the retry policy (WithRetry), counting only
// attempts that moved nothing. A blob the store has is skipped (one whose size is not the
// descriptor's is taken for damaged and fetched again); another transfer of the same
// digest into the same store, in this process or another, is waited for, not repeated.
// What an interrupted transfer received (its prefix and every stretch beyond) stays in
// the store's writer for the next call, which asks only for what is missing. Every loop honours the context, decompression for diffIDs included.
//
// Progress is reported as pullkit.Event values (WithProgress): the call's totals first,
// then each blob queued, started, its progress, retries and waits, and its end.
package layers
