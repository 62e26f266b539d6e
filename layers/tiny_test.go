package layers

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/pullkit/pullkit"
)

// Without WithJobs a Fetch keeps DefaultTinyJobs more requests in flight for tiny blobs,
// beside DefaultJobs; not for larger ones, and not under WithJobs.
func TestTinyBlobsBesideJobs(t *testing.T) {
	for _, tc := range []struct {
		name string
		size int
		opts []Option
		want int // requests in flight at most
	}{
		{"64 KiB blobs", 64 << 10, nil, DefaultJobs + DefaultTinyJobs},
		{"blobs of TinyBlobSize", TinyBlobSize, nil, DefaultJobs + DefaultTinyJobs},
		{"blobs one byte larger", TinyBlobSize + 1, nil, DefaultJobs},
		{"64 KiB blobs under WithJobs(16)", 64 << 10, []Option{WithJobs(16)}, 16},
		{"64 KiB blobs under WithJobs(40)", 64 << 10, []Option{WithJobs(40)}, 40},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.want + 8
			var blobs [][]byte
			var bs []Blob
			for range n {
				b := randomBytes(t, tc.size)
				blobs = append(blobs, b)
				bs = append(bs, Blob{Desc: desc(b)})
			}
			f := newFetcher(blobs...)
			// Every answer waits until want requests are in flight (or all were made), so
			// that the peak is the engine's bound and not the machine's speed: a bound
			// too high shows as more, one too low as fewer (after a minute's wait).
			f.fault = func(r fetchReq, body io.ReadCloser) (io.ReadCloser, error) {
				for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					f.mu.Lock()
					in, asked := f.inFlight, len(f.reqs)
					f.mu.Unlock()
					if in >= tc.want || asked >= n {
						break
					}
				}
				return body, nil
			}
			s := newMemStore()
			res, err := Fetch(context.Background(), f, s, bs, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if !r.Fetched || r.Desc.Digest != bs[i].Desc.Digest {
					t.Fatalf("blob %d: %+v", i, r)
				}
			}
			if f.maxIn != tc.want {
				t.Errorf("%d requests in flight at most, want %d", f.maxIn, tc.want)
			}
		})
	}
}

// tinyRoom lets a tiny blob start only when the slots are all taken, fewer tiny ones run
// than the options allow, and the registry has not asked for fewer requests.
func TestTinyRoom(t *testing.T) {
	def := defaultOptions()
	jobs := def
	jobs.jobs, jobs.tiny = 16, 0 // WithJobs(16)
	for _, tc := range []struct {
		name              string
		o                 options
		busy, slots, tiny int
		off               bool
		want              bool
	}{
		{"a slot free: the slots take it", def, 15, 16, 0, false, false},
		{"slots all taken", def, 16, 16, 0, false, true},
		{"tiny ones running, one left", def, 16, 16, DefaultTinyJobs - 1, false, true},
		{"tiny ones all running", def, 16, 16, DefaultTinyJobs, false, false},
		{"after a retried failure", def, 16, 16, 0, true, false},
		{"slots halved after a 429", def, 8, 8, 0, false, false},
		{"under WithJobs", jobs, 16, 16, 0, false, false},
	} {
		e := &engine{o: tc.o, busy: tc.busy, slots: tc.slots, tiny: tc.tiny, tinyOff: tc.off}
		if got := e.tinyRoom(); got != tc.want {
			t.Errorf("%s: tinyRoom() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A failed request that is retried (a 429, a 5xx, a broken body) turns the tiny blobs'
// requests off for the rest of the call: their number may have been the cause.
func TestRetryStopsTinyBlobs(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"429", &pullkit.HTTPError{Method: "GET", URL: "fake/blob", StatusCode: 429}},
		{"503", &pullkit.HTTPError{Method: "GET", URL: "fake/blob", StatusCode: 503}},
		{"broken body", io.ErrUnexpectedEOF},
	} {
		e := &engine{o: defaultOptions()}
		e.o.retry = pullkit.RetryPolicy{Attempts: 4, Backoff: time.Millisecond, MaxBackoff: time.Millisecond, MaxRetryAfter: time.Second}
		b := randomBytes(t, 1<<10)
		j := &job{desc: desc(b), what: "layer"}
		var tr tries
		if err := tr.failed(e, j, context.Background(), 0, 0, tc.err); err != nil {
			t.Fatalf("%s: failed() = %v, want a retry", tc.name, err)
		}
		if !e.tinyOff {
			t.Errorf("%s: tiny blobs still on after a retried failure", tc.name)
		}
	}
}
