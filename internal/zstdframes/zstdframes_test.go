package zstdframes_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/pullkit/pullkit/internal/zstdframes"
	"github.com/pullkit/pullkit/layers"
	"github.com/pullkit/pullkit/manifest"
)

// serial is the reference: what layers.Decompress (one core) reads, and its error.
func serial(blob []byte) ([]byte, error) {
	rc, kind, err := layers.Decompress(bytes.NewReader(blob))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if kind != manifest.Zstd {
		return nil, errors.New("not zstd")
	}
	return io.ReadAll(rc)
}

func parallel(t testing.TB, blob []byte, cfg zstdframes.Config) ([]byte, zstdframes.Stats, error) {
	t.Helper()
	r, err := zstdframes.NewReader(context.Background(), bytes.NewReader(blob), int64(len(blob)), cfg)
	if err != nil {
		return nil, zstdframes.Stats{}, err
	}
	defer r.Close()
	out, err := io.ReadAll(r)
	return out, r.Stats(), err
}

// pinned makes the decisions the tests depend on: one worker, runs of 64 KiB, frames up
// to 256 KiB decoded whole.
var pinned = zstdframes.Config{Workers: 1, RunSize: 64 << 10, MaxFrame: 256 << 10}

// frameOf is b as one frame that states its size (EncodeAll), with a checksum or not.
func frameOf(t testing.TB, b []byte, checksum bool) []byte {
	e, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(checksum), zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	return e.EncodeAll(b, nil)
}

// streamed is b as one frame written as a stream: no content size.
func streamed(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	e, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 {
		k := min(len(b), 100<<10)
		e.Write(b[:k])
		b = b[k:]
	}
	e.Close()
	return buf.Bytes()
}

func skippable(payload []byte) []byte {
	out := binary.LittleEndian.AppendUint32(nil, 0x184D2A5E)
	out = binary.LittleEndian.AppendUint32(out, uint32(len(payload)))
	return append(out, payload...)
}

// text is compressible data of n bytes, like a layer's files.
func text(n int, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 7))
	words := strings.Fields("the layer of an image holds files and directories that a puller inflates writes and verifies on every core it has")
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rnd.IntN(len(words))])
		if rnd.IntN(9) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

func random(n int, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 9))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// chunked is data cut into frames of every size up to max, each stating its size (as
// zstd:chunked and seekable zstd write small files and chunks).
func chunked(t testing.TB, data []byte, maxChunk int, seed uint64) []byte {
	rnd := rand.New(rand.NewPCG(seed, 3))
	var out []byte
	for len(data) > 0 {
		k := min(len(data), 1+rnd.IntN(maxChunk))
		out = append(out, frameOf(t, data[:k], rnd.IntN(2) == 0)...)
		data = data[k:]
	}
	return out
}

type corpusCase struct {
	name string
	blob []byte
}

func corpus(t testing.TB) []corpusCase {
	tx := text(2<<20, 1)
	rd := random(300<<10, 2)
	big := text(1<<20, 3)
	return []corpusCase{
		{"one frame with its size", frameOf(t, tx, true)},
		{"one streamed frame", streamed(t, tx)},
		{"empty frame", frameOf(t, nil, false)},
		{"many sized frames", chunked(t, tx, 40<<10, 4)},
		{"many sized frames, random data (raw blocks)", chunked(t, rd, 30<<10, 5)},
		{"many streamed frames", func() []byte {
			var out []byte
			for i := 0; i < len(tx); i += 300 << 10 {
				out = append(out, streamed(t, tx[i:min(len(tx), i+300<<10)])...)
			}
			return out
		}()},
		{"mixed, with skippable frames", func() []byte {
			out := frameOf(t, tx[:1000], true)
			out = append(out, skippable([]byte("table of contents"))...)
			out = append(out, chunked(t, tx[1000:500<<10], 20<<10, 6)...)
			out = append(out, streamed(t, tx[500<<10:900<<10])...)
			out = append(out, skippable(nil)...)
			out = append(out, frameOf(t, big, false)...) // larger than MaxFrame: a stream
			out = append(out, chunked(t, tx[900<<10:], 50<<10, 7)...)
			return append(out, skippable([]byte("footer"))...)
		}()},
		{"trailing zeros", append(chunked(t, tx[:200<<10], 30<<10, 8), make([]byte, 9)...)},
		{"trailing garbage after frames", append(chunked(t, tx[:200<<10], 30<<10, 9), "garbage!"...)},
		{"rle", frameOf(t, make([]byte, 1<<20), false)},
		{"rle frames", chunked(t, make([]byte, 1<<20), 100<<10, 10)},
	}
}

