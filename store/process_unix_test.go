//go:build unix

package store

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/manifest"
)

// The tests here run the test binary again as helper processes (TestHelperProcess,
// selected by helperEnv), so that several processes share one layout directory.
const helperEnv = "PULLKIT_STORE_HELPER"

// helperJob is what a helper process is asked to do.
type helperJob struct {
	Mode  string // "pull": store and name Image; "hold": lease Hold, write half of Partial, then wait
	Dir   string
	Image int    // which testImage to pull
	Name  string // the name to give it
	Hold  []digest.Digest
	Seed  uint64 // of the partial blob
	Size  int
}

// testImage returns the blobs of image i: a base layer every image shares (large), a
// small layer every image shares, a large layer of its own, a config, and the manifest,
// which comes last.
func testImage(i int) [][]byte {
	base := randBytes(1, 2<<20+4096)
	small := randBytes(2, 100<<10)
	own := randBytes(uint64(100+i), 3<<19+777)
	config := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","image":%d}`, i))
	var layers []manifest.Descriptor
	for _, l := range [][]byte{base, small, own} {
		layers = append(layers, descOf(manifest.MediaTypeOCILayerGzip, l))
	}
	m, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": manifest.MediaTypeOCIManifest,
		"config": descOf(manifest.MediaTypeOCIConfig, config), "layers": layers})
	return [][]byte{base, small, own, config, m}
}

// startHelper starts a helper process for job; its stdout is returned as a line reader.
func startHelper(t *testing.T, job helperJob) (*exec.Cmd, *bufio.Reader, io.WriteCloser) {
	t.Helper()
	j, _ := json.Marshal(job)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+string(j))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, bufio.NewReader(stdout), stdin
}

// TestHelperProcess is not a test: it is the body of the helper processes.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("run by the multi-process tests")
	}
	var job helperJob
	if err := json.Unmarshal([]byte(spec), &job); err != nil {
		fail(err)
	}
	ctx := context.Background()
	l, err := OpenLayout(job.Dir)
	if err != nil {
		fail(err)
	}
	// Wait for the word to go, so that all helpers start together.
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		fail(err)
	}
	switch job.Mode {
	case "pull":
		helperPull(ctx, l, job)
	case "hold":
		ls, err := l.Lease(ctx)
		if err != nil {
			fail(err)
		}
		if err := ls.Add(ctx, job.Hold...); err != nil {
			fail(err)
		}
		b := randBytes(job.Seed, job.Size)
		w, err := l.Writer(ctx, descOf("", b))
		if err != nil {
			fail(err)
		}
		if err := writeAligned(w, b[:job.Size/2], 1<<20); err != nil {
			fail(err)
		}
		fmt.Println("ready")
		io.Copy(io.Discard, in) // until killed
		// An unreachable *os.File is closed by the runtime, and its lock goes with it.
		runtime.KeepAlive(ls)
		runtime.KeepAlive(w)
	case "holdranges":
		// The first quarter in order, then every other MiB of the rest out of order,
		// then wait to be killed: no Close, the process just ends.
		b := randBytes(job.Seed, job.Size)
		w, err := l.Writer(ctx, descOf("", b))
		if err != nil {
			fail(err)
		}
		if err := writeAligned(w, b[:job.Size/4], 1<<20); err != nil {
			fail(err)
		}
		rw := w.(RangeWriter)
		for off := job.Size/4 + 1<<20; off < job.Size; off += 2 << 20 {
			end := min(off+1<<20, job.Size)
			if _, err := rw.WriteAt(b[off:end], int64(off)); err != nil {
				fail(err)
			}
		}
		fmt.Println("ready")
		io.Copy(io.Discard, in)
		runtime.KeepAlive(w)
	}
	os.Exit(0)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "helper:", err)
	os.Exit(3)
}

// helperPull stores image job.Image the way a pull does (lease first, every blob
// through a writer, the name last) and prints "wrote <digest>" for every blob whose
// bytes it wrote.
func helperPull(ctx context.Context, l *Layout, job helperJob) {
	blobs := testImage(job.Image)
	ls, err := l.Lease(ctx)
	if err != nil {
		fail(err)
	}
	defer ls.Release()
	for _, b := range blobs {
		if err := ls.Add(ctx, digest.FromBytes(b)); err != nil {
			fail(err)
		}
	}
	for _, b := range blobs {
		d := descOf("", b)
		w, err := l.Writer(ctx, d)
		if errors.Is(err, pullkit.ErrAlreadyExists) {
			continue
		}
		if err != nil {
			fail(err)
		}
		if err := writeAligned(w, b, 256<<10); err != nil {
			fail(err)
		}
		if err := w.Commit(ctx, d.Size, d.Digest); err != nil {
			fail(err)
		}
		fmt.Println("wrote", d.Digest)
	}
	m := blobs[len(blobs)-1]
	if err := l.PutImage(ctx, Image{Name: job.Name, Target: descOf(manifest.MediaTypeOCIManifest, m)}); err != nil {
		fail(err)
	}
}

