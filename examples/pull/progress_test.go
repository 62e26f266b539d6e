package main

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// clock is a fake time source for the display: every reading is where the test set it.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// testProgress is a display of cols x rows on a buffer, on the fake clock, that draws on
// every event.
func testProgress(cols, rows *int) (*progress, *bytes.Buffer, *clock) {
	var out bytes.Buffer
	c := &clock{t: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	p := newProgress(&out, func() (int, int) { return *cols, *rows })
	p.now, p.start, p.interval = c.now, c.now(), 0
	return p, &out, c
}

var headerLine = regexp.MustCompile(`^\d+/\d+ blobs`)

// headers counts the lines that are the display's header.
func headers(lines []string) int {
	n := 0
	for _, l := range lines {
		if headerLine.MatchString(l) {
			n++
		}
	}
	return n
}

// replay feeds out to a terminal of cols x rows.
func replay(t *testing.T, out []byte, cols, rows int) *vt {
	t.Helper()
	v := newVT(cols, rows)
	v.Write(out)
	if len(v.errs) > 0 {
		t.Errorf("the display wrote what a terminal would not take as meant: %v", v.errs)
	}
	return v
}

// pullEvents reports a pull of n layers of size bytes and a config, as the library does:
// the plan, the config beside it, then the layers, jobs at a time, each queued, started,
// half received and verified, the clock moving 100 ms per step. mid, when not nil, runs
// once half the layers are verified.
func pullEvents(p *progress, c *clock, n, jobs int, size int64, mid func()) {
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: int64(n) * size, Blobs: n})
	p.event(pullkit.Event{Kind: pullkit.EventVerified, What: "config", Digest: digest.FromString("config"), Done: 300, Total: 300})
	layer := func(i int) digest.Digest { return digest.FromString(fmt.Sprint("layer ", i)) }
	for i := range n {
		p.event(pullkit.Event{Kind: pullkit.EventQueued, What: "layer", Digest: layer(i), Total: size})
	}
	for i := 0; i < n; i += jobs {
		for k := i; k < min(i+jobs, n); k++ {
			c.advance(100 * time.Millisecond)
			p.event(pullkit.Event{Kind: pullkit.EventStarted, What: "layer", Digest: layer(k), Total: size})
			p.event(pullkit.Event{Kind: pullkit.EventProgress, What: "layer", Digest: layer(k), Done: size / 2, Total: size})
		}
		for k := i; k < min(i+jobs, n); k++ {
			c.advance(100 * time.Millisecond)
			p.event(pullkit.Event{Kind: pullkit.EventVerified, What: "layer", Digest: layer(k), Done: size, Total: size})
			if k == n/2 && mid != nil {
				mid()
			}
		}
	}
}

func TestProgressDraws(t *testing.T) {
	cols, rows := 100, 24
	p, out, c := testProgress(&cols, &rows)
	a, b := digest.FromString("a"), digest.FromString("b")
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 1 << 20, Blobs: 1})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventStarted, Total: 1 << 20})
	p.event(pullkit.Event{Digest: b, What: "config", Kind: pullkit.EventSkipped, Done: 10, Total: 10})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventWaiting, Wait: 3 * time.Second, Total: 1 << 20})
	if s := replay(t, out.Bytes(), cols, rows).lines(); len(s) != 3 || !strings.HasPrefix(s[1], shortDigest(a)+"  layer   waiting 3s") {
		t.Errorf("a wait of a blob is not drawn: %q", s)
	}
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventProgress, Done: 1 << 19, Total: 1 << 20})
	mid := replay(t, out.Bytes(), cols, rows).lines()
	if !strings.Contains(mid[1], "512.0 KiB / 1.0 MiB  512.0 KiB/s  [==========          ]") {
		t.Errorf("the receiving blob's line lacks its size, speed or bar: %q", mid[1])
	}
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventFailed, Done: 1 << 19, Total: 1 << 20, Err: errors.New("boom")})
	p.finish()
	// The totals count the config beside the plan's one layer: 1 of 2 blobs done (the
	// layer failed), and no more bytes than there are.
	want := []string{
		"1/2 blobs  512.0 KiB / 1.0 MiB  256.0 KiB/s  elapsed 2s  [==========          ]",
		shortDigest(a) + "  layer   failed            512.0 KiB / 1.0 MiB  [==========          ]",
		shortDigest(b) + "  config  already present   10 B / 10 B  [====================]",
	}
	if got := replay(t, out.Bytes(), cols, rows).lines(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("final screen:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestProgressSpeedAndETA: the header shows the speed over the last seconds, the time
// left at that speed, and the time since the pull began, as ctr pull and skopeo copy do;
// the clock is the test's.
func TestProgressSpeedAndETA(t *testing.T) {
	cols, rows := 100, 24
	p, out, c := testProgress(&cols, &rows)
	d := digest.FromString("layer")
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 8 << 20, Blobs: 1})
	// A resumed blob: the 4 MiB an earlier pull left are not counted as received now.
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventStarted, Done: 4 << 20, Total: 8 << 20})
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: 5 << 20, Total: 8 << 20})
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: 6 << 20, Total: 8 << 20})
	if got := replay(t, out.Bytes(), cols, rows).lines()[0]; !strings.HasPrefix(got, "0/1 blobs  6.0 MiB / 8.0 MiB  1.0 MiB/s  ETA 2s  elapsed 2s") {
		t.Errorf("header %q, want 1.0 MiB/s, ETA 2s, elapsed 2s", got)
	}
	// Ten seconds later at 4 MiB/s: the speed is the recent one, not the average.
	for range 5 {
		c.advance(time.Second)
		p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: 6 << 20, Total: 8 << 20})
	}
	c.advance(time.Second / 4)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: 7 << 20, Total: 8 << 20})
	if got := replay(t, out.Bytes(), cols, rows).lines()[0]; !strings.Contains(got, "ETA ") || strings.Contains(got, " 1.0 MiB/s") {
		t.Errorf("header %q: the speed should follow the last seconds", got)
	}
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventVerified, Done: 8 << 20, Total: 8 << 20})
	p.finish()
	if got := replay(t, out.Bytes(), cols, rows).lines()[0]; !strings.HasPrefix(got, "1/1 blobs  8.0 MiB / 8.0 MiB  496.5 KiB/s  elapsed 8.3s") {
		t.Errorf("final header %q, want the average speed of what was received (4 MiB in 8.25 s) and the time", got)
	}
}

