//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// env is a scratch directory with a root to unpack into and, next to it, a sentinel
// directory that no layer may change.
type env struct {
	base, root, sentinel string
	before               string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	base := t.TempDir()
	e := &env{base: base, root: filepath.Join(base, "root"), sentinel: filepath.Join(base, "sentinel")}
	must(t, os.MkdirAll(filepath.Join(e.sentinel, "dir"), 0o755))
	must(t, os.WriteFile(filepath.Join(e.sentinel, "file"), []byte("secret"), 0o600))
	must(t, os.WriteFile(filepath.Join(e.sentinel, "dir", "inner"), []byte("inner"), 0o644))
	must(t, os.Symlink("file", filepath.Join(e.sentinel, "link")))
	e.before = e.outside(t)
	return e
}

// outside fingerprints everything in base but the root: the sentinel tree and the
// names next to it (so a file created next to the root shows too).
func (e *env) outside(t testing.TB) string {
	t.Helper()
	ents, err := os.ReadDir(e.base)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range ents {
		if d.Name() != "root" {
			names = append(names, d.Name())
		}
	}
	return strings.Join(names, ",") + " " + fingerprint(t, e.sentinel)
}

func (e *env) checkOutside(t testing.TB) {
	t.Helper()
	if got := e.outside(t); got != e.before {
		t.Fatalf("something outside the root changed:\nbefore %s\nafter  %s\nsentinel now:\n%s", e.before, got, formatTree(scan(t, e.sentinel)))
	}
}

