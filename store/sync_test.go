package store

import (
	"os"
	"path/filepath"
	"testing"
)

// A waiter for the lock of a file that its holder renames away (a committed partial)
// does not get the renamed file: it starts over on a new file of the old name.
func TestLockPathRenamedAway(t *testing.T) {
	dir := t.TempDir()
	p, moved := filepath.Join(dir, "x.partial"), filepath.Join(dir, "blob")
	held, err := lockPath(testCtx(t), p, os.O_CREATE, false)
	if err != nil {
		t.Fatal(err)
	}
	held.WriteString("committed content")
	got := make(chan *os.File, 1)
	go func() {
		f, err := lockPath(testCtx(t), p, os.O_CREATE, false)
		if err != nil {
			t.Error(err)
		}
		got <- f
	}()
	// Whether the waiter opened the old file before the rename or the new one after
	// it, it must end up with a lock on what p names.
	if err := os.Rename(p, moved); err != nil {
		t.Fatal(err)
	}
	held.Close()
	f := <-got
	if f == nil {
		return
	}
	defer f.Close()
	if !sameFile(f, p) {
		t.Fatal("the waiter holds a file that is no longer the partial")
	}
	if fi, _ := f.Stat(); fi.Size() != 0 {
		t.Errorf("the waiter's file holds %d bytes, want a new, empty one", fi.Size())
	}
	if b, _ := os.ReadFile(moved); string(b) != "committed content" {
		t.Errorf("renamed file holds %q", b)
	}
}
