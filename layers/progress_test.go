package layers

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/pullkittest"
)

// The progress tests check whole event sequences against the contract pullkit.Event
// documents (pullkittest.CheckProgress), for complete, cancelled, failed and resumed
// transfers. What they wait for is an event, never a time: a body that holds still until
// the call is cancelled stands for a slow link.

// holdBody gives the first n bytes of its body, then nothing until ctx is done.
type holdBody struct {
	io.ReadCloser
	ctx  context.Context
	left int64
}

func (h *holdBody) Read(p []byte) (int, error) {
	if h.left <= 0 {
		<-h.ctx.Done()
		return 0, h.ctx.Err()
	}
	if int64(len(p)) > h.left {
		p = p[:h.left]
	}
	n, err := h.ReadCloser.Read(p)
	h.left -= int64(n)
	return n, err
}

// holdAfter makes the first request for d hold after n bytes, until its call ends.
func holdAfter(f *fakeFetcher, d digest.Digest, n int64) {
	f.fault = func(req fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		if req.d == d && req.n == 1 {
			return &holdBody{ReadCloser: body, ctx: body.(*slowBody).ctx, left: n}, nil
		}
		return body, nil
	}
}

// onEvent returns a progress function that records into p and calls fn for each event.
func onEvent(p *pullkittest.Progress, fn func(pullkit.Event)) func(pullkit.Event) {
	return func(ev pullkit.Event) {
		p.Add(ev)
		fn(ev)
	}
}

func checkProgress(t *testing.T, p *pullkittest.Progress) {
	t.Helper()
	if err := p.Check(); err != nil {
		t.Error(err)
		for i, ev := range p.Events() {
			t.Logf("%3d %-9s %-6s %.19s Done %d Total %d %v", i, ev.Kind, ev.What, ev.Digest, ev.Done, ev.Total, ev.Err)
		}
	}
}

func lastOf(evs []pullkit.Event, d digest.Digest) pullkit.Event {
	var last pullkit.Event
	for _, ev := range evs {
		if ev.Digest == d {
			last = ev
		}
	}
	return last
}

func TestProgressOfACompleteFetch(t *testing.T) {
	small := randomBytes(t, 3000)
	large := randomBytes(t, 5<<20+123)
	wrong := randomBytes(t, 2<<20)
	s := newMemStore()
	f := newFetcher(small, large, wrong)
	// The third blob's bytes do not verify the first time: it starts over from 0.
	f.fault = func(req fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		if req.d == digest.FromBytes(wrong) && req.n == 1 {
			return &flipBody{ReadCloser: body, at: 1 << 20}, nil
		}
		return body, nil
	}
	var p pullkittest.Progress
	blobs := []Blob{{Desc: desc(small)}, {Desc: desc(large)}, {Desc: desc(wrong)}, {Desc: desc(small)}}
	if _, err := Fetch(t.Context(), f, s, blobs, WithProgress(p.Add), WithRetry(fastRetry())); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, &p)
	evs := p.Events()
	if evs[0].Kind != pullkit.EventPlanned || evs[0].Blobs != 3 || evs[0].Total != int64(len(small)+len(large)+len(wrong)) {
		t.Errorf("plan %+v, want 3 blobs of %d bytes", evs[0], len(small)+len(large)+len(wrong))
	}
	restarted := false
	for _, ev := range evs {
		restarted = restarted || (ev.Digest == digest.FromBytes(wrong) && ev.Kind == pullkit.EventRetrying && ev.Done == 0)
	}
	if !restarted {
		t.Error("no EventRetrying with Done 0 for the blob whose bytes did not verify")
	}
}

// A cancelled transfer: the blob receiving keeps the Done it reached in its
// EventCancelled (the display's bar does not drop), reports nothing after it, and the
// blob still queued behind it is cancelled too.
func TestProgressOfACancelledFetch(t *testing.T) {
	first := randomBytes(t, 6<<20)
	second := randomBytes(t, 3<<20)
	s := newMemStore()
	f := newFetcher(first, second)
	holdAfter(f, digest.FromBytes(first), 5<<20/2)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var p pullkittest.Progress
	var reached int64
	progress := onEvent(&p, func(ev pullkit.Event) {
		if ev.Kind == pullkit.EventProgress && ev.Digest == digest.FromBytes(first) && ev.Done >= 2<<20 && reached == 0 {
			reached = ev.Done
			cancel()
		}
	})
	// One request at a time, ranges off: the second blob waits in the queue.
	_, err := Fetch(ctx, f, s, []Blob{{Desc: desc(first)}, {Desc: desc(second)}}, WithJobs(1), WithRanges(false), WithProgress(progress))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch: %v, want context.Canceled", err)
	}
	checkProgress(t, &p)
	evs := p.Events()
	if last := lastOf(evs, digest.FromBytes(first)); last.Kind != pullkit.EventCancelled || last.Done < reached {
		t.Errorf("first blob ends with %s Done %d, want cancelled with Done >= %d", last.Kind, last.Done, reached)
	}
	if last := lastOf(evs, digest.FromBytes(second)); last.Kind != pullkit.EventCancelled || !errors.Is(last.Err, context.Canceled) {
		t.Errorf("queued blob ends with %s (%v), want cancelled by context.Canceled", last.Kind, last.Err)
	}
}

