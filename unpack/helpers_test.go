//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ent is a tar entry for a crafted layer.
type ent struct {
	name   string
	typ    byte
	body   string
	link   string
	mode   int64
	uid    int
	gid    int
	major  int64
	minor  int64
	mtime  time.Time
	xattrs map[string]string
}

var testTime = time.Date(2020, 2, 2, 2, 2, 2, 0, time.UTC)

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, to string) ent {
	return ent{name: name, typ: tar.TypeSymlink, link: to, mode: 0o777}
}
func hardlink(name, to string) ent { return ent{name: name, typ: tar.TypeLink, link: to} }
func whiteout(name string) ent {
	d, b := filepath.Split(name)
	return ent{name: d + ".wh." + b, typ: tar.TypeReg, mode: 0o644}
}
func opaque(dir string) ent { return ent{name: dir + "/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644} }

func (e ent) withMode(m int64) ent       { e.mode = m; return e }
func (e ent) withOwner(uid, gid int) ent { e.uid, e.gid = uid, gid; return e }
func (e ent) withTime(t time.Time) ent   { e.mtime = t; return e }
func (e ent) withXattr(k, v string) ent {
	x := map[string]string{}
	for a, b := range e.xattrs {
		x[a] = b
	}
	x[k] = v
	e.xattrs = x
	return e
}

// tarOf builds an uncompressed layer.
func tarOf(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: e.mtime, Format: tar.FormatPAX,
		}
		if h.ModTime.IsZero() {
			h.ModTime = testTime
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if e.typ == tar.TypeXGlobalHeader {
			h = &tar.Header{Typeflag: e.typ, Name: e.name, PAXRecords: map[string]string{"comment": "global"}}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %q: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func diffIDOf(b []byte) digest.Digest { return digest.FromBytes(b) }

// node is what a scan records of one path.
type node struct {
	Type   string // "dir", "file", "symlink", "fifo", "char", "block", "whiteout"
	Mode   os.FileMode
	Size   int64
	Sum    string // sha256 of a file's content
	Link   string
	UID    int
	GID    int
	Rdev   uint64
	Xattrs string // sorted name=value list, the overlay ones included
	Nlink  uint64
}

func (n node) String() string {
	s := fmt.Sprintf("%s %v", n.Type, n.Mode)
	switch n.Type {
	case "file":
		s += fmt.Sprintf(" size=%d sum=%.12s", n.Size, n.Sum)
	case "symlink":
		s += " -> " + n.Link
	case "char", "block":
		s += fmt.Sprintf(" dev=%d:%d", unix.Major(n.Rdev), unix.Minor(n.Rdev))
	}
	s += fmt.Sprintf(" %d:%d", n.UID, n.GID)
	if n.Xattrs != "" {
		s += " xattrs[" + n.Xattrs + "]"
	}
	return s
}

// scan records every path under root (root itself as "/"), never following links.
func scan(t testing.TB, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		key := "/" + rel
		if rel == "." {
			key = "/"
		}
		out[key] = nodeOf(t, p)
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return out
}

func nodeOf(t testing.TB, p string) node {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	fi, err := os.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	n := node{Mode: fi.Mode() &^ os.ModeType, UID: int(st.Uid), GID: int(st.Gid), Nlink: uint64(st.Nlink)}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		n.Type = "dir"
		n.Nlink = 0 // depends on subdirectories, not on what a tree means
	case unix.S_IFREG:
		n.Type = "file"
		n.Size = st.Size
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		n.Sum = hex.EncodeToString(s[:])
	case unix.S_IFLNK:
		n.Type = "symlink"
		n.Link, _ = os.Readlink(p)
		n.Mode = 0
	case unix.S_IFIFO:
		n.Type = "fifo"
	case unix.S_IFCHR:
		n.Type = "char"
		n.Rdev = st.Rdev
		if st.Rdev == 0 {
			n.Type = "whiteout"
		}
	case unix.S_IFBLK:
		n.Type = "block"
		n.Rdev = st.Rdev
	}
	n.Xattrs = xattrsOf(p)
	return n
}

func xattrsOf(p string) string {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil || sz == 0 {
		return ""
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return ""
	}
	var out []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		v := make([]byte, 256)
		n, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			continue
		}
		out = append(out, name+"="+fmt.Sprintf("%q", v[:n]))
	}
	sort.Strings(out)
	return strings.Join(out, ",")
}

// fingerprint hashes everything under dir: names, types, modes, owners, times,
// contents and link targets, so that any change outside a root shows.
func fingerprint(t testing.TB, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(h, "%q %o %d:%d %d %d.%d %d\n", p, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Nlink)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		case unix.S_IFLNK:
			l, _ := os.Readlink(p)
			io.WriteString(h, l)
		}
		io.WriteString(h, xattrsOf(p))
		return nil
	})
	if err != nil {
		t.Fatalf("fingerprint %s: %v", dir, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// formatTree prints a scan, sorted, for failure messages.
func formatTree(m map[string]node) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %q: %v\n", k, m[k])
	}
	return b.String()
}