// Several processes pull images that share layers into one directory at once, ten
// times over: every name is listed, every blob hashes to its name, ingest/ is empty,
// and each large blob was written by exactly one process.
func TestProcessesShareOneLayout(t *testing.T) {
	const procs, rounds = 3, 10
	all := map[digest.Digest]int{} // size of every blob of every image
	for i := range procs {
		for _, b := range testImage(i) {
			all[digest.FromBytes(b)] = len(b)
		}
	}
	for round := range rounds {
		dir := t.TempDir()
		var (
			stdins []io.WriteCloser
			cmds   []*exec.Cmd
			outs   []*bufio.Reader
			names  []string
		)
		for i := range procs {
			name := fmt.Sprintf("registry.example/team/img%d:round%d", i, round)
			names = append(names, name)
			cmd, out, in := startHelper(t, helperJob{Mode: "pull", Dir: dir, Image: i, Name: name})
			cmds, outs, stdins = append(cmds, cmd), append(outs, out), append(stdins, in)
		}
		for _, in := range stdins {
			fmt.Fprintln(in, "go")
		}
		wrote := map[digest.Digest]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range procs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					line, err := outs[i].ReadString('\n')
					if d, ok := strings.CutPrefix(strings.TrimSpace(line), "wrote "); ok {
						mu.Lock()
						wrote[digest.Digest(d)]++
						mu.Unlock()
					}
					if err != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		for i, cmd := range cmds {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("round %d: helper %d: %v", round, i, err)
			}
		}
		l, err := OpenLayout(dir)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		if got := imageNamesOf(t, l); !slices.Equal(got, names) {
			t.Fatalf("round %d: Images = %v, want %v", round, got, names)
		}
		res, err := l.Check(testCtx(t), false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Checked != len(all) || len(res.Damaged) != 0 {
			t.Fatalf("round %d: Check = %+v, want %d blobs, none damaged", round, res, len(all))
		}
		if left := entries(t, filepath.Join(dir, IngestDir)); len(left) != 0 {
			t.Fatalf("round %d: ingest/ holds %v", round, left)
		}
		if left := entries(t, filepath.Join(dir, StateDir, leasesDir)); len(left) != 0 {
			t.Fatalf("round %d: leases/ holds %v", round, left)
		}
		for d, size := range all {
			// Blobs under 1 MiB may be written by two processes (see Layout.Writer);
			// larger ones by exactly one.
			if n := wrote[d]; n == 0 || (size >= smallBlob && n != 1) {
				t.Errorf("round %d: blob %s (%d bytes) written %d times", round, d, size, n)
			}
		}
	}
}

// A process that dies while it writes a blob leaves a partial that the next writer
// resumes; while it lives, its writer keeps others out and its lease keeps GC away
// from what it holds. Once it is dead, its lease is stale and GC removes it.
func TestDeadProcessLeavesPartialAndStaleLease(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	held := storeBlob(t, l, randBytes(500, 5000))
	const seed, size = 501, 3<<20 + 100
	b := randBytes(seed, size)
	cmd, out, in := startHelper(t, helperJob{Mode: "hold", Dir: dir, Hold: []digest.Digest{held.Digest}, Seed: seed, Size: size})
	fmt.Fprintln(in, "go")
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	d := descOf("", b)
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = l.Writer(short, d)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Writer while another process writes the blob: %v, want a deadline error", err)
	}
	res, err := l.GC(ctx, WithIngestExpiry(0))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Blobs) != 0 || res.Ingests != 0 || res.Leases != 0 {
		t.Errorf("GC while the helper lives: %+v, want nothing removed", res)
	}
	cmd.Process.Kill()
	cmd.Wait()

	res, err = l.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Leases != 1 || !slices.Equal(res.Blobs, []digest.Digest{held.Digest}) || res.Ingests != 0 {
		t.Errorf("GC after the helper died: %+v, want its stale lease and %s removed, the young partial kept", res, held.Digest)
	}
	w, err := l.Writer(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if w.Offset() != size/2 {
		t.Fatalf("resumed at %d, want %d", w.Offset(), size/2)
	}
	if err := writeAligned(w, b, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, d.Size, d.Digest); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadBlob(ctx, l, d.Digest, size); err != nil || string(got) != string(b) {
		t.Fatalf("resumed blob: %v, or wrong bytes", err)
	}
}

// TestKilledWriterKeepsHeldRanges: a process that wrote a prefix and stretches beyond it
// is killed (SIGKILL, no Close); the next writer of the digest starts with the prefix and
// every stretch, and only the gaps are written to commit the blob.
func TestKilledWriterKeepsHeldRanges(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	const seed, size = 77, 9<<20 + 1234
	b := randBytes(seed, size)
	cmd, out, in := startHelper(t, helperJob{Mode: "holdranges", Dir: dir, Seed: seed, Size: size})
	fmt.Fprintln(in, "go")
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()

	w, err := l.Writer(ctx, descOf("", b))
	if err != nil {
		t.Fatal(err)
	}
	rw := w.(RangeWriter)
	if w.Offset() != size/4 {
		t.Fatalf("resumed at %d, want %d", w.Offset(), size/4)
	}
	var want []Range
	for off := size/4 + 1<<20; off < size; off += 2 << 20 {
		want = append(want, Range{Start: int64(off), End: int64(min(off+1<<20, size))})
	}
	if got := rw.Held(); !slices.Equal(got, want) {
		t.Fatalf("held %v after the kill, want %v", got, want)
	}
	written := 0
	buf := make([]byte, 1<<20)
	for w.Offset() < size {
		if n, err := rw.Absorb(buf); err != nil {
			t.Fatal(err)
		} else if n > 0 {
			continue
		}
		off := int(w.Offset())
		end := size
		if len(rw.Held()) > 0 {
			end = int(rw.Held()[0].Start)
		}
		if _, err := w.Write(b[off:end]); err != nil {
			t.Fatal(err)
		}
		written += end - off
	}
	if err := w.Commit(ctx, size, digest.FromBytes(b)); err != nil {
		t.Fatal(err)
	}
	if held := size - size/4 - written; held < 3<<20 {
		t.Errorf("only %d bytes came from the held stretches", held)
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, IngestDir)); len(entries) != 0 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("ingest/ holds %v after the commit", names)
	}
}
