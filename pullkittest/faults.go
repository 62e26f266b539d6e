package pullkittest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Fault breaks a response the way networks, proxies and registries break them. The
// constructors below make the kinds pullkit's own tests use (the semantics of
// internal/faultproxy); a test may write its own.
type Fault interface {
	// Name says what the fault does, for the request log.
	Name() string
	// Apply answers the request. next serves it as the registry would (into a
	// recorder, usually, so that a damaged copy can be written). Apply must return
	// once r.Context() is done: Close waits for it.
	Apply(w http.ResponseWriter, r *http.Request, next http.Handler)
}

// record serves the request into a recorder.
func record(r *http.Request, next http.Handler) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	return rec
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = append([]string(nil), v...)
	}
}

// writePrefixThen writes the recorded status and headers (Content-Length the full
// body's) and the first n bytes of the body, flushes, hijacks the connection and hands
// it to after, which must close it.
func writePrefixThen(w http.ResponseWriter, rec *httptest.ResponseRecorder, n int64, after func(net.Conn)) {
	body := rec.Body.Bytes()
	n = min(max(n, 0), int64(len(body)))
	copyHeader(w.Header(), rec.Header())
	if w.Header().Get("Content-Length") == "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(body[:n])
	_ = http.NewResponseController(w).Flush()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	_ = buf.Flush()
	after(conn)
}

// waitConn keeps a hijacked connection open, sending nothing, until d passes (never when
// d <= 0), the client closes it, or ctx is done; then it closes the connection.
func waitConn(ctx context.Context, c net.Conn, d time.Duration) {
	gone := make(chan struct{})
	go func() { _, _ = io.Copy(io.Discard, c); close(gone) }()
	wait(ctx, d, gone)
	_ = c.Close()
	<-gone
}

// wait blocks until d passes (never when d <= 0), gone is closed or ctx is done, and
// reports whether d passed.
func wait(ctx context.Context, d time.Duration, gone <-chan struct{}) bool {
	var timer <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-timer:
		return true
	case <-gone:
	case <-ctx.Done():
	}
	return false
}

type resetAfter struct{ n int64 }

// ResetAfter sends the headers and exactly n bytes of the real body, then resets the
// connection (TCP RST): the client receives those n bytes, then a reset, so a resume
// test can assert the offset it asks for next. (On Linux the reset waits until the
// client has acknowledged the n bytes; elsewhere it waits a moment for them.)
func ResetAfter(n int64) Fault { return resetAfter{n} }

func (f resetAfter) Name() string { return fmt.Sprintf("reset after %d bytes", f.n) }

func (f resetAfter) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	writePrefixThen(w, record(r, next), f.n, func(c net.Conn) {
		drained(c, 10*time.Second)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = c.Close()
	})
}

type truncateAfter struct{ n int64 }

// TruncateAfter sends n bytes of the real body under its full Content-Length, then
// closes the connection cleanly: the client sees an unexpected EOF.
func TruncateAfter(n int64) Fault { return truncateAfter{n} }

func (f truncateAfter) Name() string { return fmt.Sprintf("truncate after %d bytes", f.n) }

func (f truncateAfter) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	writePrefixThen(w, record(r, next), f.n, func(c net.Conn) { _ = c.Close() })
}

type stallAfter struct {
	n int64
	d time.Duration
}

// StallAfter sends the headers and n bytes of the real body, then nothing for d (for
// ever when d <= 0) or until the client gives up, then closes the connection: what a
// client's stall detection must catch.
func StallAfter(n int64, d time.Duration) Fault { return stallAfter{n, d} }

func (f stallAfter) Name() string { return fmt.Sprintf("stall after %d bytes for %v", f.n, f.d) }

func (f stallAfter) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	writePrefixThen(w, record(r, next), f.n, func(c net.Conn) { waitConn(r.Context(), c, f.d) })
}

type stallHeaders struct{ d time.Duration }

