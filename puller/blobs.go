package puller

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// blobSource is the layers.Fetcher of one pull: it asks the endpoint that served the manifest,
// then the later endpoints (mirrors, the origin) for what it lacks, then a foreign layer's
// URLs. It owns the HTTP side of a ranged transfer: the Range header, the 206 and its
// Content-Range, a server that ignores ranges.
type blobSource struct {
	eps      []*endpoint
	progress func(pullkit.Event)
	// conns caps the blob requests in flight to one host (0: no cap of its own).
	conns int

	locs locations // where blobs were redirected to (redirect.go)

	mu    sync.Mutex
	first map[digest.Digest]int    // the endpoint a blob is asked of first, after restarts
	slots map[string]chan struct{} // per host, when conns caps them
}

var _ layers.LinkMemory = (*blobSource)(nil)

var _ layers.Restarter = (*blobSource)(nil)

// Restart implements layers.Restarter: a blob whose bytes did not verify is asked of the
// next endpoint first (the endpoints in turn, when there are several), so that a mirror
// that serves bad bytes does not use up the retries.
func (b *blobSource) Restart(desc manifest.Descriptor, err error) {
	if len(b.eps) < 2 {
		return
	}
	b.mu.Lock()
	if b.first == nil {
		b.first = map[digest.Digest]int{}
	}
	b.first[desc.Digest] = (b.first[desc.Digest] + 1) % len(b.eps)
	b.mu.Unlock()
}

// order is the endpoints for desc, the one to ask first first; endpoints found dead in
// this call (unreachable, or a body that broke on them) are left out while another is
// alive.
func (b *blobSource) order(desc manifest.Descriptor) []*endpoint {
	b.mu.Lock()
	k := b.first[desc.Digest]
	b.mu.Unlock()
	eps := b.eps
	if k != 0 {
		eps = append(append([]*endpoint(nil), b.eps[k:]...), b.eps[:k]...)
	}
	return alive(eps)
}

// Fetch implements layers.Fetcher. A request from an offset that the server answers with
// the whole blob (200), or with another range than asked, is read from the start with the
// bytes before the offset discarded when the transfer runs to the end; a bounded range it
// will not serve is pullkit.ErrUnsupported.
func (b *blobSource) Fetch(ctx context.Context, desc manifest.Descriptor, offset, length int64) (io.ReadCloser, error) {
	var err error
	for _, ep := range b.order(desc) {
		var rc io.ReadCloser
		rc, err = b.fetchFrom(ctx, ep, desc, offset, length)
		if err == nil {
			if len(b.eps) > 1 {
				// A body that breaks on one of several endpoints marks it dead for the
				// call: the transfer's resume (a Range from the byte it reached) then
				// goes to the next.
				rc = keepServed(rc, &markingBody{ReadCloser: rc, ep: ep})
			}
			return rc, nil
		}
		if ctx.Err() != nil || !(errors.Is(err, pullkit.ErrNotFound) || errors.Is(err, pullkit.ErrUnreachable) || errors.Is(err, pullkit.ErrUnauthorized)) {
			return nil, err
		}
	}
	if errors.Is(err, pullkit.ErrNotFound) && len(desc.URLs) > 0 {
		return b.foreign(ctx, desc, offset, length, err)
	}
	return nil, err
}

