package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"github.com/pullkit/pullkit/layers"
)

func TestProgressDraws(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	p.interval = 0 // draw on every event
	a, b := digest.FromString("a"), digest.FromString("b")
	p.event(layers.Event{Digest: a, Kind: layers.EventStarted, Total: 1 << 20})
	p.event(layers.Event{Digest: b, Kind: layers.EventSkipped, Done: 10, Total: 10})
	p.event(layers.Event{Digest: a, Kind: layers.EventProgress, Done: 1 << 19, Total: 1 << 20})
	p.event(layers.Event{Digest: a, Kind: layers.EventFailed, Done: 1 << 19, Total: 1 << 20, Err: errors.New("boom")})
	p.finish()
	s := out.String()
	for _, want := range []string{
		shortDigest(a) + "  downloading", shortDigest(b) + "  already present",
		"[==========          ] 512.0 KiB / 1.0 MiB", shortDigest(a) + "  failed",
		"\x1b[2A", // redraws in place over the two blob lines
	} {
		if !strings.Contains(s, want) {
			t.Errorf("progress output lacks %q:\n%q", want, s)
		}
	}
	// The last frame has exactly one line per blob.
	last := s[strings.LastIndex(s, "\x1b[2A")+len("\x1b[2A"):]
	if n := strings.Count(last, "\n"); n != 2 {
		t.Errorf("last frame has %d lines, want 2: %q", n, last)
	}
}

func TestProgressThrottles(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	p.interval = time.Hour // nothing but the first and final events can draw
	d := digest.FromString("x")
	p.event(layers.Event{Digest: d, Kind: layers.EventStarted, Total: 100})
	for i := int64(1); i < 100; i++ {
		p.event(layers.Event{Digest: d, Kind: layers.EventProgress, Done: i, Total: 100})
	}
	p.event(layers.Event{Digest: d, Kind: layers.EventVerified, Done: 100, Total: 100})
	// 101 events: the throttle draws the first and the final one only.
	if frames := strings.Count(out.String(), "\x1b[2K"); frames != 2 || !strings.Contains(out.String(), "verified") {
		t.Errorf("%d frames for 101 events; output %q", frames, out.String())
	}
}