// StallHeaders sends nothing for d, then answers normally; when d <= 0 it sends nothing
// until the client gives up: what a client's response-header timeout must catch.
func StallHeaders(d time.Duration) Fault { return stallHeaders{d} }

func (f stallHeaders) Name() string { return fmt.Sprintf("stall headers for %v", f.d) }

func (f stallHeaders) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !wait(r.Context(), f.d, nil) {
		// The client gave up or the registry is closing: drop the connection rather
		// than let net/http send an empty 200.
		panic(http.ErrAbortHandler)
	}
	next.ServeHTTP(w, r)
}

type trickle struct {
	chunk int
	every time.Duration
}

// Trickle sends the real response chunk bytes at a time, one chunk every interval: a
// slow link, or a server a client should find too slow.
func Trickle(chunk int, every time.Duration) Fault { return trickle{max(chunk, 1), every} }

func (f trickle) Name() string { return fmt.Sprintf("trickle %d bytes every %v", f.chunk, f.every) }

func (f trickle) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := record(r, next)
	body := rec.Body.Bytes()
	copyHeader(w.Header(), rec.Header())
	if w.Header().Get("Content-Length") == "" {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(rec.Code)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	for len(body) > 0 {
		if !wait(r.Context(), f.every, nil) {
			panic(http.ErrAbortHandler) // cut the body, never end it cleanly
		}
		n := min(f.chunk, len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		_ = rc.Flush()
		body = body[n:]
	}
}

type status struct {
	code   int
	header http.Header
	body   string
}

// Status answers with code, header and body instead of the registry.
func Status(code int, header http.Header, body string) Fault { return status{code, header, body} }

func (f status) Name() string { return fmt.Sprintf("status %d", f.code) }

func (f status) Apply(w http.ResponseWriter, r *http.Request, _ http.Handler) {
	copyHeader(w.Header(), f.header)
	w.WriteHeader(f.code)
	_, _ = io.WriteString(w, f.body)
}

type errorResponse struct {
	code   ErrorCode
	header http.Header
}

// ErrorResponse answers with distribution's error body for code, with its status and
// message: ErrorResponse(CodeDenied) is a 403 DENIED, ErrorResponse(CodeUnavailable) a
// 503 UNAVAILABLE.
func ErrorResponse(code ErrorCode) Fault { return errorResponse{code: code} }

// TooManyRequests answers 429 TOOMANYREQUESTS with the given Retry-After (delta-seconds
// or an HTTP-date; none when "").
func TooManyRequests(retryAfter string) Fault {
	f := errorResponse{code: CodeTooManyRequests, header: http.Header{}}
	if retryAfter != "" {
		f.header.Set("Retry-After", retryAfter)
	}
	return f
}

func (f errorResponse) Name() string {
	if ra := f.header.Get("Retry-After"); ra != "" {
		return fmt.Sprintf("%d %s, Retry-After %s", f.code.Status(), f.code, ra)
	}
	return fmt.Sprintf("%d %s", f.code.Status(), f.code)
}

func (f errorResponse) Apply(w http.ResponseWriter, r *http.Request, _ http.Handler) {
	copyHeader(w.Header(), f.header)
	writeError(w, f.code, "", nil)
}

type rewrite struct {
	name string
	fn   func(body []byte, h http.Header) []byte
}

// Rewrite serves the request, then lets fn change the response's body and headers
// before they are sent. Content-Length becomes the new body's length unless fn sets it
// (for HEAD, whose body is empty, it stays the registry's).
func Rewrite(name string, fn func(body []byte, h http.Header) []byte) Fault {
	return rewrite{name, fn}
}

func (f rewrite) Name() string { return f.name }

func (f rewrite) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	rec := record(r, next)
	h := rec.Header().Clone()
	length := h.Get("Content-Length")
	h.Del("Content-Length")
	body := f.fn(bytes.Clone(rec.Body.Bytes()), h)
	if h.Get("Content-Length") == "" {
		if r.Method == http.MethodHead {
			h.Set("Content-Length", length)
		} else {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
	}
	copyHeader(w.Header(), h)
	w.WriteHeader(rec.Code)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// CorruptByte flips the middle byte of the real body: same size, wrong digest.
func CorruptByte() Fault {
	return Rewrite("corrupt byte", func(b []byte, _ http.Header) []byte {
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		return b
	})
}

// ExtraBytes appends n bytes to the real body, under a Content-Length that counts them:
// wrong size, wrong digest.
func ExtraBytes(n int) Fault {
	return Rewrite(fmt.Sprintf("%d extra bytes", n), func(b []byte, _ http.Header) []byte {
		return append(b, bytes.Repeat([]byte{'x'}, n)...)
	})
}

// ContentType keeps the real body but serves it as contentType (a registry that says
// application/json, or text/plain, for a manifest).
func ContentType(contentType string) Fault {
	return Rewrite("content-type "+contentType, func(b []byte, h http.Header) []byte {
		h.Set("Content-Type", contentType)
		return b
	})
}

type redirect struct{ base string }

// Redirect answers 307 to the same path on the registry's storage server
// (Registry.StorageURL, another host), which serves blobs without auth, as registries
// send blob requests to object storage. Match it to RouteBlob; the log then shows
// whether the client carried its Authorization to the other host. On the storage server
// itself it serves the request.
func Redirect() Fault { return redirect{} }

// RedirectTo answers 307 to the same path and query on the server at base (a URL such
// as http://127.0.0.1:8080).
func RedirectTo(base string) Fault { return redirect{base} }

func (f redirect) Name() string {
	if f.base == "" {
		return "redirect to storage"
	}
	return "redirect to " + f.base
}

func (f redirect) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	base := f.base
	if base == "" {
		lw, ok := w.(*logWriter)
		if !ok {
			http.Error(w, "pullkittest: Redirect() outside a Registry", http.StatusInternalServerError)
			return
		}
		if lw.kind == serveStorage {
			next.ServeHTTP(w, r) // already there
			return
		}
		base = lw.r.StorageURL()
	}
	http.Redirect(w, r, base+r.URL.RequestURI(), http.StatusTemporaryRedirect)
}

type random struct {
	seed   uint64
	rate   float64
	faults []Fault

	mu  sync.Mutex
	rng *rand.Rand
}

// Random applies, to a fraction rate of the requests it is given, one of faults chosen
// by a generator seeded with seed (so a failing run replays, given the same order of
// requests), and passes the others through. With no faults it draws from what
// internal/faultproxy's random mode does: a reset or a truncation after a random prefix
// (under 4 KiB), 500, 503, 429 with Retry-After 0, or a corrupt byte. Give it a Rule whose
// Match keeps it off the requests a test does not want broken (the ping, the token).
func Random(seed uint64, rate float64, faults ...Fault) Fault {
	return &random{seed: seed, rate: rate, faults: faults, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

func (f *random) Name() string { return fmt.Sprintf("random (seed %d, rate %g)", f.seed, f.rate) }

func (f *random) pick() Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rng.Float64() >= f.rate {
		return nil
	}
	if len(f.faults) > 0 {
		return f.faults[f.rng.IntN(len(f.faults))]
	}
	switch f.rng.IntN(6) {
	case 0:
		return ResetAfter(f.rng.Int64N(4096))
	case 1:
		return TruncateAfter(f.rng.Int64N(4096))
	case 2:
		return Status(http.StatusInternalServerError, nil, "")
	case 3:
		return Status(http.StatusServiceUnavailable, nil, "")
	case 4:
		return TooManyRequests("0")
	}
	return CorruptByte()
}

func (f *random) Apply(w http.ResponseWriter, r *http.Request, next http.Handler) {
	chosen := f.pick()
	if lw, ok := w.(*logWriter); ok {
		name := ""
		if chosen != nil {
			name = chosen.Name()
		}
		lw.setFault(name)
	}
	if chosen == nil {
		next.ServeHTTP(w, r)
		return
	}
	chosen.Apply(w, r, next)
}
