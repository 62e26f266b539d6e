package puller

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/store"
)

// noAuthAtCDN fails t if blob storage saw an Authorization header, or the registry
// never did (the test would then prove nothing).
func noAuthAtCDN(t *testing.T, w *wire) {
	t.Helper()
	w.cdnCount.mu.Lock()
	defer w.cdnCount.mu.Unlock()
	for _, a := range w.cdnCount.auth {
		if a != "" {
			t.Errorf("blob storage was sent Authorization %q", a)
		}
	}
	w.regCount.mu.Lock()
	defer w.regCount.mu.Unlock()
	sent := false
	for _, a := range w.regCount.auth {
		sent = sent || a != ""
	}
	if !sent {
		t.Errorf("the registry never saw credentials: the test proves nothing")
	}
}

// TestEveryByteOnceOnTheWire: a pull sends each layer's bytes once, whatever the
// transfer decides (split or not): the servers' own count of the body bytes they wrote
// adds up to the layers' size, over plain HTTP, TLS with HTTP/2, and through a redirect
// to blob storage. The servers pace their answers (16 MB/s each) so that a measured
// transfer may well split; the assertion holds either way.
func TestEveryByteOnceOnTheWire(t *testing.T) {
	img := newWireImage(t, 3, 9<<20)
	for _, tc := range []struct {
		name     string
		tls, cdn bool
	}{{"http", false, false}, {"tls", true, false}, {"http cdn", false, true}, {"tls cdn", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWire(t, img, tc.tls, tc.cdn)
			w.reg.rate = 16e6
			if w.cdn != nil {
				w.cdn.rate = 16e6
			}
			st := store.NewMemory()
			if err := w.pull(t, w.client(t), t.Context(), st); err != nil {
				t.Fatal(err)
			}
			w.checkLayers(t, st)
			count := w.regCount
			if tc.cdn {
				count = w.cdnCount
				noAuthAtCDN(t, w)
			}
			if got := w.layerBytes(count); got != img.size {
				t.Errorf("the server sent %d bytes of layers, want %d (each byte once)", got, img.size)
			}
		})
	}
}

// cancelHalfWay returns a context cancelled once the registry has sent half of img's
// layer bytes, whenever that is (or when the test ends).
func (w *wire) cancelHalfWay(t *testing.T, img *wireImage) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() {
		for ctx.Err() == nil && w.layerBytes(w.regCount) < img.size/2 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	return ctx
}

// settle waits until c counts no answer in flight (a minute at most, a hang's bound):
// a handler adds a write to the count once the write has returned, which may be after
// the pull that read it has returned.
func settle(c *wireCount) {
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		busy := c.inFlight
		c.mu.Unlock()
		if busy == 0 {
			return
		}
	}
}

// keptBytes is what the layout holds of img's layers: each stored blob whole, and of
// the others the writer's prefix and the stretches it holds beyond it.
func keptBytes(t *testing.T, st *store.Layout, img *wireImage) int64 {
	t.Helper()
	var kept int64
	for _, d := range img.layers {
		if store.Has(context.Background(), st, d) {
			kept += int64(len(img.blobs[d]))
			continue
		}
		wr, err := st.Writer(context.Background(), descOf(img, d))
		if err != nil {
			t.Fatal(err)
		}
		kept += wr.Offset()
		for _, r := range wr.(store.RangeWriter).Held() {
			kept += r.End - r.Start
		}
		wr.Close()
	}
	return kept
}

// TestResumeOnTheWire: a pull cancelled part way, then pulled again into the same
// layout: the second pull is sent exactly the bytes the layout did not keep, none of
// what it kept (its prefix, and the stretches beyond).
func TestResumeOnTheWire(t *testing.T) {
	img := newWireImage(t, 2, 12<<20)
	w := newWire(t, img, false, false)
	w.reg.rate = 12e6
	st, err := store.OpenLayout(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c := w.client(t)
	if err := w.pull(t, c, w.cancelHalfWay(t, img), st); !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want the cancel", err)
	}
	settle(w.regCount) // the answers read through the cancel's grace have ended
	first := w.layerBytes(w.regCount)
	kept := keptBytes(t, st, img)
	t.Logf("first pull: sent %d bytes, the layout kept %d (%d lost in flight at the cancel)", first, kept, first-kept)
	if err := w.pull(t, c, context.Background(), st); err != nil {
		t.Fatal(err)
	}
	w.checkLayers(t, st)
	second := w.layerBytes(w.regCount) - first
	if second != img.size-kept {
		t.Errorf("the resume was sent %d bytes, want the %d the layout lacked", second, img.size-kept)
	}
}