// fetchFrom asks ep for the blob's bytes: at the URL ep redirected it to earlier in the
// call while that URL is usable, else at ep (whose redirect, if it makes one, is kept).
// A kept URL that blob storage refuses (403 or 401: expired, or signed for someone
// else) or that fails is dropped, and ep is asked again for a fresh one.
func (b *blobSource) fetchFrom(ctx context.Context, ep *endpoint, desc manifest.Descriptor, offset, length int64) (io.ReadCloser, error) {
	if loc := b.locs.get(ep, desc.Digest); loc != nil {
		if loc.usable(ep.c.now()) {
			release, err := b.slot(ctx, canonicalHost(loc.u))
			if err != nil {
				return nil, err
			}
			rc, _, err := ep.blob(ctx, loc.u.String(), desc, offset, length, b.progress, true)
			if err == nil {
				return releasing(rc, release), nil
			}
			release()
			if ctx.Err() != nil {
				return nil, err
			}
			var he *pullkit.HTTPError
			if errors.As(err, &he) && b.progress != nil && (he.StatusCode == http.StatusForbidden || he.StatusCode == http.StatusUnauthorized) {
				b.progress(pullkit.Event{Kind: pullkit.EventRetrying, What: "layer", Digest: desc.Digest, Done: offset, Total: desc.Size, Err: fmt.Errorf("blob storage refused the URL the registry gave (%w): asking the registry again", err)})
			}
		}
		b.locs.forget(ep, desc.Digest, loc)
	}
	host := canonicalHostOf(ep.c.scheme(ep.host), ep.host)
	if to := ep.c.link(host).redirectHost(); to != "" {
		host = to
	}
	release, err := b.slot(ctx, host)
	if err != nil {
		return nil, err
	}
	u := ep.url("blobs", desc.Digest.String())
	rc, final, err := ep.blob(ctx, u, desc, offset, length, b.progress, false)
	if err != nil && refusedElsewhere(err, u) && ctx.Err() == nil {
		// Blob storage refused the URL the registry had just given (it expired on the
		// way, or the clocks disagree): once more, for a fresh one.
		rc, final, err = ep.blob(ctx, u, desc, offset, length, b.progress, false)
	}
	if err != nil {
		release()
		return nil, err
	}
	if final != nil {
		if orig, perr := url.Parse(u); perr == nil && canonicalHost(final) != canonicalHost(orig) {
			b.locs.put(ep, desc.Digest, final, ep.c.now())
			hl := ep.c.link(canonicalHost(orig))
			hl.mu.Lock()
			hl.redirect = canonicalHost(final)
			hl.mu.Unlock()
		}
	}
	return releasing(rc, release), nil
}

// refusedElsewhere reports a 403 or 401 from another host than the one u names: blob
// storage refusing the URL the registry redirected to.
func refusedElsewhere(err error, u string) bool {
	var he *pullkit.HTTPError
	if !errors.As(err, &he) || (he.StatusCode != http.StatusForbidden && he.StatusCode != http.StatusUnauthorized) {
		return false
	}
	at, err1 := url.Parse(he.URL)
	orig, err2 := url.Parse(u)
	return err1 == nil && err2 == nil && at.Host != "" && canonicalHost(at) != canonicalHost(orig)
}

