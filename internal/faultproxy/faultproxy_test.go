package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

var payload = bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB

func newProxy(t *testing.T) *Proxy {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(payload))
	}))
	t.Cleanup(up.Close)
	p, err := New(up.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func get(t *testing.T, url string) (*http.Response, []byte, error) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

func TestFaults(t *testing.T) {
	tests := []struct {
		name  string
		fault Fault
		check func(t *testing.T, resp *http.Response, body []byte, err error)
	}{
		{"pass through", nil, func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || !bytes.Equal(body, payload) {
				t.Fatalf("err %v, %d bytes", err, len(body))
			}
		}},
		{"reset", ResetAfter(1000), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err == nil || len(body) > 1000 {
				t.Fatalf("err %v after %d bytes; want an error after <= 1000", err, len(body))
			}
		}},
		{"truncate", TruncateAfter(1000), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if !errors.Is(err, io.ErrUnexpectedEOF) || len(body) != 1000 {
				t.Fatalf("err %v after %d bytes; want unexpected EOF after 1000", err, len(body))
			}
		}},
		{"status", Status(503, nil, "busy"), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 503 || string(body) != "busy" {
				t.Fatalf("%v %v %q", err, resp, body)
			}
		}},
		{"429", TooManyRequests("7"), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" {
				t.Fatalf("%v %v", err, resp)
			}
		}},
		{"corrupt", CorruptByte(), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || len(body) != len(payload) || bytes.Equal(body, payload) {
				t.Fatalf("err %v, %d bytes, equal %v", err, len(body), bytes.Equal(body, payload))
			}
		}},
		{"extra", ExtraBytes(3), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || len(body) != len(payload)+3 {
				t.Fatalf("err %v, %d bytes", err, len(body))
			}
		}},
		{"content type", ContentType("text/plain"), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.Header.Get("Content-Type") != "text/plain" || !bytes.Equal(body, payload) {
				t.Fatalf("err %v, type %q", err, resp.Header.Get("Content-Type"))
			}
		}},
		{"body", Body("junk", "application/json", []byte("{not json")), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || string(body) != "{not json" {
				t.Fatalf("err %v, body %q", err, body)
			}
		}},
		{"redirect", RedirectTo("http://127.0.0.2:1"), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err != nil || resp.StatusCode != 307 || resp.Header.Get("Location") != "http://127.0.0.2:1/v2/r/blobs/x" {
				t.Fatalf("err %v, %v", err, resp)
			}
		}},
		{"stall", StallAfter(10, 300*time.Millisecond), func(t *testing.T, resp *http.Response, body []byte, err error) {
			if err == nil || len(body) != 10 {
				t.Fatalf("err %v after %d bytes; want an error after 10", err, len(body))
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProxy(t)
			if tt.fault != nil {
				p.Add(&Rule{PathContains: "/blobs/", Times: 1, Fault: tt.fault})
			}
			resp, body, err := get(t, p.URL+"/v2/r/blobs/x")
			tt.check(t, resp, body, err)
			// Times: 1 — the second request passes through untouched.
			if _, body, err := get(t, p.URL+"/v2/r/blobs/x"); err != nil || !bytes.Equal(body, payload) {
				t.Fatalf("second request: err %v, %d bytes", err, len(body))
			}
			recs := p.Records()
			if len(recs) != 2 || (tt.fault != nil && recs[0].Fault != tt.fault.Name()) || recs[1].Fault != "" {
				t.Fatalf("records %+v", recs)
			}
		})
	}
}

func TestRecordsRangeAndCount(t *testing.T) {
	p := newProxy(t)
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/v2/r/blobs/sha256:abc", nil)
	req.Header.Set("Range", "bytes=100-")
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(b, payload[100:]) {
		t.Fatalf("status %d, %d bytes", resp.StatusCode, len(b))
	}
	recs := p.Records()
	if len(recs) != 1 || recs[0].Range != "bytes=100-" || recs[0].Authorization != "Bearer t" {
		t.Fatalf("records %+v", recs)
	}
	if p.Count(http.MethodGet, "sha256:abc") != 1 || p.Count(http.MethodHead, "") != 0 {
		t.Fatal("Count disagrees with the records")
	}
}

func TestRandomIsReplayable(t *testing.T) {
	names := func() []string {
		p := newProxy(t)
		p.EnableRandom(42, 0.5)
		for i := 0; i < 20; i++ {
			_, _, _ = get(t, p.URL+"/v2/r/blobs/x")
		}
		var out []string
		for _, r := range p.Records() {
			out = append(out, r.Fault)
		}
		return out
	}
	a, b := names(), names()
	faults := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("request %d: %q then %q with the same seed", i, a[i], b[i])
		}
		if a[i] != "" {
			faults++
		}
	}
	if faults == 0 || faults == len(a) {
		t.Fatalf("%d of %d requests faulted at rate 0.5", faults, len(a))
	}
}

func TestRandomKinds(t *testing.T) {
	p := newProxy(t)
	p.EnableRandom(7, 1, KindStatus503, KindTooManyRequests)
	for i := 0; i < 40; i++ {
		_, _, _ = get(t, p.URL+"/v2/r/blobs/x")
	}
	seen := map[string]int{}
	for _, r := range p.Records() {
		seen[r.Fault]++
	}
	tooMany := TooManyRequests("0").Name()
	if len(seen) != 2 || seen["status 503"] == 0 || seen[tooMany] == 0 {
		t.Fatalf("faults %v at rate 1 from {503, 429}: want both and nothing else", seen)
	}
	for _, k := range RecoverableKinds {
		if k == KindCorrupt {
			t.Fatal("RecoverableKinds holds KindCorrupt")
		}
	}
	if len(AllKinds) != len(RecoverableKinds)+1 {
		t.Fatalf("AllKinds %v, RecoverableKinds %v", AllKinds, RecoverableKinds)
	}
}

func TestRandomStall(t *testing.T) {
	p := newProxy(t)
	p.EnableRandom(3, 1, KindStall)
	c := &http.Client{Timeout: 300 * time.Millisecond}
	start := time.Now()
	resp, err := c.Get(p.URL + "/v2/r/blobs/x")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	// The stall lasts a minute: ending well before it is the client's timeout at work
	// (30 s is a bound for a loaded machine, not a measure of speed).
	if err == nil || time.Since(start) > 30*time.Second {
		t.Fatalf("err %v after %v: want the client's timeout to end a stalled body", err, time.Since(start))
	}
	if recs := p.Records(); len(recs) != 1 || recs[0].Fault == "" || recs[0].Fault[:5] != "stall" {
		t.Fatalf("records %+v, want one stall", recs)
	}
}
