package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// tickInterval is how often the terminal display is redrawn when no event comes (the
// elapsed time and the speed move on while a registry is silent).
const tickInterval = 500 * time.Millisecond

// progress draws a pull on a terminal, in place, in a frame that fits the terminal: a
// line with the image's totals (blobs done, bytes, speed, ETA, elapsed time), then one
// line per blob. A frame never has more lines than the terminal has rows less one, so
// that redrawing it never scrolls (no copy of it is left in the scrollback): when there
// are more blobs than rows, the blobs at work are shown and the rest summed up in one
// line. Every line is cut to the terminal's width less one column, so that none wraps.
// The size is read before every frame (and SIGWINCH redraws at once). It is only used
// when stderr is a terminal, so pipes and logs stay quiet.
type progress struct {
	w        io.Writer
	interval time.Duration
	now      func() time.Time
	// size returns the terminal's columns and rows (0 when unknown: 80 x 24).
	size func() (cols, rows int)

	mu      sync.Mutex
	note    string // a wait of the pull's own (a manifest's 429), until the next event
	order   []digest.Digest
	blobs   map[digest.Digest]*blobLine
	total   int64 // the plan's bytes
	count   int   // the plan's blobs
	drawn   int   // lines drawn last time, to move the cursor back over them
	last    time.Time
	start   time.Time
	got     int64    // bytes received from the network by this run
	samples []sample // (time, got) at recent frames, for the speed
	seq     int
	ended   bool
	frames  int // frames drawn, for tests

	stop func() // stops the ticker and the resize watcher
}

type sample struct {
	at  time.Time
	got int64
}

type blobLine struct {
	what        string
	state       string
	done, total int64
	final       bool
	active      bool // receiving, retrying or waiting
	started     time.Time
	got         int64 // bytes this run received for it
	seq         int   // when it last changed state, to show the latest finished first
}

// newProgress returns a display that draws on w, sized by size (nil: 80 x 24). It
// starts no goroutine: events and finish draw.
func newProgress(w io.Writer, size func() (int, int)) *progress {
	if size == nil {
		size = func() (int, int) { return 0, 0 }
	}
	p := &progress{w: w, interval: 100 * time.Millisecond, now: time.Now, size: size, blobs: map[digest.Digest]*blobLine{}}
	p.start = p.now()
	p.stop = func() {}
	return p
}

// startProgress returns a display on the terminal f that follows its size, redraws when
// it changes (SIGWINCH) and, when tick > 0, every tick.
func startProgress(f *os.File, tick time.Duration) *progress {
	p := newProgress(f, func() (int, int) {
		cols, rows, _ := termSize(f)
		return cols, rows
	})
	quit := make(chan struct{})
	done := make(chan struct{})
	resized, stopResize := watchResize()
	var ticks <-chan time.Time
	var ticker *time.Ticker
	if tick > 0 {
		ticker = time.NewTicker(tick)
		ticks = ticker.C
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-resized:
			case <-ticks:
			}
			p.redraw()
		}
	}()
	p.stop = func() {
		stopResize()
		if ticker != nil {
			ticker.Stop()
		}
		close(quit)
		<-done
	}
	return p
}

// redraw draws the frame again (the terminal's size, the time, the speed changed), once
// one was drawn and until finish.
func (p *progress) redraw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.ended && p.drawn > 0 {
		p.draw()
	}
}

// event records e and redraws when due (always on a blob's final event).
func (p *progress) event(e pullkit.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended {
		return
	}
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
	if e.Total >= 0 {
		b.total = e.Total
	}
	switch {
	case e.Kind == pullkit.EventStarted || e.Kind == pullkit.EventResuming:
		// Done is what an earlier transfer left: present, not received now.
		b.done, b.started = max(b.done, e.Done), p.now()
	case e.Kind == pullkit.EventRetrying:
		b.done = e.Done
	case e.Kind == pullkit.EventSkipped:
		b.done = max(b.done, e.Done)
	case e.Done > b.done:
		b.got += e.Done - b.done
		p.got += e.Done - b.done
		b.done = e.Done
	}
	b.active = false
	switch e.Kind {
	case pullkit.EventQueued:
		b.state = "queued"
	case pullkit.EventStarted, pullkit.EventProgress:
		b.state, b.active = "downloading", true
	case pullkit.EventWaiting:
		b.state, b.active = "waiting "+e.Wait.Round(time.Second).String(), true
		if e.Wait <= 0 {
			b.state = "another download"
		}
	case pullkit.EventResuming:
		b.state, b.active = "resuming: checking what was kept", true
	case pullkit.EventRetrying:
		b.state, b.active = "retrying", true
	case pullkit.EventVerified:
		b.state, b.final = "verified", true
		if b.total > b.done {
			p.got += b.total - b.done
			b.got += b.total - b.done
		}
		b.done = max(b.done, b.total)
	case pullkit.EventSkipped:
		b.state, b.final = "already present", true
	case pullkit.EventFailed:
		b.state, b.final = "failed", true
	case pullkit.EventCancelled:
		b.state, b.final = "cancelled", true
	}
	p.seq++
	b.seq = p.seq
	if b.final || e.Kind == pullkit.EventWaiting || p.now().Sub(p.last) >= p.interval {
		p.draw()
	}
}

