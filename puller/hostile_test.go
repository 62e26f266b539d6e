package puller_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/store"
)

// The rows of issue 12's table ("Survive a hostile registry"), one test (or subtest) each,
// against a purpose-built registry on loopback. Each asserts the outcome (a verified
// image, or a typed error within a generous bound on a hang), logs the memory peak, and
// checks that nothing unverified is stored.

// hostileOutcome is one pull of a hostile test.
type hostileOutcome struct {
	img  *manifest.Image
	err  error
	took time.Duration
	ev   *events
	dir  string
	st   *store.Layout
}

// hostilePull pulls ref with c into a fresh layout, within a 90 s bound on a hang, and
// logs what it took (time, CPU, memory).
func hostilePull(t *testing.T, c *puller.Client, ref string, opts ...puller.PullOption) *hostileOutcome {
	t.Helper()
	o := &hostileOutcome{ev: &events{}, dir: t.TempDir()}
	o.st = openStore(t, o.dir)
	mem := watchMemory()
	cpu := cpuTime()
	o.took = within(t, 90*time.Second, func() {
		o.img, o.err = c.Pull(pullCtx(t), ref, o.st, append([]puller.PullOption{linuxAMD64, puller.WithProgress(o.ev.Add)}, opts...)...)
	})
	mem.Stop(t)
	t.Logf("pull took %v, %v of CPU; error: %v", o.took.Round(time.Millisecond), (cpuTime() - cpu).Round(time.Millisecond), o.err)
	return o
}

// failed asserts that the pull failed with a *pullkit.Error matching every one of want,
// naming the reference and every one of names, on one clean line, and that it stored no
// name and nothing unverified.
func (o *hostileOutcome) failed(t *testing.T, ref string, want []error, names ...string) string {
	t.Helper()
	if o.err == nil {
		t.Fatalf("pull %s succeeded; want an error matching %v", ref, want)
	}
	for _, w := range want {
		if !errors.Is(o.err, w) {
			t.Errorf("error %q does not match %v", o.err, w)
		}
	}
	var pe *pullkit.Error
	if !errors.As(o.err, &pe) {
		t.Errorf("error %q is not a *pullkit.Error", o.err)
	}
	msg := errLine(t, o.err)
	for _, s := range append([]string{ref}, names...) {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not name %q", msg, s)
		}
	}
	o.nothingNamed(t)
	checkStore(t, o.dir, false)
	return msg
}

// nothingNamed asserts that the store names no image.
func (o *hostileOutcome) nothingNamed(t *testing.T) {
	t.Helper()
	if imgs, err := o.st.Images(context.Background()); err != nil || len(imgs) != 0 {
		t.Errorf("the failed pull left names %v (%v)", imgs, err)
	}
}

// verified asserts that the pull succeeded with every blob stored and verified.
func (o *hostileOutcome) verified(t *testing.T) {
	t.Helper()
	if o.err != nil {
		t.Fatalf("pull: %v", o.err)
	}
	stored := checkStore(t, o.dir, true)
	for _, d := range append(imageBlobs(o.img), o.img.Stored.Digest) {
		found := false
		for _, s := range stored {
			found = found || s == d
		}
		if !found {
			t.Errorf("blob %s is not in the store", d)
		}
	}
}

// trickle writes headers for a body of size bytes, then one byte every interval until
// the client goes away.
func trickle(size int64, every time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		_ = rc.Flush()
		t := time.NewTicker(every)
		defer t.Stop()
		for range size {
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
			_ = rc.Flush()
		}
	}
}

