package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// isTerminal reports whether f is a character device (a terminal), without a dependency.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress draws the pull on a terminal: a line with the image's totals, then one line
// per blob, redrawn in place at most every interval; it is only used when stderr is a
// terminal, so pipes and logs stay quiet.
type progress struct {
	w        io.Writer
	interval time.Duration

	mu    sync.Mutex
	note  string // a wait of the pull's own (a manifest's 429), until the next event
	order []digest.Digest
	blobs map[digest.Digest]*blobLine
	total int64
	count int
	drawn int // lines drawn last time, to move the cursor back over them
	last  time.Time
}

type blobLine struct {
	what        string
	state       string
	done, total int64
	final       bool
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, interval: 100 * time.Millisecond, blobs: map[digest.Digest]*blobLine{}}
}

// event records e and redraws when due (always on a blob's final event).
func (p *progress) event(e pullkit.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	notBlob := e.Digest == "" || e.What == "manifest" || e.What == "index" || e.What == "token"
	if e.Kind == pullkit.EventWaiting && notBlob {
		// A wait that no blob line shows: say it, until something else happens.
		what := e.What
		if what == "" {
			what = "the registry"
		}
		p.note = fmt.Sprintf("waiting %s for %s, as the registry asked", e.Wait.Round(time.Second), text.Clean(what, 60))
		p.draw()
		return
	}
	if p.note != "" {
		p.note = ""
		p.draw()
	}
	if e.Kind == pullkit.EventPlanned {
		p.total, p.count = e.Total, e.Blobs
		p.draw()
		return
	}
	if notBlob {
		return
	}
	b, ok := p.blobs[e.Digest]
	if !ok {
		b = &blobLine{total: -1, what: e.What}
		p.blobs[e.Digest] = b
		p.order = append(p.order, e.Digest)
	}
	if e.Done > b.done || e.Kind == pullkit.EventRetrying {
		b.done = e.Done
	}
	if e.Total >= 0 {
		b.total = e.Total
	}
	switch e.Kind {
	case pullkit.EventQueued:
		b.state = "queued"
	case pullkit.EventStarted, pullkit.EventProgress:
		b.state = "downloading"
	case pullkit.EventWaiting:
		b.state = "waiting " + e.Wait.Round(time.Second).String()
		if e.Wait <= 0 {
			b.state = "another download"
		}
	case pullkit.EventRetrying:
		b.state = "retrying"
	case pullkit.EventVerified:
		b.state, b.final = "verified", true
		b.done = b.total
	case pullkit.EventSkipped:
		b.state, b.final = "already present", true
	case pullkit.EventFailed:
		b.state, b.final = "failed", true
	case pullkit.EventCancelled:
		b.state, b.final = "cancelled", true
	}
	if b.final || e.Kind == pullkit.EventWaiting || time.Since(p.last) >= p.interval {
		p.draw()
	}
}

// finish draws the final state.
func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw()
}

func (p *progress) draw() {
	p.last = time.Now()
	var sb strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&sb, "\x1b[%dA", p.drawn) // back to the first line drawn
	}
	var done int64
	finished := 0
	for _, d := range p.order {
		b := p.blobs[d]
		done += b.done
		if b.final {
			finished++
		}
	}
	fmt.Fprintf(&sb, "\x1b[2K%d/%d blobs  %s\n", finished, p.count, bar(done, p.total))
	lines := len(p.order) + 1
	if p.note != "" || p.drawn > lines {
		// The note's line (blank once it is gone, so that the frame keeps its height).
		fmt.Fprintf(&sb, "\x1b[2K%s\n", p.note)
		lines++
	}
	for _, d := range p.order {
		b := p.blobs[d]
		fmt.Fprintf(&sb, "\x1b[2K%s %-6s %-15s %s\n", shortDigest(d), text.Clean(b.what, 6), text.Clean(b.state, 40), bar(b.done, b.total))
	}
	p.drawn = lines
	_, _ = io.WriteString(p.w, sb.String())
}

func shortDigest(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// bar renders done/total as a 20-cell bar with sizes.
func bar(done, total int64) string {
	if total <= 0 {
		return humanBytes(done)
	}
	n := int(20 * done / total)
	n = max(0, min(n, 20))
	return fmt.Sprintf("[%s%s] %s / %s", strings.Repeat("=", n), strings.Repeat(" ", 20-n), humanBytes(done), humanBytes(total))
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
