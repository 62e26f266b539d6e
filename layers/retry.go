package layers

import (
	"context"
	"errors"
	"fmt"

	"github.com/pullkit/pullkit"
)

// tries counts a part's or a blob's attempts in a row that moved nothing, and waits
// between them, as the retry policy says.
type tries struct{ none int }

// minProgress is what an attempt must receive to count as having moved a blob forward
// (unless it received the rest of the part): a body that breaks or stalls after a few
// bytes every time, or trickles under the minimum rate, gives up within the retry policy
// instead of going on for as many attempts as the blob has bytes.
const minProgress = 64 << 10

// failed decides what follows an attempt that received n bytes and ended with err, the
// transfer to go on from byte from: nil to try again (after the wait it has done), or
// the error that ends the blob.
func (t *tries) failed(e *engine, j *job, ctx context.Context, n, from int64, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !retryable(err) {
		return blobErr(j, pullkit.OpFetchBlob, err)
	}
	// A request that failed (a 429, a 5xx, a connection refused or broken): no tiny
	// blobs beside the slots from now on, in case it was the requests' number.
	e.mu.Lock()
	e.tinyOff = true
	e.mu.Unlock()
	moved := n >= minProgress
	if moved {
		t.none = 0
	} else {
		t.none++
	}
	if t.none >= e.o.retry.Attempts {
		return blobErr(j, pullkit.OpFetchBlob, fmt.Errorf("gave up after %d attempts in a row without progress: %w", t.none, err))
	}
	wait := e.o.retry.Delay(max(t.none, 1))
	if moved {
		wait = 0 // it was moving: go on at once
	}
	var he *pullkit.HTTPError
	if errors.As(err, &he) && he.RetryAfter > 0 {
		if he.RetryAfter > e.o.retry.MaxRetryAfter {
			return blobErr(j, pullkit.OpFetchBlob, err)
		}
		wait = he.RetryAfter
	}
	if wait > 0 {
		e.report(j, pullkit.Event{Kind: pullkit.EventWaiting, Done: from, Total: j.desc.Size, Wait: wait, Err: err})
	}
	e.report(j, pullkit.Event{Kind: pullkit.EventRetrying, Done: from, Total: j.desc.Size, Err: err})
	return pullkit.Sleep(ctx, wait)
}

// retryable reports whether another attempt may cure err: broken connections, stalls,
// timeouts, 5xx and 429 may pass; a verdict on the blob or the request may not. The
// caller has seen to the end of its own context already: a deadline error while it goes
// on is a transport's timeout.
func retryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	for _, final := range []error{pullkit.ErrNotFound, pullkit.ErrUnauthorized, pullkit.ErrDenied,
		pullkit.ErrInvalid, pullkit.ErrUnsupported, pullkit.ErrTooLarge, pullkit.ErrNoMatch,
		pullkit.ErrSizeMismatch, pullkit.ErrDigestMismatch} {
		if errors.Is(err, final) {
			return false
		}
	}
	return true
}