// hang answers nothing until the client goes away.
func hang(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// Row: "A layer whose declared size is 2^63-1, with a body that trickles, sends the
// transfer into a busy loop that reads nothing, uses a full core and ignores
// cancellation": refused before any plan or request; and a layer at the largest size
// allowed with a trickling body reads, uses little CPU, and stops when cancelled.
func TestHostileDeclaredSizeMaxInt64(t *testing.T) {
	t.Run("2^63-1 declared: ErrTooLarge before any request", func(t *testing.T) {
		reg := newHostileReg(t)
		d := digest.FromString("a layer never served whole")
		reg.handle("/v2/r/blobs/"+d.String(), trickle(math.MaxInt64, 100*time.Millisecond))
		reg.image("r", "v1", hostileConfig("linux", "amd64", d), manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: d, Size: math.MaxInt64})
		o := hostilePull(t, newFaultClient(t), reg.ref("r:v1"))
		msg := o.failed(t, reg.ref("r:v1"), []error{pullkit.ErrTooLarge}, d.String())
		var tl *pullkit.TooLargeError
		if !errors.As(o.err, &tl) || tl.Size != math.MaxInt64 {
			t.Errorf("error %q is not a TooLargeError of the declared size", msg)
		}
		if n := reg.count("/blobs/" + d.String()); n != 0 {
			t.Errorf("the layer was requested %d times; the size must be refused before", n)
		}
	})
	t.Run("the largest size allowed, trickling: it reads, and a cancel ends it", func(t *testing.T) {
		reg := newHostileReg(t)
		d := digest.FromString("a large layer, trickling")
		reg.handle("/v2/r/blobs/"+d.String(), trickle(layers.DefaultMaxBlobSize, 50*time.Millisecond))
		reg.image("r", "v1", hostileConfig("linux", "amd64", d), manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: d, Size: layers.DefaultMaxBlobSize})
		c := newFaultClient(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ev := &events{}
		dir := t.TempDir()
		st := openStore(t, dir)
		mem := watchMemory()
		cpu := cpuTime()
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err = c.Pull(ctx, reg.ref("r:v1"), st, linuxAMD64, puller.WithProgress(ev.Add))
		}()
		time.Sleep(3 * time.Second)
		used := cpuTime() - cpu
		cancelled := time.Now()
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("the pull did not return within 30 s of its cancel")
		}
		mem.Stop(t)
		t.Logf("CPU over 3 s of trickle: %v; returned %v after the cancel: %v", used.Round(time.Millisecond), time.Since(cancelled).Round(time.Millisecond), err)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		if used > 1500*time.Millisecond {
			t.Errorf("the trickle cost %v of CPU in 3 s: a busy loop", used)
		}
		if n := reg.count("/blobs/" + d.String()); n == 0 || n > 4 {
			t.Errorf("%d requests for the layer, want a few", n)
		}
		checkStore(t, dir, false)
	})
}

// Row: "Memory grows with the declared size of a layer: the parallel split plans one part
// per 4 MiB up front": 64 TiB is over the cap, refused at once; 1 TiB (the cap) served as
// fast as loopback goes, with ranges, keeps memory flat while it is received.
func TestHostileDeclared64TiB(t *testing.T) {
	t.Run("64 TiB declared: ErrTooLarge before any request", func(t *testing.T) {
		reg := newHostileReg(t)
		d := digest.FromString("64 TiB")
		reg.handle("/v2/r/blobs/"+d.String(), trickle(64<<40, 100*time.Millisecond))
		reg.image("r", "v1", hostileConfig("linux", "amd64", d), manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: d, Size: 64 << 40})
		o := hostilePull(t, newFaultClient(t), reg.ref("r:v1"))
		o.failed(t, reg.ref("r:v1"), []error{pullkit.ErrTooLarge}, d.String())
		if n := reg.count("/blobs/" + d.String()); n != 0 {
			t.Errorf("the layer was requested %d times; the size must be refused before", n)
		}
	})
	t.Run("1 TiB declared and served fast: memory stays flat", func(t *testing.T) {
		reg := newHostileReg(t)
		d := digest.FromString("1 TiB of zeros, not really")
		reg.handle("/v2/r/blobs/"+d.String(), func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, &zeros{n: layers.DefaultMaxBlobSize})
		})
		reg.image("r", "v1", hostileConfig("linux", "amd64", d), manifest.Descriptor{MediaType: manifest.MediaTypeOCILayerGzip, Digest: d, Size: layers.DefaultMaxBlobSize})
		st := &discardStore{Memory: store.NewMemory(), big: 1 << 30}
		c := newFaultClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
		defer cancel()
		mem := watchMemory()
		var err error
		within(t, 60*time.Second, func() { _, err = c.Pull(ctx, reg.ref("r:v1"), st, linuxAMD64) })
		heap, _ := mem.Stop(t)
		got := st.written.Load()
		t.Logf("received %.1f MiB of the 1 TiB in 4 s (%d requests for it), then the deadline: %v", float64(got)/(1<<20), reg.count("/blobs/"+d.String()), err)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("error %v, want the deadline", err)
		}
		if got == 0 {
			t.Error("nothing was received: the test proves nothing")
		}
		if heap > 256<<20 {
			t.Errorf("peak heap %.1f MiB while receiving a 1 TiB layer: memory grows with the declared size", float64(heap)/(1<<20))
		}
	})
}