// A failed transfer: the blob that fails for good ends with EventFailed, the one that
// was receiving meanwhile with EventCancelled at the Done it reached.
func TestProgressOfAFailedFetch(t *testing.T) {
	big := randomBytes(t, 6<<20)
	missing := randomBytes(t, 1000)
	s := newMemStore()
	f := newFetcher(big) // missing is not served: 404
	holdAfter(f, digest.FromBytes(big), 3<<20)
	moving := make(chan struct{})
	var once sync.Once
	inner := f.fault
	f.fault = func(req fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		return inner(req, body)
	}
	gate := &gateFetcher{Fetcher: f, hold: digest.FromBytes(missing), open: moving}
	var p pullkittest.Progress
	progress := onEvent(&p, func(ev pullkit.Event) {
		if ev.Kind == pullkit.EventProgress && ev.Digest == digest.FromBytes(big) && ev.Done >= 2<<20 {
			once.Do(func() { close(moving) })
		}
	})
	_, err := Fetch(t.Context(), gate, s, []Blob{{Desc: desc(big)}, {Desc: desc(missing)}}, WithJobs(2), WithRanges(false), WithProgress(progress))
	if !errors.Is(err, pullkit.ErrNotFound) {
		t.Fatalf("Fetch: %v, want ErrNotFound", err)
	}
	checkProgress(t, &p)
	evs := p.Events()
	if last := lastOf(evs, digest.FromBytes(missing)); last.Kind != pullkit.EventFailed || !errors.Is(last.Err, pullkit.ErrNotFound) {
		t.Errorf("missing blob ends with %s (%v), want failed, not found", last.Kind, last.Err)
	}
	if last := lastOf(evs, digest.FromBytes(big)); last.Kind != pullkit.EventCancelled || last.Done < 2<<20 {
		t.Errorf("receiving blob ends with %s Done %d, want cancelled with Done >= %d", last.Kind, last.Done, 2<<20)
	}
}

// gateFetcher holds the requests for one digest until open is closed.
type gateFetcher struct {
	Fetcher
	hold digest.Digest
	open chan struct{}
}

func (g *gateFetcher) Fetch(ctx context.Context, d manifest.Descriptor, off, n int64) (io.ReadCloser, error) {
	if d.Digest == g.hold {
		select {
		case <-g.open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return g.Fetcher.Fetch(ctx, d, off, n)
}

// A resumed transfer: the store hashes again what an interrupted one left, which is
// reported as EventResuming at the bytes held (not as a wait for another download),
// then the transfer starts there. The writer wait's fallback timer is pushed out of
// reach: the stores say why they wait.
func TestProgressOfAResumedFetch(t *testing.T) {
	blob := randomBytes(t, 5<<20+77)
	d := digest.FromBytes(blob)
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			const held = 3<<20 + 5
			w, err := s.Writer(t.Context(), desc(blob))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(blob[:held]); err != nil {
				t.Fatal(err)
			}
			w.Close()
			var p pullkittest.Progress
			f := newFetcher(blob)
			noTimer := func(o *options) error { o.writerWait = time.Hour; return nil }
			if _, err := Fetch(t.Context(), f, s, []Blob{{Desc: desc(blob)}}, WithProgress(p.Add), noTimer); err != nil {
				t.Fatal(err)
			}
			checkProgress(t, &p)
			var kinds []pullkit.EventKind
			var resumedAt, startedAt int64 = -1, -1
			for _, ev := range p.Events() {
				if ev.Digest != d {
					continue
				}
				kinds = append(kinds, ev.Kind)
				switch ev.Kind {
				case pullkit.EventResuming:
					resumedAt = ev.Done
				case pullkit.EventStarted:
					startedAt = ev.Done
				case pullkit.EventWaiting:
					t.Errorf("the re-hash was reported as a wait: %+v", ev)
				}
			}
			if resumedAt != held || startedAt != held {
				t.Errorf("events %v: resuming at %d, started at %d, want both at %d", kinds, resumedAt, startedAt, held)
			}
			if reqs := f.requests(); len(reqs) == 0 || reqs[0].offset != held {
				t.Errorf("requests %+v, want the first from byte %d", reqs, held)
			}
		})
	}
}

