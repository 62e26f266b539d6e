package layers

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/store"
)

// crashEnv selects TestCrashHelper's body in a child process: the layout directory and
// the seed of the blob.
const crashEnv = "PULLKIT_LAYERS_CRASH"

// crashBlob is the blob of TestResumeAfterCrash, the same in both processes.
func crashBlob(seed int) []byte {
	b := make([]byte, 14<<20+4321)
	for i := range b {
		b[i] = byte(i*7 + seed + i>>10)
	}
	return b
}

// TestCrashHelper is not a test: in a child process it writes a partial the way an
// interrupted split transfer leaves it (a prefix, and stretches beyond it), then the
// process ends without closing anything.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestResumeAfterCrash")
	}
	b := crashBlob(1)
	l, err := store.OpenLayout(dir)
	if err != nil {
		panic(err)
	}
	w, err := l.Writer(context.Background(), desc(b))
	if err != nil {
		panic(err)
	}
	rw := w.(store.RangeWriter)
	w.Write(b[:3<<20])
	rw.WriteAt(b[5<<20:7<<20], 5<<20)
	rw.WriteAt(b[9<<20:10<<20], 9<<20)
	rw.WriteAt(b[13<<20:], 13<<20)
	os.Exit(0) // a crash: no Close, no flush; the kernel releases the lock
}

// TestResumeAfterCrash: a partial with stretches on disk and no process behind it (the
// process ended without closing its writer) is resumed with requests for exactly the
// gaps, the blob verified whole.
func TestResumeAfterCrash(t *testing.T) {
	dir := t.TempDir()
	if _, err := store.OpenLayout(dir); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
	cmd.Env = append(os.Environ(), crashEnv+"="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	b := crashBlob(1)
	l, err := store.OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, judge := range []judgement{judgeNever, judgeAlways} {
		if judge == judgeAlways {
			// Again from the same partial, for the split engine.
			if err := l.Delete(context.Background(), digest.FromBytes(b)); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
			cmd.Env = append(os.Environ(), crashEnv+"="+dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("helper: %v: %s", err, out)
			}
		}
		f := newFetcher(b)
		if _, err := Fetch(context.Background(), f, l, []Blob{{Desc: desc(b)}}, withJudgement(judge)); err != nil {
			t.Fatal(err)
		}
		got, err := store.ReadBlob(context.Background(), l, digest.FromBytes(b), 64<<20)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("judgement %d: after the resume: %v", judge, err)
		}
		gaps := [][2]int64{{3 << 20, 5 << 20}, {7 << 20, 9 << 20}, {10 << 20, 13 << 20}}
		var covered int64
		for _, r := range f.requests() {
			end := r.offset + r.length
			if r.length < 0 {
				end = int64(len(b))
			}
			in := false
			for _, g := range gaps {
				in = in || (r.offset >= g[0] && end <= g[1])
			}
			if !in {
				t.Errorf("judgement %d: request [%d, %d) is not within a gap %v", judge, r.offset, end, gaps)
			}
			covered += end - r.offset
		}
		read, unread := f.sent()
		d := digest.FromBytes(b)
		if covered != 7<<20 || read[d] != 7<<20 || unread[d] != 0 {
			t.Errorf("judgement %d: asked for %d bytes, sent %d (%d thrown away), want the %d of the gaps", judge, covered, read[d], unread[d], 7<<20)
		}
	}
}