func TestParallelEqualsSerial(t *testing.T) {
	for _, c := range corpus(t) {
		t.Run(c.name, func(t *testing.T) {
			want, werr := serial(c.blob)
			for _, cfg := range []zstdframes.Config{{}, pinned, {Workers: 3, RunSize: 1, MaxFrame: 64 << 10}} {
				got, st, err := parallel(t, c.blob, cfg)
				if (err == nil) != (werr == nil) {
					t.Fatalf("%+v: error %v, serial %v (stats %+v)", cfg, err, werr, st)
				}
				if werr == nil && !bytes.Equal(got, want) || werr != nil && !bytes.HasPrefix(want, got) {
					t.Fatalf("%+v: %d bytes, serial %d (stats %+v)", cfg, len(got), len(want), st)
				}
				if werr == nil && st.InRuns+st.Streamed != int64(len(want)) {
					t.Errorf("%+v: stats count %d+%d bytes of %d", cfg, st.InRuns, st.Streamed, len(want))
				}
			}
		})
	}
}

// TestFramesDecodedInRuns checks, with the decisions pinned, which frames are decoded
// whole in runs (whoever decoded them) and which as a stream: what the scanner decides
// from the frames' headers alone.
func TestFramesDecodedInRuns(t *testing.T) {
	tx := text(1<<20, 11)
	var blob []byte
	for i := range 16 { // 16 frames of 64 KiB that state their size: 16 runs
		blob = append(blob, frameOf(t, tx[i<<16:(i+1)<<16], i%2 == 0)...)
	}
	tail := streamed(t, tx[:200<<10])                       // no size: a stream
	blob = append(blob, tail...)                            //
	blob = append(blob, frameOf(t, tx[:100<<10], true)...)  // 100 KiB: a run of its own
	blob = append(blob, frameOf(t, tx[:300<<10], false)...) // over MaxFrame: a stream
	got, st, err := parallel(t, blob, pinned)
	want, _ := serial(blob)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%v: %d bytes, want %d", err, len(got), len(want))
	}
	if st.Runs != 17 || st.Frames != 17 || st.InRuns != 16<<16+100<<10 || st.Streamed != 500<<10 || st.Rest {
		t.Fatalf("stats %+v, want 17 runs of 17 frames, 1.1 MiB in runs, 500 KiB streamed", st)
	}
}

// TestDamageLikeSerial damages a stream of many frames and checks that the parallel
// reader gives a prefix of the serial output, and an error wherever the serial reader
// errs.
func TestDamageLikeSerial(t *testing.T) {
	tx := text(600<<10, 12)
	blob := append(chunked(t, tx[:400<<10], 30<<10, 13), streamed(t, tx[400<<10:])...)
	rnd := rand.New(rand.NewPCG(14, 15))
	for i := 0; i < 60; i++ {
		b := bytes.Clone(blob)
		switch i % 3 {
		case 0:
			b[rnd.IntN(len(b))] ^= byte(1 + rnd.IntN(255))
		case 1:
			b = b[:rnd.IntN(len(b))]
		default:
			at := rnd.IntN(len(b))
			for k := at; k < min(len(b), at+16); k++ {
				b[k] = byte(rnd.Uint32())
			}
		}
		compare(t, b, pinned)
	}
}

func compare(t *testing.T, blob []byte, cfg zstdframes.Config) {
	t.Helper()
	if len(blob) < 4 || manifest.DetectCompression(blob[:4]) != manifest.Zstd {
		return // not for this reader
	}
	want, werr := serial(blob)
	got, _, gerr := parallel(t, blob, cfg)
	switch {
	case werr == nil && gerr != nil:
		t.Fatalf("parallel failed (%v) where serial read %d bytes", gerr, len(want))
	case werr == nil && !bytes.Equal(got, want):
		t.Fatalf("output differs: %d bytes, want %d", len(got), len(want))
	case werr != nil && gerr == nil:
		t.Fatalf("parallel read %d bytes without error where serial failed with %v after %d", len(got), werr, len(want))
	case werr != nil && !bytes.HasPrefix(want, got):
		t.Fatalf("parallel output (%d bytes) is not a prefix of the serial output (%d bytes)", len(got), len(want))
	}
}

