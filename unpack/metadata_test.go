//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// capNetBindService is a security.capability value (VFS_CAP_REVISION_2, effective,
// CAP_NET_BIND_SERVICE permitted), as setcap writes it.
func capNetBindService() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000001)
	binary.LittleEndian.PutUint32(b[4:], 1<<10)
	return string(b)
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root")
		}
		t.Skip("needs root")
	}
}

func TestRootfsMetadata(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	t1 := time.Date(2001, 1, 1, 1, 1, 1, 123456789, time.UTC)
	t2 := time.Date(2002, 2, 2, 2, 2, 2, 0, time.UTC)
	t3 := time.Date(2003, 3, 3, 3, 3, 3, 0, time.UTC)
	t4 := time.Date(2004, 4, 4, 4, 4, 4, 0, time.UTC)
	capv := capNetBindService()
	layers := [][]ent{{
		{name: "./", typ: tar.TypeDir, mode: 0o750, uid: 0, gid: 0, mtime: t4},
		dir("d").withMode(0o751).withOwner(3, 4).withTime(t2),
		file("f", "data").withMode(0o640).withOwner(1000, 2000).withTime(t1).
			withXattr("user.test", "1").withXattr("security.capability", capv),
		file("d/c", "child").withTime(t1),
		symlink("s", "f").withOwner(5, 6).withTime(t3),
		{name: "p", typ: tar.TypeFifo, mode: 0o620, uid: 7, gid: 8, mtime: t3},
		{name: "null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3, mtime: t3},
		{name: "loop0", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 0, gid: 6, mtime: t3},
		hardlink("h", "f"),
		dir("keep").withTime(t2),
		file("ovl", "x").withXattr("trusted.overlay.opaque", "y").withXattr("user.overlay.redirect", "/etc"),
	}, {
		file("keep/new", "n"),
	}}
	if err := applyAll(t, e, layers); err != nil {
		t.Fatal(err)
	}
	e.checkOutside(t)
	got := scan(t, e.root)
	check := func(p string, typ string, mode os.FileMode, uid, gid int) node {
		t.Helper()
		n, ok := got[p]
		if !ok {
			t.Fatalf("%s missing", p)
		}
		if n.Type != typ || n.Mode != mode || n.UID != uid || n.GID != gid {
			t.Errorf("%s: %v, want %s %v %d:%d", p, n, typ, mode, uid, gid)
		}
		return n
	}
	check("/", "dir", 0o750, 0, 0)
	check("/d", "dir", 0o751, 3, 4)
	f := check("/f", "file", 0o640, 1000, 2000)
	if !strings.Contains(f.Xattrs, `user.test="1"`) || !strings.Contains(f.Xattrs, "security.capability=") {
		t.Errorf("/f xattrs %s", f.Xattrs)
	}
	if f.Nlink != 2 {
		t.Errorf("/f has %d links, want 2 (h)", f.Nlink)
	}
	check("/s", "symlink", 0, 5, 6)
	check("/p", "fifo", 0o620, 7, 8)
	null := check("/null", "char", 0o666, 0, 0)
	if null.Rdev != unix.Mkdev(1, 3) {
		t.Errorf("/null is %d:%d", unix.Major(null.Rdev), unix.Minor(null.Rdev))
	}
	check("/loop0", "block", 0o660, 0, 6)
	if x := got["/ovl"].Xattrs; x != "" {
		t.Errorf("overlay attributes taken from a layer: %s", x)
	}
	mtimes := map[string]time.Time{"/f": t1, "/d": t2, "/d/c": t1, "/s": t3, "/p": t3, "/null": t3, "/keep": t2, "/": t4}
	for p, want := range mtimes {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(e.root, p), &st))
		if got := time.Unix(st.Mtim.Sec, st.Mtim.Nsec); !got.Equal(want) {
			t.Errorf("%s: mtime %v, want %v", p, got.UTC(), want)
		}
	}
}

func TestRootfsSkipsAndReports(t *testing.T) {
	e := newEnv(t)
	r, err := NewRootfs(e.root)
	must(t, err)
	defer r.Abort()
	b := tarOf(t,
		file("ovl", "x").withXattr("trusted.overlay.opaque", "y"),
		file("label", "x").withXattr("security.selinux", "system_u:object_r:bin_t:s0"),
		dir(".wh..wh.plnk"),
		ent{name: "g", typ: tar.TypeXGlobalHeader},
	)
	res, err := r.Apply(context.Background(), digest.FromBytes(b), "", bytes.NewReader(b))
	must(t, err)
	if res.Entries != 4 || len(res.Skipped) != 3 {
		t.Fatalf("result %+v", res)
	}
	must(t, r.Commit())
	checkTree(t, e.root, map[string]string{"/ovl": "f 644 x", "/label": "f 644 x"})
}

