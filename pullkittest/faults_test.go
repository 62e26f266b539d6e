package pullkittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
)

func TestFaults(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("f", "latest", OCI, Layers(1, 8192))
	blob := img.Layers[0]
	blobURL := r.URL() + "/v2/f/blobs/" + blob.Digest.String()
	manifestURL := r.URL() + "/v2/f/manifests/latest"
	for _, tc := range []struct {
		name  string
		fault Fault
		url   string
		// timeout is the client's: the time a stall must outlast, or when 0 a bound
		// that only catches a hang (30 s).
		timeout time.Duration
		check   func(t *testing.T, resp *http.Response, body []byte, err error, took time.Duration)
	}{
		{"reset", ResetAfter(100), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, err error, _ time.Duration) {
			if err == nil || len(body) != 100 || resp.StatusCode != 200 {
				t.Errorf("got %d bytes, err %v", len(body), err)
			}
		}},
		{"truncate", TruncateAfter(100), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, err error, _ time.Duration) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 100 || resp.ContentLength != blob.Size {
				t.Errorf("got %d bytes of %d, err %v", len(body), resp.ContentLength, err)
			}
		}},
		{"stall body until client gives up", StallAfter(100, 0), blobURL, 300 * time.Millisecond, func(t *testing.T, _ *http.Response, body []byte, err error, took time.Duration) {
			if err == nil || len(body) != 100 || took < 250*time.Millisecond {
				t.Errorf("got %d bytes after %v, err %v", len(body), took, err)
			}
		}},
		{"stall body for a while", StallAfter(100, 100*time.Millisecond), blobURL, 0, func(t *testing.T, _ *http.Response, body []byte, err error, took time.Duration) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 100 || took < 100*time.Millisecond {
				t.Errorf("got %d bytes after %v, err %v", len(body), took, err)
			}
		}},
		{"stall headers until client gives up", StallHeaders(0), blobURL, 300 * time.Millisecond, func(t *testing.T, resp *http.Response, _ []byte, err error, _ time.Duration) {
			if err == nil || resp != nil {
				t.Errorf("response %v, err %v", resp, err)
			}
		}},
		{"stall headers then answer", StallHeaders(100 * time.Millisecond), blobURL, 0, func(t *testing.T, _ *http.Response, body []byte, err error, took time.Duration) {
			if err != nil || !bytes.Equal(body, blob.Data) || took < 100*time.Millisecond {
				t.Errorf("%d bytes after %v, err %v", len(body), took, err)
			}
		}},
		{"trickle", Trickle(2048, 30*time.Millisecond), blobURL, 0, func(t *testing.T, _ *http.Response, body []byte, err error, took time.Duration) {
			if err != nil || !bytes.Equal(body, blob.Data) || took < 100*time.Millisecond {
				t.Errorf("%d bytes after %v, err %v", len(body), took, err)
			}
		}},
		{"503", Status(503, http.Header{"Retry-After": {"1"}}, "down"), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, _ error, _ time.Duration) {
			if resp.StatusCode != 503 || string(body) != "down" || resp.Header.Get("Retry-After") != "1" {
				t.Errorf("%d %q", resp.StatusCode, body)
			}
		}},
		{"denied", ErrorResponse(CodeDenied), manifestURL, 0, func(t *testing.T, resp *http.Response, body []byte, _ error, _ time.Duration) {
			e := errorsOf(body)
			if resp.StatusCode != 403 || len(e) != 1 || e[0].Code != "DENIED" || e[0].Message != "requested access to the resource is denied" {
				t.Errorf("%d %s", resp.StatusCode, body)
			}
		}},
		{"429", TooManyRequests("7"), manifestURL, 0, func(t *testing.T, resp *http.Response, body []byte, _ error, _ time.Duration) {
			if resp.StatusCode != 429 || codeOf(body) != "TOOMANYREQUESTS" || resp.Header.Get("Retry-After") != "7" ||
				resp.Header.Get("Docker-Distribution-API-Version") != "registry/2.0" {
				t.Errorf("%d %v %s", resp.StatusCode, resp.Header, body)
			}
		}},
		{"corrupt", CorruptByte(), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, err error, _ time.Duration) {
			if err != nil || len(body) != len(blob.Data) || digest.FromBytes(body) == blob.Digest || resp.Header.Get("Docker-Content-Digest") != blob.Digest.String() {
				t.Errorf("%d bytes, err %v", len(body), err)
			}
		}},
		{"extra bytes", ExtraBytes(3), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, err error, _ time.Duration) {
			if err != nil || len(body) != len(blob.Data)+3 || resp.ContentLength != blob.Size+3 {
				t.Errorf("%d bytes, Content-Length %d, err %v", len(body), resp.ContentLength, err)
			}
		}},
		{"content type", ContentType("text/plain"), manifestURL, 0, func(t *testing.T, resp *http.Response, body []byte, _ error, _ time.Duration) {
			if resp.Header.Get("Content-Type") != "text/plain" || !bytes.Equal(body, img.Raw) {
				t.Errorf("%s %q", resp.Header.Get("Content-Type"), body)
			}
		}},
		{"redirect", Redirect(), blobURL, 0, func(t *testing.T, resp *http.Response, body []byte, err error, _ time.Duration) {
			if err != nil || !bytes.Equal(body, blob.Data) || resp.Request.URL.Host == r.Host() {
				t.Errorf("%d bytes from %s, err %v", len(body), resp.Request.URL, err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule := &Rule{Match: Match{Route: RouteAny}, Times: 1, Fault: tc.fault}
			r.ClearFaults()
			r.Inject(rule)
			r.ResetRequests()
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 30 * time.Second
			}
			client := &http.Client{Timeout: timeout}
			start := time.Now()
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			req.Header.Set("Accept", strings.TrimPrefix(acceptAll, "Accept: "))
			resp, err := client.Do(req)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			tc.check(t, resp, body, err, time.Since(start))
			if rule.Hits() != 1 {
				t.Errorf("rule hits %d", rule.Hits())
			}
			reqs := r.Requests()
			if len(reqs) == 0 || reqs[0].Fault != tc.fault.Name() {
				t.Errorf("log %+v", reqs)
			}
		})
	}
}

