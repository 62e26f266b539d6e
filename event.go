package pullkit

import (
	"fmt"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// Event reports one step of a pull, for progress displays and logs. A pull reports its
// manifests (and index) as they are fetched, then one EventPlanned with the layers'
// totals, then each layer's own events (EventQueued, EventStarted, EventProgress …, and
// one of EventVerified, EventSkipped, EventFailed or EventCancelled). Configs are
// fetched beside the layers and are not in EventPlanned's totals: each one's single event
// (EventVerified once fetched, or EventSkipped when the store had it) may come before or
// after EventPlanned.
type Event struct {
	// Kind says what happened.
	Kind EventKind
	// What names the content: "index", "manifest", "config" or "layer".
	What string
	// Digest names it ("" for EventPlanned).
	Digest digest.Digest
	// Done is how many of its bytes have arrived (monotonic per blob, except after
	// EventRetrying that starts it over); for EventPlanned, the bytes already in the store.
	Done int64
	// Total is its size, or -1 while unknown; for EventPlanned, the sum of the sizes
	// known up front (blobs of unknown size count 0).
	Total int64
	// Blobs is, for EventPlanned, how many blobs the pull needs.
	Blobs int
	// Wait is, for EventWaiting, how long the pull waits before it goes on; 0 when that
	// is not known (another pull is downloading the blob: until it is done).
	Wait time.Duration
	// Err is the cause, for EventFailed, EventWaiting and EventRetrying.
	Err error
}

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventPlanned: every blob the pull needs is known; Total and Blobs are its totals.
	EventPlanned EventKind = iota + 1
	// EventQueued: the blob waits for a connection.
	EventQueued
	// EventStarted: the transfer began; Done is what an earlier, interrupted one left.
	EventStarted
	// EventProgress: Done bytes of Total have arrived.
	EventProgress
	// EventWaiting: the pull waits (Wait long) before it goes on: a registry asked it to
	// (429 Retry-After), or another pull is downloading the same blob into the store.
	EventWaiting
	// EventRetrying: a transfer broke (Err) and goes on from Done: resumed from where it
	// stopped, or from 0 when the server ignored the range or the bytes did not verify.
	EventRetrying
	// EventVerified: the content matched its digest (and size) and is stored.
	EventVerified
	// EventSkipped: the store already had it; nothing was downloaded.
	EventSkipped
	// EventFailed: it failed for good; Err says why.
	EventFailed
	// EventCancelled: the pull was cancelled (or another part of it failed) before it
	// was done.
	EventCancelled
)

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
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}
