package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

func TestProgressDraws(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	p.interval = 0 // draw on every event
	a, b := digest.FromString("a"), digest.FromString("b")
	p.event(pullkit.Event{Kind: pullkit.EventPlanned, Total: 1<<20 + 10, Blobs: 2})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventStarted, Total: 1 << 20})
	p.event(pullkit.Event{Digest: b, What: "config", Kind: pullkit.EventSkipped, Done: 10, Total: 10})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventWaiting, Wait: 3 * time.Second, Total: 1 << 20})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventProgress, Done: 1 << 19, Total: 1 << 20})
	p.event(pullkit.Event{Digest: a, What: "layer", Kind: pullkit.EventFailed, Done: 1 << 19, Total: 1 << 20, Err: errors.New("boom")})
	p.finish()
	s := out.String()
	for _, want := range []string{
		shortDigest(a) + " layer  downloading", shortDigest(b) + " config already present",
		shortDigest(a) + " layer  waiting 3s",
		"[==========          ] 512.0 KiB / 1.0 MiB", shortDigest(a) + " layer  failed",
		"2/2 blobs",
		"\x1b[3A", // redraws in place over the totals and the two blob lines
	} {
		if !strings.Contains(s, want) {
			t.Errorf("progress output lacks %q:\n%q", want, s)
		}
	}
	// The last frame has the totals and one line per blob.
	last := s[strings.LastIndex(s, "\x1b[3A")+len("\x1b[3A"):]
	if n := strings.Count(last, "\n"); n != 3 {
		t.Errorf("last frame has %d lines, want 3: %q", n, last)
	}
}

func TestProgressThrottles(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	p.interval = time.Hour // nothing but the first and final events can draw
	d := digest.FromString("x")
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventStarted, Total: 100})
	for i := int64(1); i < 100; i++ {
		p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventProgress, Done: i, Total: 100})
	}
	p.event(pullkit.Event{Digest: d, What: "layer", Kind: pullkit.EventVerified, Done: 100, Total: 100})
	// 101 events: the throttle draws the first and the final one only, each frame the
	// totals and the blob.
	if frames := strings.Count(out.String(), "\x1b[2K"); frames != 4 || !strings.Contains(out.String(), "verified") {
		t.Errorf("%d lines drawn for 101 events; output %q", frames, out.String())
	}
}