// expand replaces $S by the sentinel's absolute path and $B by the base's.
func (e *env) expand(s string) string {
	return strings.NewReplacer("$S", e.sentinel, "$B", e.base).Replace(s)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// want describes an expected path: "d 755", "f 644 content", "l target", "p 644", "c 1:3",
// "h <other path>" (a file that is the same inode as the other path).
func checkTree(t testing.TB, root string, want map[string]string) {
	t.Helper()
	got := scan(t, root)
	delete(got, "/")
	var problems []string
	for p, w := range want {
		n, ok := got[p]
		if !ok {
			problems = append(problems, fmt.Sprintf("%q missing, want %s", p, w))
			continue
		}
		f := strings.SplitN(w, " ", 3)
		switch f[0] {
		case "d", "f", "p":
			typ := map[string]string{"d": "dir", "f": "file", "p": "fifo"}[f[0]]
			mode, _ := strconv.ParseUint(f[1], 8, 32)
			wantMode := os.FileMode(mode & 0o777)
			if mode&0o4000 != 0 {
				wantMode |= os.ModeSetuid
			}
			if mode&0o2000 != 0 {
				wantMode |= os.ModeSetgid
			}
			if mode&0o1000 != 0 {
				wantMode |= os.ModeSticky
			}
			if n.Type != typ || n.Mode != wantMode {
				problems = append(problems, fmt.Sprintf("%q is %v, want %s", p, n, w))
			}
			if f[0] == "f" {
				body := ""
				if len(f) > 2 {
					body = f[2]
				}
				b, err := os.ReadFile(filepath.Join(root, p))
				if err != nil || string(b) != body {
					problems = append(problems, fmt.Sprintf("%q holds %q, want %q", p, b, body))
				}
			}
		case "l":
			if n.Type != "symlink" || n.Link != strings.SplitN(w, " ", 2)[1] {
				problems = append(problems, fmt.Sprintf("%q is %v, want %s", p, n, w))
			}
		case "c":
			if n.Type != "char" || fmt.Sprintf("%d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev)) != f[1] {
				problems = append(problems, fmt.Sprintf("%q is %v, want %s", p, n, w))
			}
		case "h":
			var a, b unix.Stat_t
			if unix.Lstat(filepath.Join(root, p), &a) != nil || unix.Lstat(filepath.Join(root, f[1]), &b) != nil || a.Ino != b.Ino {
				problems = append(problems, fmt.Sprintf("%q is not a hard link of %q", p, f[1]))
			}
		default:
			t.Fatalf("bad want %q", w)
		}
	}
	for p, n := range got {
		if _, ok := want[p]; !ok {
			problems = append(problems, fmt.Sprintf("%q is there (%v), not wanted", p, n))
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		t.Fatalf("tree differs:\n  %s\ngot:\n%s", strings.Join(problems, "\n  "), formatTree(got))
	}
}

// applyAll unpacks layers into e.root and commits; it returns the first error.
func applyAll(t testing.TB, e *env, layers [][]ent, opts ...Option) error {
	t.Helper()
	r, err := NewRootfs(e.root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Abort()
	for i, l := range layers {
		for j := range l {
			l[j].name = e.expand(l[j].name)
			l[j].link = e.expand(l[j].link)
		}
		b := tarOf(t, l...)
		id := digest.FromString(fmt.Sprintf("layer %d", i))
		if _, err := r.Apply(context.Background(), id, diffIDOf(b), bytes.NewReader(b)); err != nil {
			if _, statErr := os.Stat(e.root); statErr == nil {
				t.Errorf("root exists after a failed layer")
			}
			checkError(t, err, id)
			return err
		}
	}
	return r.Commit()
}

// checkError checks the contract of every error: a *pullkit.Error naming the layer, with
// an *EntryError inside, wrapping a sentinel.
func checkError(t testing.TB, err error, layer digest.Digest) {
	t.Helper()
	var pe *pullkit.Error
	if !errors.As(err, &pe) || pe.Digest != layer {
		t.Errorf("error %v: not a *pullkit.Error naming %s", err, layer)
	}
	var ee *EntryError
	if !errors.As(err, &ee) {
		t.Errorf("error %v: no *EntryError", err)
	}
	for _, s := range sentinels {
		if errors.Is(err, s) {
			return
		}
	}
	t.Errorf("error %v wraps no sentinel", err)
}

type treeCase struct {
	name   string
	layers [][]ent
	want   map[string]string // the whole tree but "/", when err is nil
	err    error             // the sentinel wanted
	entry  string            // the entry the error must name
}

// Escapes: each layer tries to reach outside the root one way that has bitten an engine.
var escapeCases = []treeCase{
	{name: "dotdot name", layers: [][]ent{{file("../sentinel/pwned", "x")}},
		want: map[string]string{"/sentinel": "d 755", "/sentinel/pwned": "f 644 x"}},
	{name: "dotdot inside name", layers: [][]ent{{file("a/../../../../sentinel/file", "x")}},
		want: map[string]string{"/sentinel": "d 755", "/sentinel/file": "f 644 x"}},
	{name: "absolute name", layers: [][]ent{{file("$S/file", "x")}},
		want: map[string]string{"$S": "d 755", "$S/file": "f 644 x"}},
	{name: "symlink absolute", layers: [][]ent{{symlink("evil", "$S"), file("evil/file", "x")}},
		want: map[string]string{"/evil": "l $S", "$S": "d 755", "$S/file": "f 644 x"}},
	{name: "symlink relative", layers: [][]ent{{symlink("evil", "../sentinel"), file("evil/file", "x")}},
		want: map[string]string{"/evil": "l ../sentinel", "/sentinel": "d 755", "/sentinel/file": "f 644 x"}},
	{name: "symlink relative deep", layers: [][]ent{{dir("a"), symlink("a/evil", "../../../../../../../..$S"), file("a/evil/file", "x")}},
		want: map[string]string{"/a": "d 755", "/a/evil": "l ../../../../../../../..$S", "$S": "d 755", "$S/file": "f 644 x"}},
	{name: "symlink dotdot chain", layers: [][]ent{{symlink("up", ".."), file("up/up/up/sentinel/file", "x")}},
		want: map[string]string{"/up": "l ..", "/sentinel": "d 755", "/sentinel/file": "f 644 x"}},
	{name: "symlink from an earlier layer", layers: [][]ent{{symlink("evil", "../sentinel")}, {file("evil/file", "x")}},
		want: map[string]string{"/evil": "l ../sentinel", "/sentinel": "d 755", "/sentinel/file": "f 644 x"}},
	{name: "directory swapped for a symlink between layers", layers: [][]ent{
		{dir("d"), file("d/f", "1")},
		{symlink("d", "$S")},
		{file("d/file", "x"), dir("d/dir").withMode(0o777)},
	}, want: map[string]string{"/d": "l $S", "$S": "d 755", "$S/file": "f 644 x", "$S/dir": "d 777"}},
	{name: "symlink swapped in the same layer", layers: [][]ent{{dir("d"), file("d/a", "1"), symlink("d", "../sentinel"), file("d/file", "x")}},
		want: map[string]string{"/d": "l ../sentinel", "/sentinel": "d 755", "/sentinel/file": "f 644 x"}},
	{name: "hardlink to outside", layers: [][]ent{{hardlink("h", "../sentinel/file")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink to outside, absolute", layers: [][]ent{{hardlink("h", "$S/file")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink through a symlink to outside", layers: [][]ent{{symlink("evil", "$S"), hardlink("h", "evil/file")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink through a relative symlink to outside", layers: [][]ent{{symlink("evil", "../sentinel"), hardlink("h", "evil/file")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink to a symlink leaving the root", layers: [][]ent{{symlink("s", "../sentinel/file"), hardlink("h", "s")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink to a symlink leaving the root from a subdirectory", layers: [][]ent{{dir("a"), symlink("a/s", "../../../sentinel/file")}, {hardlink("h", "a/s")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "hardlink to an absolute symlink is a symlink", layers: [][]ent{{symlink("s", "$S/file"), hardlink("h", "s")}},
		want: map[string]string{"/s": "l $S/file", "/h": "l $S/file"}},
	{name: "hardlink to a directory", layers: [][]ent{{dir("d"), hardlink("h", "d")}},
		err: pullkit.ErrInvalid, entry: "h"},
	{name: "whiteout through a symlink", layers: [][]ent{{symlink("evil", "$B")}, {whiteout("evil/sentinel"), opaque("evil")}},
		want: map[string]string{"/evil": "l $B"}},
	{name: "whiteout of dotdot", layers: [][]ent{{dir("d")}, {ent{name: "d/.wh..", typ: tar.TypeReg}}},
		err: pullkit.ErrInvalid, entry: "d/.wh.."},
	{name: "whiteout of nothing", layers: [][]ent{{dir("d")}, {ent{name: "d/.wh.", typ: tar.TypeReg}}},
		err: pullkit.ErrInvalid, entry: "d/.wh."},
	{name: "whiteout above the root", layers: [][]ent{{file("a", "1")}, {whiteout("../sentinel"), whiteout("../../sentinel/file"), opaque("..")}},
		want: map[string]string{}},
	{name: "opaque through a symlink to the parent", layers: [][]ent{{symlink("up", ".."), file("keep", "1")}, {opaque("up")}},
		want: map[string]string{}},
	{name: "chmod through a symlink", layers: [][]ent{{symlink("s", "../sentinel/file")}, {file("s", "new").withMode(0o777)}},
		want: map[string]string{"/s": "f 777 new"}},
	{name: "chmod through an absolute symlink to a directory", layers: [][]ent{{symlink("s", "$S")}, {dir("s").withMode(0o777)}},
		want: map[string]string{"/s": "d 777"}},
	{name: "chown through a symlink", layers: [][]ent{{symlink("s", "../sentinel/file")}, {ent{name: "s", typ: tar.TypeFifo, mode: 0o600, uid: 1234, gid: 1234}}},
		want: map[string]string{"/s": "p 600"}},
	{name: "root replaced by a symlink", layers: [][]ent{{symlink(".", "../sentinel")}},
		err: pullkit.ErrInvalid, entry: "."},
	{name: "root replaced by a symlink, absolute name", layers: [][]ent{{symlink("/", "$S")}},
		err: pullkit.ErrInvalid, entry: "/"},
	{name: "symlink loop", layers: [][]ent{{symlink("a", "b"), symlink("b", "a"), file("a/x", "1")}},
		err: pullkit.ErrInvalid, entry: "a/x"},
	{name: "file where a directory is needed", layers: [][]ent{{file("f", "1"), file("f/x", "2")}},
		err: pullkit.ErrInvalid, entry: "f/x"},
}

// Whiteout and replacement semantics (OCI image spec, "Whiteouts").
var semanticCases = []treeCase{
	{name: "file and its whiteout in one layer", layers: [][]ent{
		{file("f", "old"), file("g", "old")},
		{file("f", "new"), whiteout("f"), whiteout("g"), file("g", "new")},
	}, want: map[string]string{"/f": "f 644 new", "/g": "f 644 new"}},
	{name: "whiteout of a lower file", layers: [][]ent{{dir("d"), file("d/a", "1"), file("d/b", "2")}, {whiteout("d/a")}},
		want: map[string]string{"/d": "d 755", "/d/b": "f 644 2"}},
	{name: "whiteout of a lower directory", layers: [][]ent{{dir("d"), dir("d/e"), file("d/e/a", "1")}, {whiteout("d/e")}},
		want: map[string]string{"/d": "d 755"}},
	{name: "whiteout of a directory the layer refills", layers: [][]ent{{dir("d"), file("d/a", "1")}, {whiteout("d"), file("d/b", "2")}},
		want: map[string]string{"/d": "d 755", "/d/b": "f 644 2"}},
	{name: "whiteout of a missing file", layers: [][]ent{{file("a", "1")}, {whiteout("nope"), whiteout("no/such/dir")}},
		want: map[string]string{"/a": "f 644 1"}},
	{name: "opaque directory then new files", layers: [][]ent{
		{dir("d"), file("d/a", "1"), dir("d/sub"), file("d/sub/b", "2")},
		{dir("d"), opaque("d"), file("d/c", "3")},
	}, want: map[string]string{"/d": "d 755", "/d/c": "f 644 3"}},
	{name: "new files then opaque directory", layers: [][]ent{
		{dir("d"), file("d/a", "1"), dir("d/sub"), file("d/sub/b", "2")},
		{dir("d"), file("d/c", "3"), dir("d/sub"), file("d/sub/n", "4"), opaque("d")},
	}, want: map[string]string{"/d": "d 755", "/d/c": "f 644 3", "/d/sub": "d 755", "/d/sub/n": "f 644 4"}},
	{name: "opaque directory of a missing directory", layers: [][]ent{{file("a", "1")}, {opaque("d")}},
		want: map[string]string{"/a": "f 644 1"}},
	{name: "whiteout of a hardlink target", layers: [][]ent{{file("f", "data"), hardlink("h", "f")}, {whiteout("f")}},
		want: map[string]string{"/h": "f 644 data"}},
	{name: "hardlink to a lower layer", layers: [][]ent{{file("f", "data")}, {hardlink("h", "f")}},
		want: map[string]string{"/f": "f 644 data", "/h": "h /f"}},
	{name: "hardlink to a lower layer through a symlinked directory", layers: [][]ent{{dir("usr"), dir("usr/lib"), file("usr/lib/a", "data"), symlink("lib", "usr/lib")}, {hardlink("b", "lib/a")}},
		want: map[string]string{"/usr": "d 755", "/usr/lib": "d 755", "/usr/lib/a": "f 644 data", "/lib": "l usr/lib", "/b": "h /usr/lib/a"}},
	{name: "hardlink replaces its own name", layers: [][]ent{{file("f", "data"), hardlink("f", "f")}},
		want: map[string]string{"/f": "f 644 data"}},
	{name: "directory replaced by a file and back", layers: [][]ent{
		{dir("d"), file("d/x", "1")},
		{file("d", "file")},
		{dir("d").withMode(0o700), file("d/y", "2")},
	}, want: map[string]string{"/d": "d 700", "/d/y": "f 644 2"}},
	{name: "directory replaced by a file and back with whiteouts", layers: [][]ent{
		{dir("d"), file("d/x", "1")},
		{whiteout("d"), file("d", "file")},
		{whiteout("d"), dir("d"), file("d/y", "2")},
	}, want: map[string]string{"/d": "d 755", "/d/y": "f 644 2"}},
	{name: "file replaced by a symlink and a symlink by a directory", layers: [][]ent{
		{file("a", "1"), symlink("b", "a")},
		{symlink("a", "b"), dir("b")},
	}, want: map[string]string{"/a": "l b", "/b": "d 755"}},
	{name: "directories merge", layers: [][]ent{{dir("d"), file("d/a", "1")}, {dir("d").withMode(0o750), file("d/b", "2")}},
		want: map[string]string{"/d": "d 750", "/d/a": "f 644 1", "/d/b": "f 644 2"}},
	{name: "implicit parents", layers: [][]ent{{file("x/y/z", "1")}},
		want: map[string]string{"/x": "d 755", "/x/y": "d 755", "/x/y/z": "f 644 1"}},
	{name: "write through a lower symlink to a directory", layers: [][]ent{
		{dir("usr"), dir("usr/lib"), symlink("lib", "/usr/lib")},
		{file("lib/x.so", "elf")},
	}, want: map[string]string{"/usr": "d 755", "/usr/lib": "d 755", "/usr/lib/x.so": "f 644 elf", "/lib": "l /usr/lib"}},
	{name: "write through a dangling absolute symlink", layers: [][]ent{{symlink("lib", "/usr/lib")}, {file("lib/x.so", "elf")}},
		want: map[string]string{"/usr": "d 755", "/usr/lib": "d 755", "/usr/lib/x.so": "f 644 elf", "/lib": "l /usr/lib"}},
	{name: "whiteout through a lower symlink", layers: [][]ent{
		{dir("usr"), dir("usr/lib"), file("usr/lib/a", "1"), file("usr/lib/b", "2"), symlink("lib", "usr/lib")},
		{whiteout("lib/a")},
	}, want: map[string]string{"/usr": "d 755", "/usr/lib": "d 755", "/usr/lib/b": "f 644 2", "/lib": "l usr/lib"}},
	{name: "modes", layers: [][]ent{{
		file("suid", "x").withMode(0o4755), file("sgid", "x").withMode(0o2755), dir("tmp").withMode(0o1777),
		file("none", "x").withMode(0), dir("closed").withMode(0o500), file("closed/f", "x").withMode(0o400),
	}}, want: map[string]string{"/suid": "f 4755 x", "/sgid": "f 2755 x", "/tmp": "d 1777", "/none": "f 0 x", "/closed": "d 500", "/closed/f": "f 400 x"}},
	{name: "reserved whiteout names are ignored", layers: [][]ent{{file("a", "1")}, {dir(".wh..wh.plnk"), file(".wh..wh.plnk/1.2", "x")}},
		want: map[string]string{"/a": "f 644 1"}},
	{name: "empty layer", layers: [][]ent{{}, {file("a", "1")}, {}},
		want: map[string]string{"/a": "f 644 1"}},
}

func TestRootfsEscapes(t *testing.T)   { runTreeCases(t, escapeCases) }
func TestRootfsSemantics(t *testing.T) { runTreeCases(t, semanticCases) }

func runTreeCases(t *testing.T, cases []treeCase) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			layers := make([][]ent, len(c.layers))
			for i := range c.layers {
				layers[i] = append([]ent(nil), c.layers[i]...)
			}
			err := applyAll(t, e, layers)
			e.checkOutside(t)
			if c.err != nil {
				if !errors.Is(err, c.err) {
					t.Fatalf("error %v, want one wrapping %v", err, c.err)
				}
				var ee *EntryError
				if !errors.As(err, &ee) || ee.Entry != e.expand(c.entry) {
					t.Fatalf("error %v does not name entry %q", err, c.entry)
				}
				if _, err := os.Lstat(e.root); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("root exists after an error")
				}
				if ents, _ := os.ReadDir(e.base); len(ents) != 1 {
					t.Fatalf("temporary tree left after Abort: %v", ents)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("apply: %v", err)
			}
			want := map[string]string{}
			for p, w := range c.want {
				want[e.expand(p)] = e.expand(w)
			}
			// The intermediate directories of $S inside the root come with it.
			for p := range want {
				for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
					if _, ok := want[d]; !ok {
						want[d] = "d 755"
					}
				}
			}
			checkTree(t, e.root, want)
		})
	}
}