// Row: "Nothing outside blob bodies has a deadline: a registry that accepts the connection
// and never answers (or trickles headers, or sends endless 100 Continue/1xx responses) on
// the ping, the token request, the manifest or the config hangs the pull forever". Each
// case fails with ErrUnreachable naming the step, with short deadlines; the defaults are
// checked by TestDefaultTimeoutsSane.
func TestHostileNoAnswer(t *testing.T) {
	silent := func(c net.Conn, r *bufio.Reader) {
		// Whatever comes (a request, or a TLS handshake: HTTPS is asked first), nothing
		// goes back, until the client closes.
		_, _ = io.Copy(io.Discard, r)
	}
	headerTrickle := func(c net.Conn, r *bufio.Reader) {
		readRequestHead(r)
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nX-Slow: "))
		for {
			time.Sleep(50 * time.Millisecond)
			if _, err := c.Write([]byte("a")); err != nil {
				return
			}
		}
	}
	continues := func(c net.Conn, r *bufio.Reader) {
		readRequestHead(r)
		for {
			time.Sleep(20 * time.Millisecond)
			if _, err := c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
				return
			}
		}
	}
	early := func(c net.Conn, r *bufio.Reader) {
		readRequestHead(r)
		_, _ = c.Write([]byte("HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"))
		_, _ = r.ReadByte()
	}
	for _, tc := range []struct {
		name  string
		serve func(c net.Conn, r *bufio.Reader)
		step  string
	}{
		{"manifest: accepts and never answers", silent, "fetch manifest"},
		{"manifest: trickles its headers", headerTrickle, "fetch manifest"},
		{"manifest: endless 100 Continue", continues, "fetch manifest"},
		{"manifest: one 103, then nothing", early, "fetch manifest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := newRawServer(t, tc.serve)
			c := newFaultClient(t, puller.WithTimeouts(shortTimeouts()), puller.WithRetry(quickRetry(2)))
			ref := raw.host() + "/r:v1"
			o := hostilePull(t, c, ref)
			o.failed(t, ref, []error{pullkit.ErrUnreachable}, tc.step)
		})
	}

	t.Run("token request: accepts and never answers", func(t *testing.T) {
		raw := newRawServer(t, silent)
		reg := newHostileReg(t)
		reg.image("r", "v1", hostileConfig("linux", "amd64"))
		reg.auth = func(w http.ResponseWriter, r *http.Request) bool {
			if r.Header.Get("Authorization") == "Bearer ok" {
				return true
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+raw.host()+`/token",service="hostile"`)
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return false
		}
		c := newFaultClient(t, puller.WithTimeouts(shortTimeouts()), puller.WithRetry(quickRetry(2)))
		o := hostilePull(t, c, reg.ref("r:v1"))
		o.failed(t, reg.ref("r:v1"), []error{pullkit.ErrUnreachable}, "token")
		if raw.accepted() == 0 {
			t.Error("the token server was never asked: the test proves nothing")
		}
	})

	// The config and the layers, by an HTTP server that holds the request.
	reg := newHostileReg(t)
	layer := []byte("a small layer")
	cfgStuck := hostileConfig("linux", "amd64", digest.FromBytes(layer))
	reg.image("config", "v1", cfgStuck, reg.layer(layer))
	reg.handle("/v2/config/blobs/"+digest.FromBytes(cfgStuck).String(), hang)
	lHead := reg.layer([]byte("layer whose headers never come"))
	reg.image("lhead", "v1", hostileConfig("linux", "amd64", lHead.Digest), lHead)
	reg.handle("/v2/lhead/blobs/"+lHead.Digest.String(), hang)
	lBody := reg.layer([]byte("layer whose body never comes"))
	reg.image("lbody", "v1", hostileConfig("linux", "amd64", lBody.Digest), lBody)
	reg.handle("/v2/lbody/blobs/"+lBody.Digest.String(), func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(lBody.Size))
		w.WriteHeader(http.StatusOK)
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	for _, tc := range []struct {
		name, repo, step string
		stall            bool
	}{
		{"config: headers never come", "config", "fetch config " + digest.FromBytes(cfgStuck).String(), false},
		{"layer: headers never come", "lhead", lHead.Digest.String(), false},
		{"layer: body never comes", "lbody", lBody.Digest.String(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newFaultClient(t, puller.WithTimeouts(shortTimeouts()), puller.WithRetry(quickRetry(2)))
			o := hostilePull(t, c, reg.ref(tc.repo+":v1"))
			o.failed(t, reg.ref(tc.repo+":v1"), []error{pullkit.ErrUnreachable}, tc.step)
			var se *puller.StallError
			if tc.stall && !errors.As(o.err, &se) {
				t.Errorf("error %v is not a *puller.StallError", o.err)
			}
		})
	}

	t.Run("a transport of the caller's with no deadlines: the backstop ends it", func(t *testing.T) {
		raw := newRawServer(t, silent)
		to := shortTimeouts()
		to.Connect, to.TLSHandshake = 250*time.Millisecond, 250*time.Millisecond
		c := newFaultClient(t, puller.WithTransport(&http.Transport{}), puller.WithTimeouts(to), puller.WithRetry(quickRetry(2)))
		ref := raw.host() + "/r:v1"
		o := hostilePull(t, c, ref)
		msg := o.failed(t, ref, []error{pullkit.ErrUnreachable}, "fetch manifest", "no response headers within")
		var se *puller.StallError
		if !errors.As(o.err, &se) {
			t.Errorf("error %q is not a *puller.StallError", msg)
		}
	})
}