// TestProgressFitsTerminal pulls 40 layers on terminals of several sizes: no line ever
// wraps, no frame is taller than the screen less one line, so redrawing never scrolls and
// the scrollback never gets a copy of the header; with more blobs than rows the rest is
// summed up in one line.
func TestProgressFitsTerminal(t *testing.T) {
	for _, size := range [][2]int{{60, 24}, {200, 50}, {80, 10}, {30, 5}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) {
			cols, rows := size[0], size[1]
			p, out, c := testProgress(&cols, &rows)
			pullEvents(p, c, 40, 16, 3<<20, nil)
			p.finish()
			v := replay(t, out.Bytes(), cols, rows)
			if v.wraps != 0 {
				t.Errorf("%d lines wrapped", v.wraps)
			}
			if n := headers(v.all()); n != 1 {
				t.Errorf("the header is in the scrollback and on the screen %d times, want once:\n%s", n, strings.Join(v.all(), "\n"))
			}
			screen := v.lines()
			if len(screen) > rows-1 {
				t.Errorf("the frame has %d lines on %d rows", len(screen), rows)
			}
			if !strings.HasPrefix(screen[0], "41/41 blobs") {
				t.Errorf("header %q, want 41/41 blobs (40 layers and the config)", screen[0])
			}
			if rows-1 >= 42 {
				if len(screen) != 42 || strings.Count(strings.Join(screen, "\n"), "verified") != 41 {
					t.Errorf("want every blob verified on its own line:\n%s", strings.Join(screen, "\n"))
				}
			} else if want := fmt.Sprintf("... %d more blobs: %d verified", 41-(rows-3), 41-(rows-3)); rows > 3 && !strings.HasPrefix(screen[len(screen)-1], want[:min(len(want), cols-1)]) {
				t.Errorf("last line %q, want %q", screen[len(screen)-1], want)
			}
			for _, l := range v.all() {
				if len([]rune(l)) > cols-1 {
					t.Errorf("line of %d columns on %d: %q", len([]rune(l)), cols, l)
				}
			}
		})
	}
}

// TestProgressShowsWorkFirst: with more blobs than rows, the blobs being received are
// the ones shown.
func TestProgressShowsWorkFirst(t *testing.T) {
	cols, rows := 80, 10
	p, out, _ := testProgress(&cols, &rows)
	var active []digest.Digest
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 30 << 10, Blobs: 30})
	for i := range 30 {
		d := digest.FromString(fmt.Sprint(i))
		p.event(pullkit.Event{Kind: pullkit.EventQueued, What: "layer", Digest: d, Total: 1 << 10})
		if i%10 == 9 {
			active = append(active, d)
		}
	}
	for i := range 20 {
		d := digest.FromString(fmt.Sprint(i))
		p.event(pullkit.Event{Kind: pullkit.EventVerified, What: "layer", Digest: d, Done: 1 << 10, Total: 1 << 10})
	}
	for _, d := range active {
		p.event(pullkit.Event{Kind: pullkit.EventStarted, What: "layer", Digest: d, Total: 1 << 10})
	}
	screen := replay(t, out.Bytes(), cols, rows).lines()
	for _, d := range active {
		if !strings.Contains(strings.Join(screen, "\n"), shortDigest(d)+"  layer   downloading") {
			t.Errorf("the blob at work %s is not shown:\n%s", shortDigest(d), strings.Join(screen, "\n"))
		}
	}
	if last := screen[len(screen)-1]; !strings.HasPrefix(last, "... 23 more blobs: ") || !strings.Contains(last, "queued") || !strings.Contains(last, "verified") {
		t.Errorf("summary %q", last)
	}
}