// TestCancelKeepsWhatIsOnItsWay: a pull cancelled part way reads the answers to the
// requests it had made to their ends (WithCancelGrace: a minute here, which the paced
// answers take far less than) and keeps them, so that what the registry sent is what
// the layout holds (to the piece the count can miss under HTTP/2), over plain HTTP and
// over TLS with HTTP/2 (whose windows hold bytes in the process). The cancel comes once
// half the layers' bytes are sent, whenever that is; the count is read once the registry
// has no answer in flight.
func TestCancelKeepsWhatIsOnItsWay(t *testing.T) {
	img := newWireImage(t, 2, 12<<20)
	for _, tls := range []bool{false, true} {
		w := newWire(t, img, tls, false)
		w.reg.rate = 12e6
		st, err := store.OpenLayout(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		if err := w.pull(t, w.client(t), w.cancelHalfWay(t, img), st, WithCancelGrace(time.Minute)); !errors.Is(err, context.Canceled) {
			t.Fatalf("tls %v: %v, want the cancel", tls, err)
		}
		settle(w.regCount)
		sent := w.layerBytes(w.regCount)
		kept := keptBytes(t, st, img)
		// The registry counts what its writes reported. Under HTTP/2 a write whose
		// stream the client reset after reading all it asked for (the body closed
		// before END_STREAM came) reports an error though its bytes arrived, so the
		// count may be short by one 32 KiB piece per request: the layout may hold up
		// to that much more, never less.
		w.regCount.mu.Lock()
		var requests int64
		for _, d := range img.layers {
			requests += int64(w.regCount.blobGETs[d])
		}
		w.regCount.mu.Unlock()
		if kept < sent || kept > sent+requests*32<<10 {
			t.Errorf("tls %v: the registry sent %d bytes of layers in %d requests, the layout keeps %d: %d thrown away at the cancel", tls, sent, requests, kept, sent-kept)
		}
	}
}

// TestRedirectKeptWhileValid: the URL a blob was redirected to serves its later
// requests directly while it is valid: one registry GET per layer, however many
// requests the transfer makes.
func TestRedirectKeptWhileValid(t *testing.T) {
	img := newWireImage(t, 2, 6<<20)
	w := newWire(t, img, false, true)
	st := store.NewMemory()
	if err := w.pull(t, w.client(t), t.Context(), st); err != nil {
		t.Fatal(err)
	}
	w.checkLayers(t, st)
	noAuthAtCDN(t, w)
	for _, d := range img.layers {
		if n := w.regCount.blobGETs[d]; n != 1 {
			t.Errorf("layer %s: %d registry GETs, want 1", d, n)
		}
		if n := w.cdnCount.blobGETs[d]; n < 2 {
			t.Errorf("layer %s: %d requests to blob storage, want the 4 MiB first and the rest", d, n)
		}
	}
	if got := w.layerBytes(w.cdnCount); got != img.size {
		t.Errorf("blob storage sent %d bytes, want %d", got, img.size)
	}
}

// TestExpiredRedirectIsAskedAgain: blob storage's URLs expire after each request it
// accepts (the clock moves by more than their life). A URL that says when it expires is
// not used past that: the registry is asked for a fresh one, and no request meets a
// refusal. One that does not say is refused (403), and the registry is asked again.
// Either way the transfer goes on from the byte it reached: blob storage sends each
// byte once, and the registry's credentials never reach it. One request at a time to
// blob storage (WithConnsPerHost(1)), so that each is sent after the clock moved for the
// one before, whatever the machine's speed.
func TestExpiredRedirectIsAskedAgain(t *testing.T) {
	img := newWireImage(t, 1, 6<<20)
	for _, opaque := range []bool{false, true} {
		w := newWire(t, img, false, true)
		w.cdn.ttl, w.cdn.step, w.cdn.opaque = time.Minute, time.Hour, opaque
		st := store.NewMemory()
		if err := w.pull(t, w.client(t), t.Context(), st, WithConnsPerHost(1)); err != nil {
			t.Fatalf("opaque %v: %v", opaque, err)
		}
		w.checkLayers(t, st)
		noAuthAtCDN(t, w)
		d := img.layers[0]
		if n := w.regCount.blobGETs[d]; n < 2 {
			t.Errorf("opaque %v: %d registry GETs for the layer, want a fresh URL after the first expired", opaque, n)
		}
		if opaque && w.cdnCount.refused == 0 {
			t.Errorf("opaque: no request met the expiry")
		}
		if !opaque && w.cdnCount.refused != 0 {
			t.Errorf("stated expiry: %d requests refused, want none (the URL says when it expires)", w.cdnCount.refused)
		}
		if got := w.layerBytes(w.cdnCount); got != img.size {
			t.Errorf("opaque %v: blob storage sent %d bytes, want %d", opaque, got, img.size)
		}
	}
}

// TestHTTP2Lanes: over HTTP/2, blob requests in flight at once go over connections of
// their own (one capped connection does not cap the pull). The registry holds each
// blob answer until a second blob request is in flight, so that two are, whatever the
// machine's speed (or a minute passes).
func TestHTTP2Lanes(t *testing.T) {
	img := newWireImage(t, 4, 200<<10)
	w := newWire(t, img, true, false)
	hold := make(chan struct{})
	var mu sync.Mutex
	waiting := 0
	w.reg.before = func(rw http.ResponseWriter, r *http.Request) bool {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			return false
		}
		mu.Lock()
		if waiting++; waiting == 2 {
			close(hold)
		}
		mu.Unlock()
		select {
		case <-hold:
		case <-time.After(time.Minute):
		}
		return false
	}
	c := w.client(t)
	st := store.NewMemory()
	if err := w.pull(t, c, t.Context(), st); err != nil {
		t.Fatal(err)
	}
	w.checkLayers(t, st)
	if w.regCount.protos["HTTP/2.0"] == 0 || w.regCount.protos["HTTP/1.1"] != 0 {
		t.Errorf("protocols %v, want HTTP/2 only", w.regCount.protos)
	}
	if n := len(w.regCount.conns); n < 2 {
		t.Errorf("blob requests over %d connection(s) %v, want one per request in flight", n, w.regCount.conns)
	}
	hl := c.link(canonicalHostOf("https", strings.TrimPrefix(w.regSrv.URL, "https://")))
	if hl.proto != "HTTP/2.0" || hl.h1 || hl.ranges < 0 {
		t.Errorf("the host's link: %s, HTTP/1.1 only %v, ranges %d", hl.proto, hl.h1, hl.ranges)
	}
}