// TestDefaultTimeoutsSane checks the defaults against the two promises: a slow
// but honest registry passes (a 1 GiB layer at 1 MB/s), and a stalled one fails within
// about a minute, computed from the defaults (no minute-long test).
func TestDefaultTimeoutsSane(t *testing.T) {
	to := puller.DefaultTimeouts()
	policy := pullkit.DefaultRetryPolicy()

	// 1 GiB at 1 MB/s: 1 MB every second, so never Idle, and each RateWindow carries
	// far more than MinRate asks; nothing bounds the whole transfer.
	const rate = 1_000_000 // bytes per second
	if to.Idle < time.Second {
		t.Errorf("Idle %v: a body at 1 MB/s sends a packet every few ms, but a pause of a second must pass", to.Idle)
	}
	if to.MinRate > rate/10 {
		t.Errorf("MinRate %d B/s is too close to a slow link's 1 MB/s", to.MinRate)
	}
	if need := time.Duration(float64(1<<30) / rate * float64(time.Second)); need < 17*time.Minute {
		t.Fatalf("control: 1 GiB at 1 MB/s takes %v", need)
	}

	// A stalled registry: every attempt stops at one phase, the longest one allowed,
	// and the retry policy's attempts follow each other after its waits.
	worst := max(to.Connect, to.TLSHandshake, to.ResponseHeader, to.Idle, to.RateWindow)
	var waits time.Duration
	for a := 1; a < policy.Attempts; a++ {
		waits += min(policy.Backoff<<(a-1), policy.MaxBackoff)
	}
	total := time.Duration(policy.Attempts)*worst + waits
	t.Logf("defaults %+v, %d attempts: a stalled registry fails within %v", to, policy.Attempts, total)
	if total > 75*time.Second {
		t.Errorf("a stalled registry fails only after %v with the defaults, want about a minute", total)
	}
	// A body trickling 1 byte every 5 s: never Idle, but under MinRate in every
	// RateWindow; each attempt ends after RateWindow, and one that received so little
	// counts as no progress.
	if to.Idle <= 5*time.Second {
		t.Fatalf("control: Idle %v would catch the trickle first", to.Idle)
	}
	if got := int64(to.RateWindow/(5*time.Second)) + 1; got >= to.MinRate*int64(to.RateWindow/time.Second) {
		t.Errorf("a trickle of 1 byte per 5 s passes MinRate %d over %v", to.MinRate, to.RateWindow)
	}
	if total := time.Duration(policy.Attempts)*to.RateWindow + waits; total > 75*time.Second {
		t.Errorf("a trickle of 1 byte per 5 s fails only after %v", total)
	}
}