var cfgFuzz = zstdframes.Config{Workers: 2, RunSize: 1 << 10, MaxFrame: 4 << 10}

// FuzzParallelZstd compares the parallel reader, with runs and frames small enough that
// small inputs are cut into several, with the serial one on arbitrary bytes: the same
// output when the serial reader succeeds, and otherwise an error and a prefix of its
// output.
func FuzzParallelZstd(f *testing.F) {
	tx := text(20<<10, 16)
	f.Add(chunked(f, tx, 3<<10, 17))
	f.Add(append(append(frameOf(f, tx[:100], false), skippable([]byte("x"))...), chunked(f, tx[:8<<10], 2<<10, 18)...))
	f.Add(append(streamed(f, tx[:6<<10]), frameOf(f, tx[:2<<10], true)...))
	f.Add(chunked(f, random(8<<10, 19), 1<<10, 20))
	f.Add(frameOf(f, make([]byte, 6<<10), false))
	f.Fuzz(func(t *testing.T, blob []byte) {
		compare(t, blob, cfgFuzz)
		compare(t, blob, zstdframes.Config{Workers: 0, RunSize: 1 << 10, MaxFrame: 4 << 10})
	})
}

// TestFuzzSeedsUseRuns checks that the fuzz target's configuration decodes its seeds in
// runs, so that fuzzing exercises them.
func TestFuzzSeedsUseRuns(t *testing.T) {
	_, st, err := parallel(t, chunked(t, text(20<<10, 16), 3<<10, 17), cfgFuzz)
	if err != nil || st.Runs < 2 {
		t.Fatalf("%v %+v", err, st)
	}
}

// gated is a stream that arrives: reads past what has arrived wait for more, as a
// pipeline's spool does.
type gated struct {
	mu      sync.Mutex
	cond    *sync.Cond
	b       []byte
	arrived int
}

func newGated(b []byte) *gated {
	g := &gated{b: b}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gated) arrive(n int) {
	g.mu.Lock()
	g.arrived = min(len(g.b), g.arrived+n)
	g.cond.Broadcast()
	g.mu.Unlock()
}

func (g *gated) ReadAt(p []byte, off int64) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for int(off)+len(p) > g.arrived && g.arrived < len(g.b) {
		g.cond.Wait()
	}
	if int(off) >= len(g.b) {
		return 0, io.EOF
	}
	n := copy(p, g.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// TestStreamsWhileArriving feeds a stream half way and checks that the reader hands out
// what the arrived frames hold without waiting for the rest: a frame decoded as a stream
// follows the scanner's walk of its blocks.
func TestStreamsWhileArriving(t *testing.T) {
	tx := text(2<<20, 21)
	for _, c := range []struct {
		name string
		blob []byte
	}{{"one streamed frame", streamed(t, tx)}, {"sized frames", chunked(t, tx, 100<<10, 22)}} {
		t.Run(c.name, func(t *testing.T) {
			g := newGated(c.blob)
			g.arrive(len(c.blob) / 2)
			r, err := zstdframes.NewReader(context.Background(), g, int64(len(c.blob)), pinned)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got := make([]byte, 200<<10)
			done := make(chan error, 1)
			go func() {
				_, err := io.ReadFull(r, got)
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil || !bytes.Equal(got, tx[:len(got)]) {
					t.Fatalf("first 200 KiB: %v", err)
				}
			case <-time.After(time.Minute): // catches a reader that waits for the whole stream
				g.arrive(len(c.blob))
				t.Fatal("no output a minute after half the stream arrived")
			}
			g.arrive(len(c.blob))
			rest, err := io.ReadAll(r)
			if err != nil || !bytes.Equal(append(got, rest...), tx) {
				t.Fatalf("whole stream: %v, %d bytes", err, len(got)+len(rest))
			}
		})
	}
}

func TestCancel(t *testing.T) {
	blob := chunked(t, text(4<<20, 23), 64<<10, 24)
	ctx, cancel := context.WithCancel(context.Background())
	r, err := zstdframes.NewReader(ctx, bytes.NewReader(blob), int64(len(blob)), pinned)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Read(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("read after cancel: %v", err)
	}
}
