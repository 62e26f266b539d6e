package pullkittest

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// Progress records the events of one call (give its Add to puller.WithProgress or
// layers.WithProgress) so that a test can check them with Check once the call returned.
// It is safe for concurrent use, as a progress function must be.
type Progress struct {
	mu     sync.Mutex
	events []pullkit.Event
}

// Add records ev.
func (p *Progress) Add(ev pullkit.Event) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}

// Events returns a copy of what was recorded, in the order it was reported.
func (p *Progress) Events() []pullkit.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]pullkit.Event(nil), p.events...)
}

// Check is CheckProgress of what was recorded.
func (p *Progress) Check() error { return CheckProgress(p.Events()) }

// CheckProgress checks the events of a call that has returned (a pull, complete, failed
// or cancelled, or a layers.Fetch) against the contract pullkit.Event documents, and
// returns an error listing what breaks it, or nil:
//
//   - manifests and indexes (and waits for a token) before the plan, none after; no blob
//     event before the plan; at most one plan;
//   - the plan counts exactly the blobs that have events, and its Total is the sum of
//     their sizes, or -1 when one is unknown;
//   - each blob starts with EventQueued, ends with exactly one terminal event, and has
//     nothing after it;
//   - Done never goes backwards but on an EventRetrying with Done 0, never passes a
//     known Total, and EventVerified and EventSkipped end at Done == Total; EventFailed
//     and EventCancelled keep the Done reached and carry an Err;
//   - a blob's Total is its size throughout (or -1 while unknown), its What does not
//     change, and an EventResuming is followed by an EventStarted at the same Done.
func CheckProgress(events []pullkit.Event) error {
	c := &progressCheck{blobs: map[digest.Digest]*blobTrack{}}
	for i, ev := range events {
		c.event(i, ev)
	}
	c.finish()
	if len(c.problems) == 0 {
		return nil
	}
	const most = 12
	msg := c.problems
	if len(msg) > most {
		msg = append(msg[:most:most], fmt.Sprintf("and %d more", len(c.problems)-most))
	}
	return errors.New("progress breaks the pullkit.Event contract: " + strings.Join(msg, "; "))
}

type blobTrack struct {
	what     string
	first    int   // index of its first event
	done     int64 // Done last seen
	size     int64 // its size once an event says it, else -1
	queued   int64 // Total of its EventQueued
	ended    bool
	resuming int64 // Done of an EventResuming not yet followed by EventStarted, or -1
}

type progressCheck struct {
	problems []string
	planned  *pullkit.Event
	blobs    map[digest.Digest]*blobTrack
	order    []digest.Digest
}

func (c *progressCheck) bad(i int, ev pullkit.Event, format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf("event %d (%s %s %s Done %d Total %d): %s", i, ev.Kind, ev.What, short(ev.Digest), ev.Done, ev.Total, fmt.Sprintf(format, args...)))
}

func short(d digest.Digest) string {
	if len(d) > 19 {
		return string(d[:19]) + "…"
	}
	return string(d)
}

func isDocument(what string) bool { return what == "manifest" || what == "index" || what == "token" }