// TestProgressResize changes the terminal from 200 x 50 to 60 x 24 half way through the
// pull, as SIGWINCH reports it: the frames after it fit the new size, and the final
// screen shows the header once.
func TestProgressResize(t *testing.T) {
	cols, rows := 200, 50
	p, out, c := testProgress(&cols, &rows)
	at := -1
	pullEvents(p, c, 40, 16, 3<<20, func() {
		cols, rows = 60, 24
		at = out.Len()
		p.redraw() // what the SIGWINCH watcher calls
	})
	p.finish()
	v := newVT(200, 50)
	v.Write(out.Bytes()[:at])
	if v.wraps != 0 || len(v.lines()) != 42 {
		t.Fatalf("before the resize: %d wraps, %d lines", v.wraps, len(v.lines()))
	}
	v.resize(60, 24)
	v.Write(out.Bytes()[at:])
	if v.wraps != 0 || len(v.errs) != 0 {
		t.Errorf("after the resize: %d lines wrapped; %v", v.wraps, v.errs)
	}
	screen := v.lines()
	if headers(screen) != 1 || !strings.HasPrefix(screen[0], "41/41 blobs") || len(screen) > 23 {
		t.Errorf("final screen:\n%s", strings.Join(screen, "\n"))
	}
}

func TestProgressThrottles(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out, nil)
	p.interval = time.Hour // nothing but the first and final events can draw
	d := digest.FromString("x")
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventStarted, Total: 100})
	for i := int64(1); i < 100; i++ {
		p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: i, Total: 100})
	}
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventVerified, Done: 100, Total: 100})
	// 101 events: the throttle draws the first and the final one only.
	if p.frames != 2 || !strings.Contains(out.String(), "verified") {
		t.Errorf("%d frames drawn for 101 events; output %q", p.frames, out.String())
	}
}

func TestFit(t *testing.T) {
	parts := []part{{"aaaa", 10}, {"bb", 1}, {"cccc", 5}}
	for _, tc := range []struct {
		width int
		want  string
	}{
		{20, "aaaa  bb  cccc"}, {12, "aaaa  cccc"}, {9, "aaaa"}, {3, "aaa"},
	} {
		if got := fit(tc.width, parts...); got != tc.want {
			t.Errorf("fit(%d) = %q, want %q", tc.width, got, tc.want)
		}
	}
}

// TestProgressResuming: a blob whose partial download is being hashed again is drawn as
// resuming, not as waiting on another download, and the bytes it held are not counted
// as received (issue 22: "another download ... 0 B" while the writer re-hashed).
func TestProgressResuming(t *testing.T) {
	cols, rows := 100, 24
	p, out, c := testProgress(&cols, &rows)
	d := digest.FromString("layer")
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 8 << 20, Blobs: 1})
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventQueued, Total: 8 << 20})
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventResuming, Done: 4 << 20, Total: 8 << 20})
	lines := replay(t, out.Bytes(), cols, rows).lines()
	if len(lines) < 2 || !strings.Contains(lines[1], "resuming") || strings.Contains(lines[1], "another download") || !strings.Contains(lines[1], "4.0 MiB / 8.0 MiB") {
		t.Errorf("a blob being re-hashed is drawn as %q, want resuming with the 4 MiB kept", lines)
	}
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventStarted, Done: 4 << 20, Total: 8 << 20})
	c.advance(time.Second)
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: 5 << 20, Total: 8 << 20})
	// 1 MiB received in the 2 s since the pull began: 512 KiB/s, not 2.5 MiB/s.
	if got := replay(t, out.Bytes(), cols, rows).lines()[0]; !strings.HasPrefix(got, "0/1 blobs  5.0 MiB / 8.0 MiB  512.0 KiB/s") {
		t.Errorf("header %q: want 5 MiB of 8 at 512 KiB/s (the kept 4 MiB not counted as received)", got)
	}
}