// The redirect target gets no Authorization from net/http, and the log shows it.
func TestRedirectDropsAuthorization(t *testing.T) {
	r := NewRegistry(t, WithBasicAuth("u", "p"), WithFaults(&Rule{Match: Match{Route: RouteBlob}, Fault: Redirect()}))
	d := r.PutBlob("x", []byte("layer"))
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/x/blobs/"+d.String(), nil)
	req.SetBasicAuth("u", "p")
	resp, err := testClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "layer" {
		t.Fatalf("body %q", body)
	}
	reqs := r.Requests()
	if len(reqs) != 2 || reqs[0].Status != 307 || reqs[0].Authorization == "" ||
		reqs[1].Host != strings.TrimPrefix(r.StorageURL(), "http://") || reqs[1].Authorization != "" || reqs[1].Route != RouteBlob || reqs[1].Status != 200 {
		t.Errorf("log %+v", reqs)
	}
}

func TestRuleWindow(t *testing.T) {
	rule := &Rule{Match: Match{Method: http.MethodGet, Route: RouteManifest, Repo: "x"}, Nth: 2, Times: 2, Fault: ErrorResponse(CodeUnavailable)}
	r := NewRegistry(t, WithFaults(rule))
	r.PushImage("x", "latest", Schema2)
	r.PushImage("y", "latest", Schema2)
	var got []int
	for i := 0; i < 5; i++ {
		resp, _ := get(t, http.MethodGet, r.URL()+"/v2/x/manifests/latest")
		got = append(got, resp.StatusCode)
		// Neither another repository, a HEAD nor a blob counts against the rule.
		get(t, http.MethodGet, r.URL()+"/v2/y/manifests/latest")
		get(t, http.MethodHead, r.URL()+"/v2/x/manifests/latest")
	}
	if want := []int{200, 503, 503, 200, 200}; !equalInts(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if rule.Hits() != 2 {
		t.Errorf("hits %d", rule.Hits())
	}
	if n := r.Count(Match{Route: RouteManifest, Repo: "x"}); n != 10 {
		t.Errorf("Count %d", n)
	}
	if n := r.Count(Match{Method: http.MethodHead}); n != 5 {
		t.Errorf("HEADs %d", n)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRandomReplays(t *testing.T) {
	run := func(seed uint64) []string {
		r := NewRegistry(t, WithFaults(&Rule{Match: Match{Route: RouteBlob}, Fault: Random(seed, 0.5)}))
		d := r.PutBlob("x", bytes.Repeat([]byte("z"), 10000))
		for i := 0; i < 30; i++ {
			_, _, _ = try(http.MethodGet, r.URL()+"/v2/x/blobs/"+d.String())
		}
		var faults []string
		for _, rec := range r.Requests() {
			faults = append(faults, rec.Fault)
		}
		return faults
	}
	a, b, c := run(7), run(7), run(8)
	if strings.Join(a, "|") != strings.Join(b, "|") {
		t.Errorf("same seed, different faults:\n%v\n%v", a, b)
	}
	if strings.Join(a, "|") == strings.Join(c, "|") {
		t.Errorf("different seeds, same faults")
	}
	broken := 0
	for _, f := range a {
		if f != "" {
			broken++
		}
	}
	if broken < 5 || broken > 25 {
		t.Errorf("%d of 30 broken at rate 0.5", broken)
	}
}

func TestRequestLog(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("x", "latest", Schema2, Layers(1, 100))
	get(t, http.MethodGet, r.URL()+"/v2/x/blobs/"+img.Layers[0].Digest.String(), "Range: bytes=10-")
	get(t, http.MethodHead, r.URL()+"/v2/x/manifests/latest", acceptAll)
	reqs := r.Requests()
	if len(reqs) != 2 {
		t.Fatalf("%+v", reqs)
	}
	b, m := reqs[0], reqs[1]
	if b.Route != RouteBlob || b.Repo != "x" || b.Ref != img.Layers[0].Digest.String() || b.Range != "bytes=10-" ||
		b.Status != 206 || b.Bytes != img.Layers[0].Size-10 || b.Authorization != "" || b.Host != r.Host() {
		t.Errorf("blob record %+v", b)
	}
	if m.Route != RouteManifest || m.Method != http.MethodHead || m.Ref != "latest" || m.Accept == "" || m.Status != 200 || m.Bytes != 0 {
		t.Errorf("manifest record %+v", m)
	}
	r.ResetRequests()
	if len(r.Requests()) != 0 {
		t.Errorf("ResetRequests left %d", len(r.Requests()))
	}
}

// Close ends a response stalled for ever, and returns.
func TestCloseEndsStalls(t *testing.T) {
	r, err := Start(WithFaults(
		&Rule{Match: Match{Route: RouteBlob}, Fault: StallAfter(10, 0)},
		&Rule{Match: Match{Route: RouteManifest}, Fault: StallHeaders(0)},
		&Rule{Match: Match{Route: RoutePing}, Fault: Trickle(1, time.Hour)},
	))
	if err != nil {
		t.Fatal(err)
	}
	d := r.PutBlob("x", bytes.Repeat([]byte("z"), 100))
	r.PushImage("x", "latest", OCI)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, path := range []string{"/v2/x/blobs/" + d.String(), "/v2/x/manifests/latest", "/v2/"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL()+path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				var b []byte
				b, err = io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = fmt.Errorf("%s: %d %q", path, resp.StatusCode, b)
					t.Error(err)
				}
			}
			errs <- err
		}()
	}
	for r.Count(Match{}) < 3 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	start := time.Now()
	r.Close()
	wg.Wait()
	close(errs)
	// Close ends stalled requests itself: it must not wait for their own deadlines
	// (2 minutes). The bound catches that, not a slow machine.
	if took := time.Since(start); took > time.Minute {
		t.Errorf("Close took %v", took)
	}
	for err := range errs {
		if errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("a stalled request waited for its own deadline: %v", err)
		}
	}
	r.Close() // twice is fine
}

// TestResetAfterDeliversExactlyN (issue 22): the client receives exactly the n bytes
// ResetAfter promises, then a reset (not an end of file), whatever n and however fast
// it reads, so that a resume test can assert the offset it asks for next.
func TestResetAfterDeliversExactlyN(t *testing.T) {
	r := NewRegistry(t)
	img := r.PushImage("f", "big", OCI, Layers(1, 6<<20))
	url := r.URL() + "/v2/f/blobs/" + img.Layers[0].Digest.String()
	for _, n := range []int64{1, 100 << 10, 1<<20 + 7, 4 << 20} {
		for round := range 5 {
			r.ClearFaults()
			r.Inject(&Rule{Match: Match{Route: RouteBlob}, Fault: ResetAfter(n)})
			resp, err := http.Get(url)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if got != n || err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("ResetAfter(%d), round %d: %d bytes, then %v; want %d, then a reset", n, round, got, err, n)
			}
		}
	}
}