// slot waits for room for one more blob request to host, when the call caps them
// (WithConnsPerHost), and returns what gives it back.
func (b *blobSource) slot(ctx context.Context, host string) (func(), error) {
	if b.conns <= 0 {
		return func() {}, nil
	}
	b.mu.Lock()
	if b.slots == nil {
		b.slots = map[string]chan struct{}{}
	}
	ch := b.slots[host]
	if ch == nil {
		ch = make(chan struct{}, b.conns)
		b.slots[host] = ch
	}
	b.mu.Unlock()
	select {
	case ch <- struct{}{}:
		var once sync.Once
		return func() { once.Do(func() { <-ch }) }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// releasing calls release when rc is closed, keeping what rc says it serves.
func releasing(rc io.ReadCloser, release func()) io.ReadCloser {
	return keepServed(rc, &releaseBody{ReadCloser: rc, release: release})
}

type releaseBody struct {
	io.ReadCloser
	release func()
}

func (r *releaseBody) Close() error {
	err := r.ReadCloser.Close()
	r.release()
	return err
}

// wholeBody is a whole-blob answer to a request for a range (layers.Served).
type wholeBody struct{ io.ReadCloser }

func (wholeBody) ServedFrom() int64 { return 0 }

// keepServed returns wrapped, still a layers.Served when inner was one.
func keepServed(inner, wrapped io.ReadCloser) io.ReadCloser {
	if s, ok := inner.(layers.Served); ok && s.ServedFrom() == 0 {
		return wholeBody{wrapped}
	}
	return wrapped
}

// redirectHost is where the host's blob GETs were last redirected, or "".
func (hl *hostLink) redirectHost() string {
	hl.mu.Lock()
	defer hl.mu.Unlock()
	return hl.redirect
}

// foreign fetches a foreign layer from its URLs, without the registry's credentials. The
// error names what the registry said and every URL tried, not the pages they answered.
func (b *blobSource) foreign(ctx context.Context, desc manifest.Descriptor, offset, length int64, regErr error) (io.ReadCloser, error) {
	ep := b.eps[0]
	var tried []string
	for _, u := range desc.URLs {
		pu, perr := url.Parse(u)
		if perr != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			tried = append(tried, text.Clean(u, 100)+" (not an http(s) URL)")
			continue
		}
		rc, _, err := ep.blob(ctx, pu.String(), desc, offset, length, b.progress, true)
		if err == nil {
			return rc, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		why := "failed"
		var he *pullkit.HTTPError
		switch {
		case errors.As(err, &he):
			why = strconv.Itoa(he.StatusCode)
		case errors.Is(err, pullkit.ErrDenied):
			why = "refused: " + text.Clean(err.Error(), 150)
		}
		tried = append(tried, redactURL(pu)+" ("+why+")")
	}
	return nil, fmt.Errorf("foreign layer %w: the registry does not have it (%s), and its URLs failed: %s", pullkit.ErrNotFound, text.Clean(regErr.Error(), 300), text.List(tried, 5))
}

// blob does one blob request on u for [offset, offset+length) (to the end when length <
// 0) and checks the answer. It returns the body, and the URL that answered (the last of
// the redirects). A server that answers a range with the whole blob gets its answer
// taken as the whole fetch: the body is a layers.Served from offset 0. A foreign request
// (a foreign layer's URL, or blob storage the registry redirected to) carries none of
// the registry's credentials or headers.
func (ep *endpoint) blob(ctx context.Context, u string, desc manifest.Descriptor, offset, length int64, progress func(pullkit.Event), foreign bool) (io.ReadCloser, *url.URL, error) {
	size := desc.Size
	end := int64(-1) // inclusive last byte asked for, when known
	if length >= 0 {
		end = offset + length - 1
	} else if size >= 0 {
		end = size - 1
	}
	hdr := http.Header{}
	switch {
	case offset == 0 && length < 0:
	case length < 0:
		hdr.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	default:
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, end))
	}
	ri := reqInfo{step: "blob " + desc.Digest.String(), what: "layer", digest: desc.Digest, noRetry: true, progress: progress, blob: true}
	send := func(h http.Header) (*http.Response, *reqInfo, error) {
		if foreign {
			info := ri
			info.origin = ep.host
			req, err := http.NewRequestWithContext(withInfo(ctx, &info), http.MethodGet, u, nil)
			if err != nil {
				return nil, nil, &pullkit.InvalidError{What: "foreign layer URL", Reason: text.Clean(u, 200), Err: err}
			}
			for k, v := range h {
				req.Header[k] = v
			}
			resp, err := ep.c.anon.Do(req)
			if err != nil {
				return nil, &info, requestError(ctx, err)
			}
			return resp, &info, nil
		}
		return ep.request(ctx, http.MethodGet, u, h, ri)
	}
	resp, info, err := send(hdr)
	if err != nil {
		return nil, nil, err
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && length < 0 && size >= 0 && offset < size {
		// Some registries (go-containerregistry's) refuse an open-ended range: close it.
		resp.Body.Close()
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%d", offset, size-1))
		if resp, info, err = send(hdr); err != nil {
			return nil, nil, err
		}
	}
	final := resp.Request.URL
	served := func(ok bool) {
		// What the host that answered does with ranges, for the client's life.
		hl := ep.c.link(canonicalHost(final))
		hl.mu.Lock()
		if ok {
			hl.ranges = 1
		} else {
			hl.ranges = -1
		}
		hl.mu.Unlock()
	}
	expected := "" // the URL says what was asked for
	switch resp.StatusCode {
	case http.StatusOK:
		if size >= 0 && resp.ContentLength >= 0 && resp.ContentLength != size {
			resp.Body.Close()
			return nil, nil, &pullkit.SizeMismatchError{What: "blob", Want: size, Got: resp.ContentLength, Source: "Content-Length"}
		}
		if hdr.Get("Range") == "" {
			return resp.Body, final, nil
		}
		// The server ignored the range: its answer is the whole blob, taken as the
		// fetch of everything from the offset asked for (never asked for again).
		served(false)
		return wholeBody{resp.Body}, final, nil
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		start, last, total, perr := parseContentRange(cr)
		bad := ""
		switch {
		case hdr.Get("Range") == "":
			if perr != nil || start != 0 || total < 0 || last != total-1 {
				bad = "a partial answer to a request for the whole blob"
			}
		case perr != nil:
			bad = perr.Error()
		case start != offset || (end >= 0 && last != end):
			bad = "not the range asked for"
		case total >= 0 && size >= 0 && total != size:
			resp.Body.Close()
			return nil, nil, &pullkit.SizeMismatchError{What: "blob", Want: size, Got: total, Source: "Content-Range total"}
		case resp.ContentLength >= 0 && resp.ContentLength != last-start+1:
			bad = fmt.Sprintf("Content-Length %d does not match it", resp.ContentLength)
		}
		if bad == "" {
			if hdr.Get("Range") != "" {
				served(true)
			}
			return resp.Body, final, nil
		}
		resp.Body.Close()
		if offset == 0 && length < 0 {
			return nil, nil, fmt.Errorf("%w: Content-Range %q: %s", pullkit.ErrInvalid, text.Clean(cr, 100), bad)
		}
		// A botched range: the whole blob instead, taken as the fetch of everything
		// from the offset asked for.
		served(false)
		rc, final, err := ep.blob(ctx, u, desc, 0, -1, progress, foreign)
		if err != nil {
			return nil, nil, err
		}
		return wholeBody{rc}, final, nil
	}
	defer resp.Body.Close()
	return nil, nil, statusError(resp, info, expected, ep.c.now())
}

// parseContentRange parses a 206 answer's Content-Range (RFC 9110 section 14.4):
// "bytes first-last/complete" or "bytes first-last/*" (total -1). The unsatisfied form,
// signs, spaces inside numbers, first > last and last >= complete are errors.
func parseContentRange(h string) (start, end, total int64, err error) {
	bad := func(why string) (int64, int64, int64, error) {
		return 0, 0, 0, fmt.Errorf("Content-Range %q: %s", text.Clean(h, 100), why)
	}
	h = strings.TrimSpace(h)
	unit, spec, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return bad(`want "bytes first-last/total"`)
	}
	rng, complete, ok := strings.Cut(strings.TrimLeft(spec, " "), "/")
	if !ok {
		return bad("no complete length")
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return bad("no range")
	}
	if start, err = parseDecimal(first); err != nil {
		return bad("first byte: " + err.Error())
	}
	if end, err = parseDecimal(last); err != nil {
		return bad("last byte: " + err.Error())
	}
	if start > end {
		return bad("first byte after last")
	}
	total = -1
	if complete != "*" {
		if total, err = parseDecimal(complete); err != nil {
			return bad("complete length: " + err.Error())
		}
		if end >= total {
			return bad("last byte beyond complete length")
		}
	}
	return start, end, total, nil
}

// parseDecimal parses a non-empty run of ASCII digits as a non-negative int64.
func parseDecimal(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a decimal number: %q", text.Clean(s, 30))
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// markingBody marks its endpoint dead when the body breaks (an error other than EOF, and
// not the caller's cancel).
type markingBody struct {
	io.ReadCloser
	ep     *endpoint
	closed atomic.Bool
}

func (m *markingBody) Read(p []byte) (int, error) {
	n, err := m.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, context.Canceled) && !m.closed.Load() {
		m.ep.markDead()
	}
	return n, err
}

func (m *markingBody) Close() error {
	m.closed.Store(true)
	return m.ReadCloser.Close()
}