func TestRootfsNames(t *testing.T) {
	e := newEnv(t)
	long := strings.Repeat("n", 255)
	longPath := strings.Repeat("l", 200) + "/" + strings.Repeat("m", 200) + "/" + long
	nonUTF8 := "bad\xff\xfe\x80name"
	layers := [][]ent{{
		file(long, "long"),
		file(longPath, "longpath"),
		file(nonUTF8, "bytes"),
		file("dir\x1b[31m/escape", "esc"),
		symlink("link\xff", nonUTF8),
	}}
	if err := applyAll(t, e, layers); err != nil {
		t.Fatal(err)
	}
	e.checkOutside(t)
	want := map[string]string{
		"/" + long:                     "f 644 long",
		"/" + strings.Repeat("l", 200): "d 755",
		"/" + strings.Repeat("l", 200) + "/" + strings.Repeat("m", 200): "d 755",
		"/" + longPath:        "f 644 longpath",
		"/" + nonUTF8:         "f 644 bytes",
		"/dir\x1b[31m":        "d 755",
		"/dir\x1b[31m/escape": "f 644 esc",
		"/link\xff":           "l " + nonUTF8,
	}
	checkTree(t, e.root, want)

	// A name that no file system takes is an error that names it, escaped.
	e2 := newEnv(t)
	err := applyAll(t, e2, [][]ent{{file(strings.Repeat("x", 256)+"\x1b[2J", "x")}})
	if err == nil || strings.Contains(err.Error(), "\x1b") {
		t.Fatalf("error %q", err)
	}
}

// TestRootfsDeepPath unpacks a path far longer than PATH_MAX, which the kernel takes in no
// single call, and checks it with directory handles.
func TestRootfsDeepPath(t *testing.T) {
	e := newEnv(t)
	var parts []string
	for range 300 {
		parts = append(parts, "component-of-twenty")
	}
	deep := strings.Join(parts, "/")
	layers := [][]ent{
		{file(deep+"/file", "deep"), symlink(deep+"/up", strings.Repeat("../", 400)+"sentinel")},
		{file(deep+"/up/pwned", "x"), whiteout(deep + "/file")},
	}
	if err := applyAll(t, e, layers); err != nil {
		t.Fatal(err)
	}
	e.checkOutside(t)
	fd, err := unix.Open(e.root, unix.O_PATH|unix.O_DIRECTORY, 0)
	must(t, err)
	for _, c := range parts {
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("walking the deep path: %v", err)
		}
		fd = next
	}
	defer unix.Close(fd)
	if _, err := unix.Openat(fd, "file", unix.O_RDONLY|unix.O_NOFOLLOW, 0); err != unix.ENOENT {
		t.Errorf("deep file not whited out: %v", err)
	}
	buf := make([]byte, 4096)
	n, err := unix.Readlinkat(fd, "up", buf)
	if err != nil || string(buf[:n]) != strings.Repeat("../", 400)+"sentinel" {
		t.Errorf("deep symlink: %q %v", buf[:n], err)
	}
	b, err := os.ReadFile(filepath.Join(e.root, "sentinel", "pwned"))
	if err != nil || string(b) != "x" {
		t.Errorf("write through the deep link: %q %v", b, err)
	}

	// Deeper than maxDepth: refused, so that walking a name holds a bounded number of
	// handles.
	e2 := newEnv(t)
	err = applyAll(t, e2, [][]ent{{file(strings.Repeat("a/", maxDepth+1)+"f", "x")}})
	if !errors.Is(err, pullkit.ErrInvalid) {
		t.Fatalf("a name %d levels deep: %v", maxDepth+1, err)
	}
	e2.checkOutside(t)
}

// TestRootfsSparse unpacks a GNU sparse archive (made by GNU tar) and a plain one whose
// file is mostly zeros: the data comes back, and the zero blocks are holes.
func TestRootfsSparse(t *testing.T) {
	tarBin, err := exec.LookPath("tar")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("tar not found")
		}
		t.Skip("tar not found")
	}
	src := t.TempDir()
	big := filepath.Join(src, "sparse")
	f, err := os.Create(big)
	must(t, err)
	_, err = f.WriteAt([]byte("head"), 0)
	must(t, err)
	_, err = f.WriteAt([]byte("middle"), 8<<20)
	must(t, err)
	must(t, f.Truncate(64<<20))
	must(t, f.Close())
	var out bytes.Buffer
	for _, format := range [][]string{{"--format=gnu"}, {"--format=posix", "--sparse-version=0.1"}, {"--format=posix", "--sparse-version=1.0"}} {
		out.Reset()
		cmd := exec.Command(tarBin, append(append([]string{"--sparse"}, format...), "-C", src, "-cf", "-", "sparse")...)
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		if out.Len() > 1<<20 {
			t.Fatalf("%s made a %d-byte archive: not sparse", cmd, out.Len())
		}
		plain := tarOf(t, file("zeros", "a"+string(make([]byte, 3<<20))+"z"))
		for name, layer := range map[string][]byte{"sparse": out.Bytes(), "zeros": plain} {
			e := newEnv(t)
			r, err := NewRootfs(e.root)
			must(t, err)
			if _, err := r.Apply(context.Background(), digest.FromBytes(layer), diffIDOf(layer), bytes.NewReader(layer)); err != nil {
				t.Fatal(err)
			}
			must(t, r.Commit())
			p := filepath.Join(e.root, name)
			var st unix.Stat_t
			must(t, unix.Stat(p, &st))
			data, err := os.ReadFile(p)
			must(t, err)
			switch name {
			case "sparse":
				want, _ := os.ReadFile(big)
				if !bytes.Equal(data, want) {
					t.Fatalf("%s: sparse file content differs", format)
				}
			case "zeros":
				if len(data) != 3<<20+2 || data[0] != 'a' || data[len(data)-1] != 'z' {
					t.Fatalf("zeros file content differs")
				}
			}
			if st.Blocks*512 > 1<<20 {
				t.Errorf("%s (%s): %d bytes on disk for %d: holes not kept", name, format, st.Blocks*512, st.Size)
			}
		}
	}
}