// TestHTTP2FallsBackToHTTP1: a host that answers 421 over HTTP/2, refuses streams
// with HTTP_1_1_REQUIRED, or ends its connections with a GOAWAY carrying
// HTTP_1_1_REQUIRED is spoken to over HTTP/1.1 from then on, and the pull succeeds.
func TestHTTP2FallsBackToHTTP1(t *testing.T) {
	img := newWireImage(t, 2, 1<<20)
	for _, tc := range []struct {
		name string
		h2   func(s *http.Server, c *tls.Conn, h http.Handler) // nil: the registry answers 421 itself
		why  string
	}{
		{"421", nil, "421"},
		{"RST_STREAM HTTP_1_1_REQUIRED", refuseH2(false), "HTTP_1_1_REQUIRED"},
		{"GOAWAY HTTP_1_1_REQUIRED", refuseH2(true), "HTTP_1_1_REQUIRED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWire(t, img, false, false)
			// Over TLS, HTTP/2 offered: by net/http's server, or by a raw one.
			w.regSrv.Close()
			s := httptest.NewUnstartedServer(w.reg)
			s.EnableHTTP2 = true
			if tc.h2 != nil {
				s.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){"h2": tc.h2}
				s.EnableHTTP2 = false
				s.TLS = &tls.Config{NextProtos: []string{"h2", "http/1.1"}}
			} else {
				w.reg.before = func(rw http.ResponseWriter, r *http.Request) bool {
					if r.ProtoMajor == 2 && strings.Contains(r.URL.Path, "/blobs/") {
						rw.WriteHeader(http.StatusMisdirectedRequest)
						return true
					}
					return false
				}
			}
			c := w.pullOverTLS(t, s)
			hl := c.link(canonicalHostOf("https", strings.TrimPrefix(s.URL, "https://")))
			if !hl.h1 || !strings.Contains(hl.h1Why, tc.why) {
				t.Errorf("the host's link: HTTP/1.1 only %v (%q), want it after %s", hl.h1, hl.h1Why, tc.why)
			}
			if w.regCount.protos["HTTP/1.1"] == 0 {
				t.Errorf("protocols %v, want HTTP/1.1 after the fallback", w.regCount.protos)
			}
		})
	}
}