// finish draws the final frame and stops redrawing.
func (p *progress) finish() {
	p.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn > 0 || len(p.order) > 0 { // nothing to show for a pull that never began
		p.draw()
	}
	p.ended = true
}

// draw writes a frame over the last one. Called with p.mu held.
func (p *progress) draw() {
	now := p.now()
	p.last = now
	cols, rows := p.size()
	if cols <= 0 || rows <= 0 {
		cols, rows = 80, 24
	}
	width := max(cols-1, 10) // the last column stays empty: no line wraps
	lines := p.frame(now, width, max(rows-1, 1))
	var sb strings.Builder
	if p.drawn > 0 {
		fmt.Fprintf(&sb, "\r\x1b[%dA", p.drawn) // back to the first line drawn
	}
	for _, l := range lines {
		sb.WriteString("\x1b[2K" + l + "\r\n")
	}
	sb.WriteString("\x1b[J") // what an earlier, taller frame left below
	p.drawn = len(lines)
	p.frames++
	_, _ = io.WriteString(p.w, sb.String())
}

// frame lays out at most height lines of at most width characters.
func (p *progress) frame(now time.Time, width, height int) []string {
	var done, total int64
	finished, ended := 0, 0
	for _, d := range p.order {
		b := p.blobs[d]
		done += b.done
		total += max(b.total, 0)
		if b.final {
			ended++
		}
		if b.state == "verified" || b.state == "already present" {
			finished++
		}
	}
	// The plan may not count every blob reported (the config comes beside the plan's
	// layers): the totals are the larger of the plan's and what was reported.
	total = max(total, p.total)
	count := max(p.count, len(p.order))
	rate := p.rate(now)
	elapsed := now.Sub(p.start)

	header := []part{
		{fmt.Sprintf("%d/%d blobs", finished, count), 10},
		{sizes(done, total), 8},
	}
	if p.ended || (count > 0 && ended == count) {
		avg := ""
		if secs := elapsed.Seconds(); secs > 0 && p.got > 0 {
			avg = humanBytes(int64(float64(p.got)/secs)) + "/s"
		}
		header = append(header, part{avg, 6}, part{"elapsed " + shortDuration(elapsed), 9})
	} else {
		speed, eta := "", "ETA --"
		if rate > 0 {
			speed = humanBytes(int64(rate)) + "/s"
			if total > done {
				eta = "ETA " + shortDuration(time.Duration(float64(total-done)/rate*float64(time.Second)))
			}
		}
		header = append(header, part{speed, 7}, part{eta, 5}, part{"elapsed " + shortDuration(elapsed), 9})
	}
	lines := []string{withBar(fit(width, header...), width, done, total)}
	if p.note != "" && len(lines) < height {
		lines = append(lines, fit(width, part{p.note, 10}))
	}
	room := height - len(lines)
	if room <= 0 {
		return lines[:height]
	}
	shown := p.order
	var hidden []digest.Digest
	if len(p.order) > room {
		shown, hidden = p.choose(room - 1)
	}
	for _, d := range shown {
		lines = append(lines, p.blobText(d, now, width))
	}
	if len(hidden) > 0 {
		lines = append(lines, fit(width, part{summary(p.blobs, hidden), 10}))
	}
	return lines
}

// choose picks n blobs to show when not all fit: those at work, then queued ones, then
// the latest finished; they keep the order the pull reported them in.
func (p *progress) choose(n int) (shown, hidden []digest.Digest) {
	rank := func(b *blobLine) int {
		switch {
		case b.active:
			return 0
		case b.final && b.state != "verified" && b.state != "already present":
			return 1 // failed or cancelled
		case !b.final:
			return 2
		}
		return 3
	}
	idx := make([]int, len(p.order))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		ba, bb := p.blobs[p.order[a]], p.blobs[p.order[b]]
		if r := rank(ba) - rank(bb); r != 0 {
			return r
		}
		if rank(ba) == 3 {
			return bb.seq - ba.seq // the latest finished first
		}
		return a - b
	})
	n = max(n, 0)
	keep := map[int]bool{}
	for _, i := range idx[:min(n, len(idx))] {
		keep[i] = true
	}
	for i, d := range p.order {
		if keep[i] {
			shown = append(shown, d)
		} else {
			hidden = append(hidden, d)
		}
	}
	return shown, hidden
}

