package pullkit

import (
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Event reports one step of a pull, for progress displays and logs.
//
// The contract, which every pull keeps (complete, failed, cancelled or resumed;
// pullkittest.CheckProgress checks a sequence against it):
//
//   - First the documents that decide what to pull: each manifest and index, as it is
//     fetched and verified, as EventVerified (What "index" or "manifest"), perhaps after
//     EventWaiting or EventRetrying of its own. They are not blobs of the plan.
//   - Then one EventPlanned (when the pull gets that far): Blobs and Total count every
//     blob the pull will transfer or find already stored, each digest once: the configs
//     (What "config") and the layers (What "layer"). A schema 1 image's synthesised
//     config is not transferred and not counted. layers.Fetch reports its own plan the
//     same way when it is called directly.
//   - Then each planned blob's events, in order for that blob (the blobs interleave):
//     EventQueued first, then any of EventWaiting, EventResuming, EventStarted,
//     EventProgress and EventRetrying, and last exactly one terminal event: EventVerified,
//     EventSkipped, EventFailed or EventCancelled. Nothing of a blob follows its terminal
//     event, and every planned blob gets one, also when the pull fails or is cancelled
//     before the blob started (EventCancelled).
//   - Done never goes backwards for a blob, except on the EventRetrying that starts it
//     over from 0 (Done 0: the bytes did not verify, and are discarded). A terminal
//     event keeps the Done reached: EventVerified and EventSkipped have Done == Total,
//     EventFailed and EventCancelled the bytes held (kept for a later pull to resume).
//   - Total is the blob's size for every event of a blob, or -1 while it is unknown
//     (schema 1 layers), until its terminal event, which has the size.
//
// So the blobs finished never outnumber Blobs, and the sum of the blobs' Done never
// exceeds Total when Total is not -1. Events of different blobs may be reported
// concurrently; those of one blob never are.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// What names the content: "index", "manifest", "config" or "layer" ("token" for a
	// wait of the authentication).
	What string
	// Digest names it ("" for EventPlanned).
	Digest digest.Digest
	// Done is how many of the blob's bytes are held (see the contract above); 0 for
	// EventPlanned.
	Done int64
	// Total is the blob's size, or -1 while it is unknown; for EventPlanned, the sum of
	// the sizes of the planned blobs, or -1 when one of them has no size known up front.
	Total int64
	// Blobs is, for EventPlanned, how many blobs the pull needs.
	Blobs int
	// Wait is, for EventWaiting, how long the pull waits before it goes on; 0 when that
	// is not known (another pull is downloading the blob: until it is done).
	Wait time.Duration
	// Err is the cause, for EventFailed, EventCancelled, EventWaiting and EventRetrying.
	Err error
	// Stages is, for EventUnpacked, where the layer's unpack spent its time.
	Stages Stages
}

// Stages says where the time of one layer's unpack went, so that an engine can see which
// stage bounds its pulls. Each is the wall-clock time one part of the pipeline spent on
// the layer; the parts run at once, so the stages overlap and do not add up to the whole.
// The applier's time is Tar + Write + Wait.
type Stages struct {
	// Fetch is the layer's download as the unpack saw it: from its first byte to the
	// transfer's verdict (0 when the layer came from the store).
	Fetch time.Duration
	// Inflate is the time spent decompressing the layer, on the goroutine that hands the
	// tar stream on; a gzip layer read from a spool or file may be inflated by workers
	// besides, and the result is hashed (the diffID) on a goroutine of its own, neither
	// counted here. It includes waiting for compressed bytes that have not arrived yet.
	Inflate time.Duration
	// Tar is the applier's time reading the tar stream: headers and file contents,
	// without Wait.
	Tar time.Duration
	// Write is the applier's time making the entries: files written, directories,
	// links, whiteouts, ownership, modes, times and attributes.
	Write time.Duration
	// Wait is the applier's time waiting for decompressed bytes: when it is most of the
	// applier's time, the download or the inflate bounds the layer, not the disk.
	Wait time.Duration
}

// Add returns the sum of s and o, stage by stage.
func (s Stages) Add(o Stages) Stages {
	return Stages{s.Fetch + o.Fetch, s.Inflate + o.Inflate, s.Tar + o.Tar, s.Write + o.Write, s.Wait + o.Wait}
}

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventPlanned: every blob the pull needs is known; Total and Blobs are its totals.
	EventPlanned EventKind = iota + 1
	// EventQueued: the blob is planned and waits for a connection.
	EventQueued
	// EventStarted: the transfer began (or began again after EventRetrying); Done is
	// what an earlier, interrupted one left.
	EventStarted
	// EventProgress: Done bytes of Total have arrived.
	EventProgress
	// EventWaiting: the pull waits (Wait long) before it goes on: a registry asked it to
	// (429 Retry-After), a retry backs off, or (Wait 0) another pull or process is
	// writing the same blob into the store.
	EventWaiting
	// EventRetrying: a transfer broke (Err) and goes on from Done: resumed from where it
	// stopped, or from 0 when the bytes did not verify (the only time Done goes back).
	EventRetrying
	// EventVerified: the content matched its digest (and size) and is stored.
	EventVerified
	// EventSkipped: the store already had it; nothing was downloaded.
	EventSkipped
	// EventFailed: it failed for good; Err says why.
	EventFailed
	// EventCancelled: the pull was cancelled (or another part of it failed) before the
	// blob was done; Err says why, and Done what is kept for a later pull to resume.
	EventCancelled
	// EventResuming: the store holds Done bytes of the blob from an earlier, interrupted
	// transfer and hashes them again before the transfer goes on after them (a large
	// partial file takes a moment); EventStarted with the same Done follows.
	EventResuming
	// EventUnpacked: a layer was applied and its diffID verified (unpack.Pipeline's
	// progress, not Pull's); Done is its uncompressed size, Stages where the time went.
	EventUnpacked
)

// Terminal reports whether k ends a blob's events: EventVerified, EventSkipped,
// EventFailed or EventCancelled.
func (k EventKind) Terminal() bool {
	return k == EventVerified || k == EventSkipped || k == EventFailed || k == EventCancelled
}

func (k EventKind) String() string {
	switch k {
	case EventPlanned:
		return "planned"
	case EventQueued:
		return "queued"
	case EventStarted:
		return "started"
	case EventProgress:
		return "progress"
	case EventWaiting:
		return "waiting"
	case EventRetrying:
		return "retrying"
	case EventVerified:
		return "verified"
	case EventSkipped:
		return "skipped"
	case EventFailed:
		return "failed"
	case EventCancelled:
		return "cancelled"
	case EventResuming:
		return "resuming"
	case EventUnpacked:
		return "unpacked"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}