func TestRootfsIDMap(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	m := WithIDMap([]IDMap{{0, 100000, 65536}}, []IDMap{{0, 200000, 1000}, {1000, 300000, 1}})
	layers := [][]ent{{
		file("f", "x").withOwner(1000, 1000), file("implicit/g", "x").withOwner(0, 5),
		symlink("s", "f").withOwner(7, 0), dir("d").withOwner(65535, 999),
	}}
	must(t, applyAll(t, e, layers, m))
	got := scan(t, e.root)
	for p, want := range map[string][2]int{
		"/": {100000, 200000}, "/f": {101000, 300000}, "/implicit": {100000, 200000},
		"/implicit/g": {100000, 200005}, "/s": {100007, 200000}, "/d": {165535, 200999},
	} {
		if n := got[p]; n.UID != want[0] || n.GID != want[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", p, n.UID, n.GID, want[0], want[1])
		}
	}
	e2 := newEnv(t)
	err := applyAll(t, e2, [][]ent{{file("f", "x").withOwner(0, 1001)}}, m)
	if !errors.Is(err, pullkit.ErrInvalid) || !strings.Contains(err.Error(), "gid 1001 has no mapping") {
		t.Fatalf("unmapped gid: %v", err)
	}
}

// TestTimesAndOwnersAcrossEntries covers what the applier does once per directory or
// skips when it can: a directory's times given back after the entries in it (also when
// its own entry comes after them, and when a later layer adds, replaces or whites out
// names in it), and new files that get their owner from the kernel except where a
// set-group-ID directory would give them its group.
func TestTimesAndOwnersAcrossEntries(t *testing.T) {
	requireRoot(t)
	e := newEnv(t)
	t1 := time.Date(2001, 1, 1, 1, 1, 1, 0, time.UTC)
	t2 := time.Date(2002, 2, 2, 2, 2, 2, 0, time.UTC)
	t3 := time.Date(2003, 3, 3, 3, 3, 3, 0, time.UTC)
	layers := [][]ent{{
		file("late/x", "x").withTime(t2),
		file("late/y", "y"),
		dir("late").withTime(t1), // after its children
		dir("a").withTime(t1),
		file("a/x", "old"),
		file("a/y", "y"),
		dir("sg").withMode(0o2755).withOwner(0, 7).withTime(t2),
		file("sg/root", "r"),
		file("sg/seven", "7").withOwner(0, 7),
		dir("sg/sub"),
		dir("s").withTime(t1),
	}, {
		file("a/x", "new"), // over a file of the layer below
		file("a/z", "z"),
		whiteout("a/y"),
		symlink("s/l", "../a/x"),
		dir("a").withTime(t3), // after entries in it
	}}
	if err := applyAll(t, e, layers); err != nil {
		t.Fatal(err)
	}
	e.checkOutside(t)
	checkTree(t, e.root, map[string]string{
		"/late": "d 755", "/late/x": "f 644 x", "/late/y": "f 644 y",
		"/a": "d 755", "/a/x": "f 644 new", "/a/z": "f 644 z",
		"/sg": "d 2755", "/sg/root": "f 644 r", "/sg/seven": "f 644 7", "/sg/sub": "d 755",
		"/s": "d 755", "/s/l": "l ../a/x",
	})
	for p, want := range map[string]time.Time{"/late": t1, "/late/x": t2, "/a": t3, "/sg": t2, "/s": t1} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(e.root, p), &st))
		if got := time.Unix(st.Mtim.Sec, st.Mtim.Nsec); !got.Equal(want) {
			t.Errorf("%s: mtime %v, want %v", p, got.UTC(), want)
		}
	}
	for p, want := range map[string][2]uint32{"/sg/root": {0, 0}, "/sg/seven": {0, 7}, "/sg/sub": {0, 0}, "/a/x": {0, 0}} {
		var st unix.Stat_t
		must(t, unix.Lstat(filepath.Join(e.root, p), &st))
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, want[0], want[1])
		}
	}
}