// A blob another writer holds is reported as a wait (Wait 0) as soon as the store says
// so, with no timer involved, and the transfer goes on once that writer is done.
func TestProgressWaitsForAnotherWriter(t *testing.T) {
	blob := randomBytes(t, 2<<20)
	for name, open := range stores() {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			other, err := s.Writer(t.Context(), desc(blob))
			if err != nil {
				t.Fatal(err)
			}
			waiting := make(chan struct{})
			var once sync.Once
			var p pullkittest.Progress
			progress := onEvent(&p, func(ev pullkit.Event) {
				if ev.Kind == pullkit.EventWaiting {
					once.Do(func() { close(waiting) })
				}
			})
			noTimer := func(o *options) error { o.writerWait = time.Hour; return nil }
			errc := make(chan error, 1)
			go func() {
				_, err := Fetch(t.Context(), newFetcher(blob), s, []Blob{{Desc: desc(blob)}}, WithProgress(progress), noTimer)
				errc <- err
			}()
			select {
			case <-waiting:
			case <-time.After(time.Minute): // only a hang
				t.Fatal("no EventWaiting while another writer holds the blob")
			}
			if _, err := other.Write(blob[:1<<20]); err != nil {
				t.Fatal(err)
			}
			other.Close()
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			checkProgress(t, &p)
			if last := lastOf(p.Events(), digest.FromBytes(blob)); last.Kind != pullkit.EventVerified {
				t.Errorf("ends with %s, want verified", last.Kind)
			}
		})
	}
}

// A blob split into parts (the split pinned, not measured), whose parts break and resume:
// the blob's Done, reported by every part, never goes back, and the parts' retries
// report the blob's bytes, not their own offsets.
func TestProgressOfASplitBlob(t *testing.T) {
	blob := randomBytes(t, 12<<20+5)
	d := digest.FromBytes(blob)
	f := newFetcher(blob)
	// The first stream holds after 2 MiB until a part split off it asks for its range,
	// so that the split happens however fast the rest would have come.
	split := make(chan struct{})
	var once sync.Once
	f.fault = func(req fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
		switch {
		case req.offset == 0 && req.n == 1:
			return &gateBody{ReadCloser: body, left: 2 << 20, open: split}, nil
		case req.offset > 0:
			once.Do(func() { close(split) })
			if req.n <= 6 {
				return &cutBody{ReadCloser: body, left: 300 << 10}, nil // a part breaks once, mid-way
			}
		}
		return body, nil
	}
	var p pullkittest.Progress
	if _, err := Fetch(t.Context(), f, newMemStore(), []Blob{{Desc: desc(blob)}}, WithProgress(p.Add), WithJobs(4), withJudgement(judgeAlways), WithRetry(fastRetry())); err != nil {
		t.Fatal(err)
	}
	checkProgress(t, &p)
	ranged, retries := 0, 0
	for _, r := range f.requests() {
		if r.offset > 0 {
			ranged++
		}
	}
	for _, ev := range p.Events() {
		if ev.Digest == d && ev.Kind == pullkit.EventRetrying {
			retries++
		}
	}
	if ranged == 0 || retries == 0 {
		t.Errorf("%d ranged requests, %d retries: the test did not split and break the blob", ranged, retries)
	}
}

// gateBody gives the first left bytes of its body, then waits for open before the rest.
type gateBody struct {
	io.ReadCloser
	left int64
	open chan struct{}
}

func (g *gateBody) Read(p []byte) (int, error) {
	if g.left <= 0 {
		select {
		case <-g.open:
		case <-time.After(time.Minute): // only a hang: the split never came
			return 0, errors.New("no part was split off within a minute")
		}
		return g.ReadCloser.Read(p)
	}
	if int64(len(p)) > g.left {
		p = p[:g.left]
	}
	n, err := g.ReadCloser.Read(p)
	g.left -= int64(n)
	return n, err
}
