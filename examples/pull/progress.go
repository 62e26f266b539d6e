package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/layers"
)

// isTerminal reports whether f is a character device (a terminal), without a dependency.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progress draws one line per blob on a terminal, redrawing in place at most every
// interval; it is only used when stderr is a terminal, so pipes and logs stay quiet.
type progress struct {
	w        io.Writer
	interval time.Duration

	mu    sync.Mutex
	order []digest.Digest
	blobs map[digest.Digest]*blobLine
	drawn int // lines drawn last time, to move the cursor back over them
	last  time.Time
}

type blobLine struct {
	state       string
	done, total int64
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, interval: 100 * time.Millisecond, blobs: map[digest.Digest]*blobLine{}}
}

// event records e and redraws when due (always on a blob's final event).
func (p *progress) event(e layers.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.blobs[e.Digest]
	if !ok {
		b = &blobLine{total: -1}
		p.blobs[e.Digest] = b
		p.order = append(p.order, e.Digest)
	}
	b.done = e.Done
	if e.Total >= 0 {
		b.total = e.Total
	}
	final := false
	switch e.Kind {
	case layers.EventStarted, layers.EventProgress:
		b.state = "downloading"
	case layers.EventResumed:
		b.state = "resuming"
	case layers.EventRestarted:
		b.state = "restarting"
	case layers.EventVerified:
		b.state, final = "verified", true
	case layers.EventSkipped:
		b.state, final = "already present", true
	case layers.EventFailed:
		b.state, final = "failed", true
	}
	if final || time.Since(p.last) >= p.interval {
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
	for _, d := range p.order {
		b := p.blobs[d]
		fmt.Fprintf(&sb, "\x1b[2K%s  %-15s %s\n", shortDigest(d), b.state, bar(b.done, b.total))
	}
	p.drawn = len(p.order)
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
