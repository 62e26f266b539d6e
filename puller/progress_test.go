package puller_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/platforms"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// The pull's events, checked against the contract pullkit.Event documents: the plan
// counts the config with the layers (a display never shows 5/4 blobs or 144%), every
// planned blob ends once, and Done never goes back, for complete, failed, cancelled and
// resumed pulls. The tests cancel on an event, never on a time.

func checkPullProgress(t *testing.T, p *pullkittest.Progress) {
	t.Helper()
	if err := p.Check(); err != nil {
		t.Error(err)
		for i, ev := range p.Events() {
			t.Logf("%3d %-9s %-8s %.19s Done %d Total %d %v", i, ev.Kind, ev.What, ev.Digest, ev.Done, ev.Total, ev.Err)
		}
	}
}

// plannedAndFinished returns the plan and, per blob, its last event.
func plannedAndFinished(evs []pullkit.Event) (pullkit.Event, map[digest.Digest]pullkit.Event) {
	var plan pullkit.Event
	last := map[digest.Digest]pullkit.Event{}
	for _, ev := range evs {
		switch {
		case ev.Kind == pullkit.EventPlanned:
			plan = ev
		case ev.What == "config" || ev.What == "layer":
			last[ev.Digest] = ev
		}
	}
	return plan, last
}

func TestPullProgressComplete(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	single := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(3, 1<<20))
	multi := reg.PushIndex("team/multi", "v1", pullkittest.OCIIndex, pullkittest.Layers(2, 300<<10))
	s1 := reg.PushImage("team/old", "v1", pullkittest.Schema1, pullkittest.Layers(2, 2000))
	c := newClient(t)
	arm64 := puller.WithPlatform(platforms.Platform{OS: "linux", Architecture: "arm64"})
	for _, tc := range []struct {
		name      string
		ref       string
		opts      []puller.PullOption
		blobs     int
		total     int64
		wantFinal int
	}{
		{"image", reg.Ref("team/app:v1"), nil, 4, single.Config.Size + sumLayers(single.Layers), 4},
		{"every platform", reg.Ref("team/multi:v1"), []puller.PullOption{puller.WithAllPlatforms()}, 6,
			multi.Images[0].Config.Size + multi.Images[1].Config.Size + sumLayers(multi.Images[0].Layers) + sumLayers(multi.Images[1].Layers), 6},
		{"one platform of an index", reg.Ref("team/multi:v1"), []puller.PullOption{arm64}, 3, multi.Images[1].Config.Size + sumLayers(multi.Images[1].Layers), 3},
		// Schema 1 layers have no size up front, and the config is synthesised, not
		// transferred: the plan's Total is -1 and it counts the layers alone.
		{"schema 1", reg.Ref("team/old:v1"), nil, len(s1.Layers), -1, len(s1.Layers)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var p pullkittest.Progress
			if _, err := c.Pull(t.Context(), tc.ref, store.NewMemory(), append(tc.opts, puller.WithProgress(p.Add))...); err != nil {
				t.Fatal(err)
			}
			checkPullProgress(t, &p)
			plan, last := plannedAndFinished(p.Events())
			if plan.Blobs != tc.blobs || plan.Total != tc.total {
				t.Errorf("plan: %d blobs of %d bytes, want %d of %d", plan.Blobs, plan.Total, tc.blobs, tc.total)
			}
			var done int64
			finished := 0
			for _, ev := range last {
				if ev.Kind.Terminal() {
					finished++
				}
				done += ev.Done
			}
			if finished != tc.wantFinal {
				t.Errorf("%d blobs finished, want %d", finished, tc.wantFinal)
			}
			if plan.Total >= 0 && done != plan.Total {
				t.Errorf("the blobs' Done add up to %d, the plan says %d", done, plan.Total)
			}
		})
	}
	t.Run("again: everything already stored", func(t *testing.T) {
		st := store.NewMemory()
		if _, err := c.Pull(t.Context(), reg.Ref("team/app:v1"), st); err != nil {
			t.Fatal(err)
		}
		var p pullkittest.Progress
		if _, err := c.Pull(t.Context(), reg.Ref("team/app:v1"), st, puller.WithProgress(p.Add)); err != nil {
			t.Fatal(err)
		}
		checkPullProgress(t, &p)
		_, last := plannedAndFinished(p.Events())
		for d, ev := range last {
			if ev.Kind != pullkit.EventSkipped {
				t.Errorf("%s %s ends with %s, want skipped", ev.What, d, ev.Kind)
			}
		}
	})
}

func sumLayers(ls []pullkittest.Layer) int64 {
	var n int64
	for _, l := range ls {
		n += l.Size
	}
	return n
}

// A pull whose layer fails for good: that layer ends failed, every other planned blob
// ends too (verified, or cancelled with the Done it reached).
func TestPullProgressFailed(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(4, 400<<10))
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: img.Layers[2].Digest.String()},
		Fault: pullkittest.ErrorResponse(pullkittest.CodeBlobUnknown)})
	var p pullkittest.Progress
	_, err := newClient(t).Pull(t.Context(), reg.Ref("team/app:v1"), store.NewMemory(), puller.WithProgress(p.Add), puller.WithJobs(1))
	if !errors.Is(err, pullkit.ErrNotFound) {
		t.Fatalf("Pull: %v, want ErrNotFound", err)
	}
	checkPullProgress(t, &p)
	plan, last := plannedAndFinished(p.Events())
	if plan.Blobs != 5 || len(last) != 5 {
		t.Errorf("plan of %d blobs, %d with events; want 5 and 5", plan.Blobs, len(last))
	}
	if ev := last[img.Layers[2].Digest]; ev.Kind != pullkit.EventFailed || !errors.Is(ev.Err, pullkit.ErrNotFound) {
		t.Errorf("the missing layer ends with %s (%v), want failed, not found", ev.Kind, ev.Err)
	}
	if ev := last[img.Layers[3].Digest]; ev.Kind != pullkit.EventCancelled {
		t.Errorf("the layer queued behind it ends with %s, want cancelled", ev.Kind)
	}
}