// summary sums up the blobs not shown, by state.
func summary(blobs map[digest.Digest]*blobLine, hidden []digest.Digest) string {
	counts := map[string]int{}
	var states []string
	for _, d := range hidden {
		s := blobs[d].state
		if s == "" {
			s = "queued"
		}
		if counts[s] == 0 {
			states = append(states, s)
		}
		counts[s]++
	}
	slices.Sort(states)
	parts := make([]string, len(states))
	for i, s := range states {
		parts[i] = fmt.Sprintf("%d %s", counts[s], s)
	}
	return fmt.Sprintf("... %d more blobs: %s", len(hidden), strings.Join(parts, ", "))
}

// blobText is one blob's line.
func (p *progress) blobText(d digest.Digest, now time.Time, width int) string {
	b := p.blobs[d]
	speed := ""
	if b.state == "downloading" && !b.started.IsZero() {
		if secs := now.Sub(b.started).Seconds(); secs >= 0.5 && b.got > 0 {
			speed = humanBytes(int64(float64(b.got)/secs)) + "/s"
		}
	}
	line := fit(width,
		part{shortDigest(d), 10},
		part{fmt.Sprintf("%-6s", text.Clean(b.what, 6)), 9},
		part{fmt.Sprintf("%-16s", text.Clean(b.state, 40)), 10},
		part{sizes(b.done, b.total), 7},
		part{speed, 4},
	)
	return withBar(line, width, b.done, b.total)
}

// withBar ends line with a bar of done/total as wide as the room left allows (20 cells
// at most; none under 5, or when the total is unknown).
func withBar(line string, width int, done, total int64) string {
	cells := min(20, width-len([]rune(line))-4)
	if total <= 0 || cells < 5 {
		return line
	}
	return line + "  " + bar(done, total, cells)
}

// rate is the bytes per second received over the last few seconds of frames.
func (p *progress) rate(now time.Time) float64 {
	p.samples = append(p.samples, sample{now, p.got})
	const window = 3 * time.Second
	for len(p.samples) > 2 && now.Sub(p.samples[1].at) >= window {
		p.samples = p.samples[1:]
	}
	first := p.samples[0]
	if now.Sub(p.start) < window { // the start is the first sample
		first = sample{p.start, 0}
	}
	secs := now.Sub(first.at).Seconds()
	if secs < 0.2 {
		return 0
	}
	return float64(p.got-first.got) / secs
}

// part is a piece of a line; the lowest priorities are left out first when the line is
// too wide.
type part struct {
	s    string
	prio int
}

// fit joins the parts with two spaces, leaving out the lowest priorities until the line
// is at most width characters, and cuts what is still too long.
func fit(width int, parts ...part) string {
	parts = slices.DeleteFunc(slices.Clone(parts), func(p part) bool { return strings.TrimSpace(p.s) == "" })
	for {
		line := ""
		for i, p := range parts {
			if i > 0 {
				line += "  "
			}
			line += p.s
		}
		line = strings.TrimRight(line, " ")
		if len([]rune(line)) <= width || len(parts) <= 1 {
			r := []rune(line)
			if len(r) > width {
				r = r[:width]
			}
			return string(r)
		}
		lowest := 0
		for i, p := range parts {
			if p.prio < parts[lowest].prio {
				lowest = i
			}
		}
		parts = slices.Delete(parts, lowest, lowest+1)
	}
}

func shortDigest(d digest.Digest) string {
	e := d.Encoded()
	if len(e) > 12 {
		e = e[:12]
	}
	return e
}

// bar renders done/total as a bar of cells, or "" when the total is unknown.
func bar(done, total int64, cells int) string {
	if total <= 0 {
		return ""
	}
	n := int(int64(cells) * min(done, total) / total)
	n = max(0, min(n, cells))
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", cells-n) + "]"
}

// sizes renders done / total, or done alone when the total is unknown.
func sizes(done, total int64) string {
	if total <= 0 {
		return humanBytes(done)
	}
	return humanBytes(done) + " / " + humanBytes(total)
}

// shortDuration renders d to a tenth of a second under ten seconds, to the second above.
func shortDuration(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
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