// Row: "A blob body trickling 1 byte every 5 s never trips the stall watchdog": scaled
// down (1 byte every 250 ms against a minimum of 1 KiB/s over 1 s), it fails with a
// *puller.StallError within the retry policy; a slow but honest body passes.
func TestHostileTrickle(t *testing.T) {
	reg := newHostileReg(t)
	slow := reg.layer(make([]byte, 64<<10))
	reg.image("trickle", "v1", hostileConfig("linux", "amd64", slow.Digest), slow)
	reg.handle("/v2/trickle/blobs/"+slow.Digest.String(), trickle(slow.Size, 250*time.Millisecond))

	honestData := make([]byte, 384<<10)
	for i := range honestData {
		honestData[i] = byte(i * 7)
	}
	honest := reg.layer(honestData)
	reg.image("honest", "v1", hostileConfig("linux", "amd64", honest.Digest), honest)
	reg.handle("/v2/honest/blobs/"+honest.Digest.String(), func(w http.ResponseWriter, r *http.Request) {
		// About 192 KiB/s, in 8 KiB pieces: slow, above the minimum below.
		w.Header().Set("Content-Length", fmt.Sprint(len(honestData)))
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for b := honestData; len(b) > 0; b = b[min(len(b), 8<<10):] {
			if _, err := w.Write(b[:min(len(b), 8<<10)]); err != nil {
				return
			}
			_ = rc.Flush()
			time.Sleep(40 * time.Millisecond)
		}
	})

	to := shortTimeouts()
	to.Idle, to.MinRate, to.RateWindow = time.Second, 16<<10, time.Second
	c := newFaultClient(t, puller.WithTimeouts(to), puller.WithRetry(quickRetry(4)))

	t.Run("1 byte every 250 ms: under the minimum rate, a StallError", func(t *testing.T) {
		o := hostilePull(t, c, reg.ref("trickle:v1"))
		msg := o.failed(t, reg.ref("trickle:v1"), []error{pullkit.ErrUnreachable}, slow.Digest.String(), "minimum")
		var se *puller.StallError
		if !errors.As(o.err, &se) {
			t.Errorf("error %q is not a *puller.StallError", msg)
		}
		if n := reg.count("/blobs/" + slow.Digest.String()); n != 4 {
			t.Errorf("%d requests for the layer, want the policy's 4 (a few bytes each are no progress)", n)
		}
	})
	t.Run("slow but honest: verified", func(t *testing.T) {
		hostilePull(t, c, reg.ref("honest:v1")).verified(t)
	})
}

// Row: "429 with Retry-After: 86400 on every request: six silent 60 s waits before the
// error": it fails at once with a *pullkit.HTTPError carrying RetryAfter; a wait within
// the policy is reported as EventWaiting, then the pull goes on.
func TestHostileRetryAfter(t *testing.T) {
	t.Run("Retry-After: 86400 on every request: fails at once, carrying it", func(t *testing.T) {
		reg := newHostileReg(t)
		reg.image("r", "v1", hostileConfig("linux", "amd64"))
		reg.auth = func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("Retry-After", "86400")
			writeRegistryError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "slow down")
			return false
		}
		c := newFaultClient(t, puller.WithRetry(pullkit.DefaultRetryPolicy()))
		o := hostilePull(t, c, reg.ref("r:v1"))
		o.failed(t, reg.ref("r:v1"), []error{pullkit.ErrTooManyRequests}, "Retry-After 24h0m0s")
		var he *pullkit.HTTPError
		if !errors.As(o.err, &he) || he.RetryAfter != 24*time.Hour {
			t.Errorf("error %v: want a *pullkit.HTTPError with RetryAfter 24h", o.err)
		}
		if n := len(reg.requests()); n != 1 {
			t.Errorf("%d requests, want 1: a wait longer than the policy allows is not made", n)
		}
		if w := o.ev.of(pullkit.EventWaiting, ""); len(w) != 0 {
			t.Errorf("waiting events %+v, want none", w)
		}
		if o.took > 30*time.Second {
			t.Errorf("took %v", o.took)
		}
	})
	t.Run("Retry-After: 1 on the manifest, once: a wait shown, then verified", func(t *testing.T) {
		reg := newHostileReg(t)
		data := []byte("layer")
		l := reg.layer(data)
		reg.image("r", "v1", hostileConfig("linux", "amd64", digest.FromBytes(data)), l)
		var once bool
		reg.auth = func(w http.ResponseWriter, r *http.Request) bool {
			if once || !strings.Contains(r.URL.Path, "/manifests/") {
				return true
			}
			once = true
			w.Header().Set("Retry-After", "1")
			writeRegistryError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "slow down")
			return false
		}
		c := newFaultClient(t, puller.WithRetry(pullkit.DefaultRetryPolicy()))
		o := hostilePull(t, c, reg.ref("r:v1"))
		o.verified(t)
		w := o.ev.of(pullkit.EventWaiting, "")
		if len(w) != 1 || w[0].Wait != time.Second || !strings.Contains(w[0].What, "manifest") || !errors.Is(w[0].Err, pullkit.ErrTooManyRequests) {
			t.Errorf("waiting events %+v, want one of 1s for the manifest, its cause a 429", w)
		}
	})
}