// A cancelled pull: the layer that was receiving keeps its Done, the ones still queued
// end cancelled, and nothing of a blob follows its end.
func TestPullProgressCancelled(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(3, 3<<20))
	hold := img.Layers[0]
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Route: pullkittest.RouteBlob, Ref: hold.Digest.String()}, Times: 1,
		Fault: pullkittest.StallAfter(2<<20, 0)})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var p pullkittest.Progress
	var reached int64
	var once sync.Once
	progress := func(ev pullkit.Event) {
		p.Add(ev)
		if ev.Kind == pullkit.EventProgress && ev.Digest == hold.Digest && ev.Done >= 1<<20 {
			once.Do(func() { reached = ev.Done; cancel() })
		}
	}
	st, err := store.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = newClient(t).Pull(ctx, reg.Ref("team/app:v1"), st, puller.WithProgress(progress), puller.WithJobs(1))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Pull: %v, want context.Canceled", err)
	}
	checkPullProgress(t, &p)
	_, last := plannedAndFinished(p.Events())
	if ev := last[hold.Digest]; ev.Kind != pullkit.EventCancelled || ev.Done < reached {
		t.Errorf("the receiving layer ends with %s Done %d, want cancelled at %d or more", ev.Kind, ev.Done, reached)
	}
	for _, l := range img.Layers[1:] {
		if ev := last[l.Digest]; ev.Kind != pullkit.EventCancelled {
			t.Errorf("queued layer %s ends with %s, want cancelled", l.Digest, ev.Kind)
		}
	}

	// The next pull resumes what was kept; its events keep the contract too, whatever
	// the cancelled one had written.
	var again pullkittest.Progress
	if _, err := newClient(t).Pull(t.Context(), reg.Ref("team/app:v1"), st, puller.WithProgress(again.Add)); err != nil {
		t.Fatal(err)
	}
	checkPullProgress(t, &again)
}

// A pull that finds a partial file of a layer resumes it: the store's hashing of those
// bytes again is EventResuming at their count (not a wait for "another download"), the
// layer is asked for from there, and the events keep the contract.
func TestPullProgressResumed(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	img := reg.PushImage("team/app", "v1", pullkittest.OCI, pullkittest.Layers(2, 3<<20))
	l := img.Layers[1]
	st, err := store.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	held := l.Size/2 + 3
	w, err := st.Writer(t.Context(), l.Descriptor)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(l.Data[:held]); err != nil {
		t.Fatal(err)
	}
	w.Close()
	var p pullkittest.Progress
	if _, err := newClient(t).Pull(t.Context(), reg.Ref("team/app:v1"), st, puller.WithProgress(p.Add)); err != nil {
		t.Fatal(err)
	}
	checkPullProgress(t, &p)
	var kinds []string
	for _, ev := range p.Events() {
		if ev.Digest != l.Digest {
			continue
		}
		kinds = append(kinds, fmt.Sprintf("%s@%d", ev.Kind, ev.Done))
		if ev.Kind == pullkit.EventWaiting {
			t.Errorf("the resumed layer was reported waiting: %+v", ev)
		}
	}
	if !strings.Contains(strings.Join(kinds, " "), fmt.Sprintf("resuming@%d started@%d", held, held)) {
		t.Errorf("layer events %v, want resuming then started at %d", kinds, held)
	}
	ranges := 0
	for _, r := range reg.Requests() {
		if r.Route == pullkittest.RouteBlob && r.Ref == l.Digest.String() {
			ranges++
			if want := fmt.Sprintf("bytes=%d-", held); r.Range != want {
				t.Errorf("layer asked with Range %q, want %q", r.Range, want)
			}
		}
	}
	if ranges == 0 {
		t.Error("the layer was not asked for")
	}
}

// A manifest whose body broke off is fetched again, and that is reported: an
// EventRetrying of the manifest before the plan.
func TestPullProgressManifestFetchedAgain(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("team/app", "v1", pullkittest.OCI)
	reg.Inject(&pullkittest.Rule{Match: pullkittest.Match{Method: "GET", Route: pullkittest.RouteManifest, Ref: "v1"}, Times: 1,
		Fault: pullkittest.TruncateAfter(40)})
	var p pullkittest.Progress
	if _, err := newClient(t).Pull(t.Context(), reg.Ref("team/app:v1"), store.NewMemory(), puller.WithProgress(p.Add)); err != nil {
		t.Fatal(err)
	}
	checkPullProgress(t, &p)
	retried := false
	for _, ev := range p.Events() {
		if ev.Kind == pullkit.EventRetrying && ev.What == "manifest" && ev.Err != nil {
			retried = true
		}
		if ev.Kind == pullkit.EventPlanned && !retried {
			t.Error("no EventRetrying of the manifest before the plan")
		}
	}
	if !retried {
		t.Error("the manifest fetched again was not reported")
	}
}