// refuseH2 is an HTTP/2 server that refuses every stream with HTTP_1_1_REQUIRED (a
// RST_STREAM, or with goaway a GOAWAY).
func refuseH2(goaway bool) func(*http.Server, *tls.Conn, http.Handler) {
	return func(_ *http.Server, c *tls.Conn, _ http.Handler) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		preface := make([]byte, len(http2.ClientPreface))
		if _, err := ioReadFull(c, preface); err != nil {
			return
		}
		fr := http2.NewFramer(c, c)
		fr.WriteSettings()
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if !f.IsAck() {
					fr.WriteSettingsAck()
				}
			case *http2.HeadersFrame:
				if goaway {
					fr.WriteGoAway(f.StreamID, http2.ErrCodeHTTP11Required, nil)
					return
				}
				fr.WriteRSTStream(f.StreamID, http2.ErrCodeHTTP11Required)
			}
		}
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestCancelGraceOption: a negative grace is refused by name, 0 and more are taken.
func TestCancelGraceOption(t *testing.T) {
	var ie *pullkit.InvalidError
	if _, err := callOptions([]PullOption{WithCancelGrace(-time.Second)}); !errors.As(err, &ie) || ie.What != "option WithCancelGrace" {
		t.Errorf("WithCancelGrace(-1s): %v, want an InvalidError naming the option", err)
	}
	for _, d := range []time.Duration{0, time.Second} {
		o, err := callOptions([]PullOption{WithCancelGrace(d)})
		if err != nil || o.cancelGrace == nil || *o.cancelGrace != d {
			t.Errorf("WithCancelGrace(%v): %v", d, err)
		}
	}
}

// TestTLSSessionsResumed: a host's connections after the first resume its TLS session
// (the profile's transports share one session cache), so the server's certificate chain
// is sent and verified once per host, not once per lane; over HTTP/1.1 and HTTP/2.
func TestTLSSessionsResumed(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "HTTP/1.1", true: "HTTP/2"}[h2], func(t *testing.T) {
			img := newWireImage(t, 12, 8<<10)
			w := &wire{img: img, regCount: newCount(), cdnCount: newCount(), clock: &clock{t: time.Unix(1_800_000_000, 0)}}
			w.reg = &wireRegistry{img: img, user: "u", pass: "secret", count: w.regCount}
			// Blob answers wait until two are asked for at once (a minute at most), so
			// that the pull opens a second connection however fast the machine runs.
			var mu sync.Mutex
			blobReqs := 0
			handler := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/blobs/") {
					mu.Lock()
					blobReqs++
					mu.Unlock()
					for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
						mu.Lock()
						n := blobReqs
						mu.Unlock()
						if n >= 2 {
							break
						}
					}
				}
				w.reg.ServeHTTP(rw, r)
			})
			full, resumed := 0, 0
			s := httptest.NewUnstartedServer(handler)
			s.EnableHTTP2 = h2
			s.TLS = &tls.Config{VerifyConnection: func(cs tls.ConnectionState) error {
				mu.Lock()
				defer mu.Unlock()
				if cs.DidResume {
					resumed++
				} else {
					full++
				}
				return nil
			}}
			w.pullOverTLS(t, s)
			mu.Lock()
			defer mu.Unlock()
			if full != 1 || resumed < 1 {
				t.Errorf("%d full handshakes and %d resumed, want 1 full and the rest (at least 1) resumed", full, resumed)
			}
		})
	}
}