func (c *progressCheck) event(i int, ev pullkit.Event) {
	switch {
	case ev.Kind < pullkit.EventPlanned || ev.Kind > pullkit.EventResuming:
		c.bad(i, ev, "unknown kind")
		return
	case ev.Kind == pullkit.EventPlanned:
		if c.planned != nil {
			c.bad(i, ev, "a second plan")
			return
		}
		if len(c.blobs) > 0 {
			c.bad(i, ev, "a plan after blob events")
		}
		if ev.Blobs < 0 || ev.Total < -1 || ev.Done != 0 {
			c.bad(i, ev, "a plan with Blobs %d", ev.Blobs)
		}
		p := ev
		c.planned = &p
		return
	case isDocument(ev.What) || (ev.Digest == "" && ev.Kind == pullkit.EventWaiting):
		if c.planned != nil && ev.What != "token" {
			c.bad(i, ev, "a %s after the plan", ev.What)
		}
		switch ev.Kind {
		case pullkit.EventVerified, pullkit.EventWaiting, pullkit.EventRetrying:
		default:
			c.bad(i, ev, "not an event of a manifest (verified, waiting or retrying)")
		}
		return
	}
	if c.planned == nil {
		c.bad(i, ev, "a blob event before the plan")
		return
	}
	if ev.Digest == "" {
		c.bad(i, ev, "a blob event without a digest")
		return
	}
	b := c.blobs[ev.Digest]
	if b == nil {
		b = &blobTrack{what: ev.What, first: i, size: -1, resuming: -1, queued: ev.Total}
		c.blobs[ev.Digest] = b
		c.order = append(c.order, ev.Digest)
		if ev.Kind != pullkit.EventQueued {
			c.bad(i, ev, "a blob's first event is not queued")
		}
	} else if ev.Kind == pullkit.EventQueued {
		c.bad(i, ev, "queued twice")
	}
	if b.ended {
		c.bad(i, ev, "an event after the blob's terminal event")
		return
	}
	if ev.What != b.what {
		c.bad(i, ev, "What changed from %q", b.what)
	}
	switch {
	case ev.Total < -1:
		c.bad(i, ev, "negative Total")
	case ev.Total >= 0 && b.size >= 0 && ev.Total != b.size:
		c.bad(i, ev, "Total changed from %d", b.size)
	case ev.Total >= 0:
		b.size = ev.Total
	}
	if ev.Done < 0 || (b.size >= 0 && ev.Done > b.size) {
		c.bad(i, ev, "Done outside 0..Total")
	}
	if ev.Done < b.done && !(ev.Kind == pullkit.EventRetrying && ev.Done == 0) {
		c.bad(i, ev, "Done went back from %d", b.done)
	}
	if b.resuming >= 0 && ev.Kind != pullkit.EventStarted && !ev.Kind.Terminal() {
		c.bad(i, ev, "an EventResuming not followed by EventStarted")
		b.resuming = -1
	}
	switch ev.Kind {
	case pullkit.EventResuming:
		b.resuming = ev.Done
	case pullkit.EventStarted:
		if b.resuming >= 0 && ev.Done != b.resuming {
			c.bad(i, ev, "started at another Done than the EventResuming's %d", b.resuming)
		}
		b.resuming = -1
	case pullkit.EventVerified, pullkit.EventSkipped:
		if ev.Total < 0 || ev.Done != ev.Total {
			c.bad(i, ev, "a %s blob whose Done is not its Total", ev.Kind)
		}
	case pullkit.EventFailed, pullkit.EventCancelled:
		if ev.Err == nil {
			c.bad(i, ev, "no Err")
		}
		if ev.Done != b.done {
			c.bad(i, ev, "the terminal event does not keep the Done reached (%d)", b.done)
		}
	}
	if ev.Kind.Terminal() {
		b.ended = true
	}
	b.done = ev.Done
}

func (c *progressCheck) finish() {
	if c.planned == nil {
		return
	}
	for _, d := range c.order {
		b := c.blobs[d]
		if !b.ended {
			c.problems = append(c.problems, fmt.Sprintf("blob %s (%s, first event %d) has no terminal event", short(d), b.what, b.first))
		}
	}
	if len(c.blobs) != c.planned.Blobs {
		c.problems = append(c.problems, fmt.Sprintf("the plan says %d blobs, %d have events", c.planned.Blobs, len(c.blobs)))
	}
	var sum int64
	for _, d := range c.order {
		if q := c.blobs[d].queued; q >= 0 && sum >= 0 {
			sum += q
		} else {
			sum = -1
		}
	}
	if len(c.blobs) > 0 && sum != c.planned.Total {
		c.problems = append(c.problems, fmt.Sprintf("the plan's Total is %d, the blobs' sizes add up to %d", c.planned.Total, sum))
	}
}
