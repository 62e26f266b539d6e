package layers

import (
	"context"
	"sync"
	"time"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/store"
)

// A blob's events keep the contract of pullkit.Event whoever reports them (the worker
// that starts it, the parts that receive it, the writer goroutine that commits it):
// report serialises them per blob, drops what comes after the terminal event, keeps Done
// from going backwards (startOver is the one way back to 0), and gives the terminal event
// the Done reached.

// blobEvents is a job's reporting state.
type blobEvents struct {
	mu    sync.Mutex
	shown int64 // the Done last reported
	ended bool  // its terminal event was reported
}

// report reports ev for j (What and Digest filled in).
func (e *engine) report(j *job, ev pullkit.Event) {
	j.ev.mu.Lock()
	defer j.ev.mu.Unlock()
	if j.ev.ended {
		return
	}
	ev.What, ev.Digest = j.what, j.desc.Digest
	switch ev.Kind {
	case pullkit.EventVerified, pullkit.EventSkipped:
		j.ev.ended = true
	case pullkit.EventFailed, pullkit.EventCancelled:
		j.ev.ended = true
		ev.Done = max(ev.Done, j.ev.shown)
	case pullkit.EventProgress:
		if ev.Done <= j.ev.shown {
			return // a part reporting what another one already did
		}
	default:
		ev.Done = max(ev.Done, j.ev.shown)
	}
	j.ev.shown = ev.Done
	if e.o.progress != nil {
		e.o.progress(ev)
	}
}

// startOver reports that j starts over from 0 (EventRetrying with Done 0): its bytes did
// not verify, or what the store held could not be resumed.
func (e *engine) startOver(j *job, err error) {
	j.ev.mu.Lock()
	defer j.ev.mu.Unlock()
	if j.ev.ended {
		return
	}
	j.ev.shown = 0
	if e.o.progress != nil {
		e.o.progress(pullkit.Event{Kind: pullkit.EventRetrying, What: j.what, Digest: j.desc.Digest, Total: j.desc.Size, Err: err})
	}
}

// started reports that j's transfer starts with off bytes held, starting it over first
// when the store held fewer than were reported (a writer that could not keep them).
func (e *engine) started(j *job, off int64) {
	j.ev.mu.Lock()
	shown := j.ev.shown
	j.ev.mu.Unlock()
	if off < shown {
		e.startOver(j, errDiscarded)
	}
	e.report(j, pullkit.Event{Kind: pullkit.EventStarted, Done: off, Total: j.desc.Size})
}

var errDiscarded = &pullkit.InvalidError{What: "partial blob", Reason: "the bytes the store held could not be resumed"}

// cancelUnfinished reports EventCancelled, with cause, for every job without a terminal
// event when the call ends: blobs still queued when another one failed or the call was
// cancelled.
func (e *engine) cancelUnfinished(jobs []*job, cause error) {
	for _, j := range jobs {
		e.report(j, pullkit.Event{Kind: pullkit.EventCancelled, Total: j.desc.Size, Err: cause})
	}
}

// writerWait is how long the store's Writer may take, without saying why, before the
// wait is reported as one for another writer of the blob (stores that report their waits
// through store.WithWriterWait, as Layout and Memory do, are reported at once). Tests
// set options.writerWait.
const writerWait = 200 * time.Millisecond

// writer opens the store's writer for j, reporting why it waits: EventWaiting (Wait 0,
// for as long as the other transfer takes) while another writer of the blob holds it,
// EventResuming while the store hashes again what an interrupted transfer left.
func (e *engine) writer(ctx context.Context, j *job) (store.Writer, error) {
	var mu sync.Mutex
	opened, waiting := false, false
	tell := func(why store.WriterWait, n int64) {
		mu.Lock()
		defer mu.Unlock()
		if opened {
			return
		}
		switch why {
		case store.WaitRehash:
			waiting = true // the store said why it takes time
			e.report(j, pullkit.Event{Kind: pullkit.EventResuming, Done: n, Total: j.desc.Size})
		default:
			if !waiting {
				waiting = true
				e.report(j, pullkit.Event{Kind: pullkit.EventWaiting, Total: j.desc.Size})
			}
		}
	}
	t := time.AfterFunc(e.o.writerWait, func() { tell(store.WaitOtherWriter, 0) })
	w, err := e.s.Writer(store.WithWriterWait(ctx, tell), j.desc)
	mu.Lock()
	opened = true
	mu.Unlock()
	t.Stop()
	return w, err
}
