package puller_test

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pullkit/pullkit/puller"
	"github.com/pullkit/pullkit/pullkittest"
	"github.com/pullkit/pullkit/store"
)

// silentListener accepts connections and never answers; it counts them.
func silentListener(t testing.TB) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), &n
}

// closedPort is a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// deadMirrorSetup is a registry with an image of layers layers, and a hosts directory
// naming mirror, pull-only, in front of it: the registry resolves the tag, and every
// blob is asked of the mirror first.
func deadMirrorSetup(t testing.TB, mirror string, layers int) (ref string, hostsDir string, reg *pullkittest.Registry) {
	t.Helper()
	reg = pullkittest.NewRegistry(t)
	reg.PushImage("team/app", "v1", pullkittest.Schema2, pullkittest.Layers(layers, 4<<10))
	dir := t.TempDir()
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\"]\n", reg.Host(), mirror)
	writeFileTB(t, filepath.Join(dir, reg.Host()), "hosts.toml", []byte(toml))
	return reg.Ref("team/app:v1"), dir, reg
}

// TestDeadMirrorOncePerPull: a pull-only mirror that accepts connections and never
// answers, in front of a working registry, costs one deadline per pull, not one per
// blob: the pull succeeds, and the mirror was asked at most once per request the pull
// had started before the first deadline passed (the config and the layers go out at
// once), never again after. With MirrorTimeouts.Remember, later pulls skip it
// altogether. The deadline is a knob (WithMirrorTimeouts); the verdict does not depend
// on it.
func TestDeadMirrorOncePerPull(t *testing.T) {
	const layers = 6
	for _, remember := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprintf("remember %v", remember), func(t *testing.T) {
			mirror, accepted := silentListener(t)
			ref, dir, reg := deadMirrorSetup(t, mirror, layers)
			c := newClient(t, puller.WithHostsDir(dir), puller.WithMirrorTimeouts(puller.MirrorTimeouts{Connect: 200 * time.Millisecond, FirstByte: 200 * time.Millisecond, Remember: remember}))
			for i := 0; i < 2; i++ {
				before := accepted.Load()
				hostilePull(t, c, ref).verified(t)
				got := accepted.Load() - before
				lo, hi := int64(1), int64(layers+1)
				if i == 1 && remember > 0 {
					lo, hi = 0, 0 // remembered dead: not asked
				}
				if got < lo || got > hi {
					t.Errorf("pull %d: the dead mirror got %d connections, want %d to %d", i+1, got, lo, hi)
				}
			}
			// Every blob came from the registry.
			if n := reg.Count(pullkittest.Match{Method: "GET", Route: pullkittest.RouteBlob}); n < layers+1 {
				t.Errorf("the registry served %d blob requests, want at least %d", n, layers+1)
			}
		})
	}
}

// BenchmarkDeadMirror times a pull through a dead mirror in front of a working
// registry, with the default mirror deadlines: a closed port (refused at once), and a
// listener that accepts and never answers, skipped by later pulls for
// MirrorTimeouts.Remember (the default) or found dead again by each pull (Remember 0: one
// FirstByte deadline per pull). Run: go test -run '^$' -bench DeadMirror ./puller
func BenchmarkDeadMirror(b *testing.B) {
	for _, kind := range []string{"no mirror", "closed port", "silent listener", "silent listener per pull"} {
		b.Run(strings.ReplaceAll(kind, " ", "-"), func(b *testing.B) {
			var mirror string
			if strings.HasPrefix(kind, "silent") {
				mirror, _ = silentListener(b)
			} else {
				mirror = closedPort(b)
			}
			ref, dir, _ := deadMirrorSetup(b, mirror, 8)
			opts := []puller.Option{puller.WithKeychain(anonymous)}
			if kind != "no mirror" {
				opts = append(opts, puller.WithHostsDir(dir))
			}
			if kind == "silent listener per pull" {
				mt := puller.DefaultMirrorTimeouts()
				mt.Remember = 0
				opts = append(opts, puller.WithMirrorTimeouts(mt))
			}
			c, err := puller.New(opts...)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := c.Pull(b.Context(), ref, store.NewMemory()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestBlobContinuesOnNextEndpoint: a blob whose body breaks mid-way on a mirror continues
// on the next endpoint with a Range from the byte it reached, and the mirror is not
// asked for it again.
func TestBlobContinuesOnNextEndpoint(t *testing.T) {
	origin := pullkittest.NewRegistry(t)
	mirror := pullkittest.NewRegistry(t)
	var layer pullkittest.Layer
	for _, r := range []*pullkittest.Registry{origin, mirror} {
		img := r.PushImage("team/app", "v1", pullkittest.Schema2, pullkittest.Layers(1, 1<<20), pullkittest.Seed(7))
		layer = img.Layers[0]
	}
	mirror.Inject(&pullkittest.Rule{Match: pullkittest.Match{Method: "GET", Route: pullkittest.RouteBlob, Ref: layer.Digest.String()}, Fault: pullkittest.TruncateAfter(100 << 10)})
	c := newClient(t, puller.WithMirrors(origin.Host(), mirror.Host()))
	hostilePull(t, c, origin.Ref("team/app:v1")).verified(t)
	var ranges []string
	for _, r := range origin.Requests() {
		if r.Route == pullkittest.RouteBlob && r.Ref == layer.Digest.String() {
			ranges = append(ranges, r.Range)
		}
	}
	if len(ranges) == 0 || ranges[0] != fmt.Sprintf("bytes=%d-", 100<<10) {
		t.Errorf("the registry got %q for the layer, want first a continuation bytes=%d-", ranges, 100<<10)
	}
	if n := mirror.Count(pullkittest.Match{Method: "GET", Route: pullkittest.RouteBlob, Ref: layer.Digest.String()}); n != 1 {
		t.Errorf("the mirror was asked %d times for the layer, want once (then found dead)", n)
	}
}
