package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit/pullkittest"
)

// openPTY opens a pseudo-terminal of cols x rows: the master side, which the test reads
// as a terminal would, and the slave side, which the program writes to as its terminal.
func openPTY(t *testing.T, cols, rows int) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	setPTYSize(t, m, cols, rows)
	return m, s
}

func setPTYSize(t *testing.T, m *os.File, cols, rows int) {
	t.Helper()
	if err := unix.IoctlSetWinsize(int(m.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: uint16(cols), Row: uint16(rows)}); err != nil {
		t.Fatal(err)
	}
}

// ptyReader copies what the program writes on the terminal into a byte log, until the
// slave side is closed by everyone.
type ptyReader struct {
	mu   sync.Mutex
	raw  bytes.Buffer
	done chan struct{}
}

func readPTY(m *os.File) *ptyReader {
	r := &ptyReader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 32<<10)
		for {
			n, err := m.Read(buf)
			r.mu.Lock()
			r.raw.Write(buf[:n])
			r.mu.Unlock()
			if err != nil { // EIO once no process holds the slave side
				return
			}
		}
	}()
	return r
}

func (r *ptyReader) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.raw.Bytes()...)
}

// waitFor waits until the log holds n frame ends (the display's erase-below), or fails
// after a bound that only catches a hang.
func (r *ptyReader) waitFor(t *testing.T, n int) []byte {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if b := r.bytes(); bytes.Count(b, []byte("\x1b[J")) >= n {
			return b
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("the display drew fewer than %d frames: %q", n, r.bytes())
	return nil
}

// TestProgressOnTerminal pulls an image of 40 layers with stderr on a pseudo-terminal of
// 60 x 24 and of 200 x 50 (the size the program reads with TIOCGWINSZ), below a screen
// full of earlier output, and replays what it drew: no line wraps, the header is once in
// the scrollback and on the screen, and the frame at the bottom of the final screen is
// the whole pull (40 layers and the config verified, with the elapsed time), summed up
// where the rows are too few.
func TestProgressOnTerminal(t *testing.T) {
	reg := pullkittest.NewRegistry(t)
	reg.PushImage("many/layers", "v1", pullkittest.OCI, pullkittest.Layers(40, 32<<10))
	for _, size := range [][2]int{{60, 24}, {200, 50}} {
		t.Run(fmt.Sprintf("%dx%d", size[0], size[1]), func(t *testing.T) {
			cols, rows := size[0], size[1]
			m, s := openPTY(t, cols, rows)
			r := readPTY(m)
			// What the shell showed before: the display starts on the last row.
			for i := range rows + 5 {
				fmt.Fprintf(s, "earlier output %d\n", i)
			}
			var out bytes.Buffer
			cmd := pullChild(t, &out, s, "--output", filepath.Join(t.TempDir(), "layout"), reg.Ref("many/layers:v1"))
			s.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("pull: %v\n%s", err, out.String())
			}
			select {
			case <-r.done:
			case <-time.After(time.Minute):
				t.Fatal("the terminal was not closed after the pull")
			}
			v := replay(t, r.bytes(), cols, rows)
			if v.wraps != 0 {
				t.Errorf("%d lines wrapped", v.wraps)
			}
			all, screen := v.all(), v.lines()
			for i, l := range screen { // the frame: from the header down
				if headerLine.MatchString(l) {
					screen = screen[i:]
					break
				}
			}
			if n := headers(all); n != 1 {
				t.Errorf("the header is %d times in the scrollback and on the screen, want once:\n%s", n, strings.Join(all, "\n"))
			}
			if len(screen) == 0 || !strings.HasPrefix(screen[0], "41/41 blobs") || !strings.Contains(screen[0], "elapsed") {
				t.Fatalf("final screen:\n%s", strings.Join(screen, "\n"))
			}
			if len(screen) > rows-1 {
				t.Errorf("%d lines on %d rows", len(screen), rows)
			}
			verified := strings.Count(strings.Join(screen, "\n"), "verified")
			if rows >= 43 && (len(screen) != 42 || verified != 41) {
				t.Errorf("want 41 blobs verified, one per line:\n%s", strings.Join(screen, "\n"))
			}
			if rows < 43 && !strings.HasPrefix(screen[len(screen)-1], "... ") {
				t.Errorf("want the blobs that do not fit summed up:\n%s", strings.Join(screen, "\n"))
			}
			if !strings.Contains(out.String(), "written") {
				t.Errorf("stdout %q", out.String())
			}
		})
	}
}

// TestProgressFollowsSIGWINCH draws on a pseudo-terminal of 200 x 50, resizes it to
// 60 x 24 and sends SIGWINCH, as the terminal would: the display redraws at once, at
// the new size, and every frame after fits it.
func TestProgressFollowsSIGWINCH(t *testing.T) {
	m, s := openPTY(t, 200, 50)
	r := readPTY(m)
	p := startProgress(s, 0) // no ticker: every frame is an event's or the signal's
	c := &clock{t: time.Now()}
	p.now, p.interval = c.now, 0
	frames := 0
	sync := func() []byte {
		p.mu.Lock()
		frames = p.frames
		p.mu.Unlock()
		return r.waitFor(t, frames)
	}
	var before []byte
	pullEvents(p, c, 40, 16, 3<<20, func() {
		before = sync()
		setPTYSize(t, m, 60, 24)
		if err := syscall.Kill(os.Getpid(), syscall.SIGWINCH); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, frames+1) // the redraw the signal caused, before any other event
	})
	p.finish()
	after := sync()
	v := replay(t, before, 200, 50)
	if v.wraps != 0 || len(v.lines()) != 42 {
		t.Fatalf("before the resize: %d wraps, %d lines", v.wraps, len(v.lines()))
	}
	v.resize(60, 24)
	v.Write(after[len(before):])
	screen := v.lines()
	if v.wraps != 0 || len(v.errs) != 0 {
		t.Errorf("after the resize: %d lines wrapped; %v", v.wraps, v.errs)
	}
	if headers(screen) != 1 || !strings.HasPrefix(screen[0], "41/41 blobs") || len(screen) > 23 {
		t.Errorf("final screen:\n%s", strings.Join(screen, "\n"))
	}
	for _, l := range screen {
		if len(l) > 59 {
			t.Errorf("line of %d columns on 60: %q", len(l), l)
		}
	}
}

// TestNotATerminal: stderr that is a file or /dev/null is not drawn on.
func TestNotATerminal(t *testing.T) {
	_, s := openPTY(t, 80, 24)
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer devnull.Close()
	if !isTerminal(s) || isTerminal(devnull) || isTerminal(os.NewFile(uintptr(0xffff), "closed")) {
		t.Errorf("isTerminal: pty %v, /dev/null %v", isTerminal(s), isTerminal(devnull))
	}
	cols, rows, ok := termSize(s)
	if !ok || cols != 80 || rows != 24 {
		t.Errorf("termSize %d x %d (%v), want 80 x 24", cols, rows, ok)
	}
}
