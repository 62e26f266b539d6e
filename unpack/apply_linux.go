//go:build linux

package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// Whiteout names, as the OCI image spec defines them.
const (
	whPrefix = ".wh."
	whOpaque = ".wh..wh..opq"
	whMeta   = ".wh..wh." // reserved (aufs's .wh..wh.plnk, .wh..wh.aufs): ignored
)

// form says what a tree is.
type form int

const (
	// flat: layers applied on top of each other; whiteouts remove from lower layers.
	flat form = iota
	// overlay: one layer alone, whiteouts recorded as overlayfs reads them.
	overlay
)

// tree is a directory that layers are applied to, with everything that must outlive
// one layer.
type tree struct {
	path       string   // host path of the directory
	real       string   // the kernel's name for it, to read handles' names against
	fd         *os.File // O_PATH handle of it: the root every name resolves in
	form       form
	xattrNS    string // overlay: "trusted" or "user"
	cfg        *config
	privileged bool // the process is root: ownership as the archive says, no mode in the way
	uid, gid   int  // the process's effective IDs, which new files get

	rootMode uint32 // the mode of the top directory, set when the tree is finished
	// late holds, for an unprivileged process, the modes of directories that would stop
	// it from going through them or adding names: they stay u+rwx until the tree is
	// finished. Only such directories are held, which images have few of.
	late map[string]uint32
}

// openTree opens the (existing, empty) directory p as a tree.
func openTree(p string, f form, cfg *config) (*tree, error) {
	fd, err := os.OpenFile(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fsErr("open", p, err)
	}
	real, err := os.Readlink(procPath(int(fd.Fd()), ""))
	if err != nil {
		real = p
	}
	if len(cfg.uids) > 0 {
		// The top belongs to the image's root, as the directories made for parents do.
		uid, uok := mapID(cfg.uids, 0)
		gid, gok := mapID(cfg.gids, 0)
		if uok && gok {
			if err := unix.Fchownat(int(fd.Fd()), "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
				_ = fd.Close()
				return nil, fsErr("chown", "/", err)
			}
		}
	}
	return &tree{
		path: p, real: real, fd: fd, form: f, cfg: cfg,
		privileged: os.Geteuid() == 0,
		uid:        os.Geteuid(),
		gid:        os.Getegid(),
		rootMode:   0o755,
		late:       map[string]uint32{},
	}, nil
}

func (t *tree) close() {
	if t.fd != nil {
		_ = t.fd.Close()
		t.fd = nil
	}
}

// finish gives the directories left open their modes, deepest first, and the top its.
func (t *tree) finish() error {
	paths := make([]string, 0, len(t.late))
	for p := range t.late {
		paths = append(paths, p)
	}
	sort.Slice(paths, func(i, j int) bool { return strings.Count(paths[i], "/") > strings.Count(paths[j], "/") })
	a := &applier{ctx: context.Background(), t: t, res: &Result{}}
	for _, p := range paths {
		d, err := a.resolve(parentOf(p), false)
		if err != nil {
			continue // removed by a later whiteout
		}
		err = chmodAt(d.fd(), path.Base(p), t.late[p])
		_ = d.f.Close()
		if err != nil && !isNotExist(err) {
			return fsErr("chmod", p, err)
		}
	}
	clear(t.late)
	if err := chmodFd(int(t.fd.Fd()), t.rootMode); err != nil {
		return fsErr("chmod", "/", err)
	}
	return nil
}

// apply applies one layer read from blob.
func (t *tree) apply(ctx context.Context, layer, want digest.Digest, blob io.Reader) (Result, error) {
	var res Result
	if err := ctx.Err(); err != nil {
		return res, layerError(layer, "", err)
	}
	ls, err := openLayer(ctx, blob, want)
	if err != nil {
		return res, layerError(layer, "", err)
	}
	defer ls.Close()
	a := &applier{ctx: ctx, t: t, res: &res, upper: newPathSet(), buf: make([]byte, copyBuffer)}
	defer a.closeCache()
	tr := tar.NewReader(ls)
	data := &timedReader{r: tr}
	var next, entries time.Duration
	prev := ""
	for {
		t0 := time.Now()
		hdr, err := tr.Next()
		t1 := time.Now()
		next += t1.Sub(t0)
		if err == io.EOF {
			break
		}
		if err != nil {
			return res, layerError(layer, "", &EntryError{Entry: prev, after: true, Err: ls.cause(err, "tar")})
		}
		res.Entries++
		prev = hdr.Name
		err = a.entry(hdr, data)
		entries += time.Since(t1)
		if err != nil {
			var re *readError
			if errors.As(err, &re) {
				err = ls.cause(re.err, "tar")
			}
			return res, layerError(layer, hdr.Name, err)
		}
	}
	t0 := time.Now()
	if err := a.flushCache(); err != nil {
		return res, layerError(layer, "", err)
	}
	entries += time.Since(t0)
	diffID, err := ls.finish()
	if err != nil {
		return res, layerError(layer, "", err)
	}
	// ls.stop (in finish) has ended the read-ahead: its figures are ours to read.
	res.Size = ls.size
	res.Stages = pullkit.Stages{
		Inflate: ls.inflate,
		Tar:     max(0, next+data.d-ls.wait),
		Write:   max(0, entries-data.d),
		Wait:    ls.wait,
	}
	res.DiffID = diffID
	return res, nil
}

// timedReader adds up the time spent in its reads (file contents read from the tar
// stream, which the applier's time splits into Tar and Write by).
type timedReader struct {
	r io.Reader
	d time.Duration
}

func (t *timedReader) Read(p []byte) (int, error) {
	t0 := time.Now()
	n, err := t.r.Read(p)
	t.d += time.Since(t0)
	return n, err
}

// copyBuffer is the size of the buffer file data is copied through; holeBlock the size
// of the zero blocks left as holes.
const (
	copyBuffer = 128 << 10
	holeBlock  = 4 << 10
)

var zeroBlock [holeBlock]byte

// readError marks an error of reading the layer (not of writing the tree).
type readError struct{ err error }

func (e *readError) Error() string { return e.err.Error() }
func (e *readError) Unwrap() error { return e.err }

// applier applies the entries of one layer to a tree.
type applier struct {
	ctx   context.Context
	t     *tree
	res   *Result
	upper *pathSet // what this layer wrote: whiteouts spare it
	buf   []byte
	// staged, when merging a staged layer, holds its regular files: they are moved into
	// place rather than written.
	staged *stagedLayer
	end    int64 // where the data written to the file being copied ends
	// cache is the last parent directory resolved, for the next entries in it. It goes
	// stale whenever anything is removed, which is when a name may start to resolve
	// elsewhere; its handle stays open until the next entry's parent is resolved.
	//
	// Adding names to a directory changes its times, which must stay the archive's (or
	// the lower layer's): they are read once when the directory is resolved (st) and
	// given back once the entries in it are done (when the cache moves on, dirty says
	// whether anything was added), not around every entry.
	cache struct {
		dir   string
		h     *dirHandle
		st    unix.Stat_t
		stale bool
		dirty bool
	}
}

// dirHandle is a directory of the tree, open.
type dirHandle struct {
	f    *os.File
	path string // where it is in the tree, clean and absolute
}

func (d *dirHandle) fd() int { return int(d.f.Fd()) }

// dropCache makes the next entry resolve its parent again.
func (a *applier) dropCache() { a.cache.stale = true }

// flushCache gives the cached directory back its times, if names were added to it, and
// closes it.
func (a *applier) flushCache() error {
	var err error
	if h := a.cache.h; h != nil && a.cache.dirty {
		if terr := emptyPathTimes(h.fd(), []unix.Timespec{a.cache.st.Atim, a.cache.st.Mtim}); terr != nil {
			err = fsErr("set times of", h.path, terr)
		}
	}
	a.closeCache()
	return err
}

// closeCache closes the cached directory as it is (after a failure).
func (a *applier) closeCache() {
	if a.cache.h != nil {
		_ = a.cache.h.f.Close()
	}
	a.cache.h, a.cache.dir, a.cache.stale, a.cache.dirty = nil, "", false, false
}

// entryName checks what every entry must be (a type this package makes, names without
// NUL bytes, not too deep) and returns its name, clean and absolute; "" for an entry
// that makes nothing (a pax global header).
func entryName(hdr *tar.Header) (string, error) {
	switch hdr.Typeflag {
	case tar.TypeXGlobalHeader:
		return "", nil // pax global header: nothing in the tree
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink, tar.TypeLink,
		tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
	default:
		return "", &pullkit.UnsupportedError{What: "layer entry", Reason: "tar type " + typeName(hdr.Typeflag)}
	}
	if strings.IndexByte(hdr.Name, 0) >= 0 || strings.IndexByte(hdr.Linkname, 0) >= 0 {
		return "", invalid("a name with a NUL byte")
	}
	name := path.Clean("/" + hdr.Name)
	if strings.Count(name, "/") > maxDepth || strings.Count(hdr.Linkname, "/") > maxDepth {
		return "", invalid("a name more than %d directories deep", maxDepth)
	}
	return name, nil
}

// entry applies one tar entry.
func (a *applier) entry(hdr *tar.Header, r io.Reader) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	name, err := entryName(hdr)
	if err != nil || name == "" {
		return err
	}
	if name == "/" {
		return a.top(hdr)
	}
	if first, _, _ := strings.Cut(name[1:], "/"); strings.HasPrefix(first, whMeta) && name != "/"+whOpaque {
		// aufs's metadata at the top (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph): not part
		// of the image.
		a.res.skip(hdr.Name, "aufs metadata")
		return nil
	}
	dir, base := parentOf(name), path.Base(name)
	if strings.HasPrefix(base, whPrefix) {
		return a.whiteout(hdr.Name, dir, base)
	}
	p, err := a.parent(dir)
	if err != nil {
		return err
	}
	a.cache.dirty = true
	if !a.t.privileged && a.cache.st.Mode&0o700 != 0o700 {
		return a.openParentFor(p.f, func() error { return a.create(p, base, hdr, r) })
	}
	return a.create(p, base, hdr, r)
}

// inParent runs fn, which adds or removes a name in p, and gives p back the times (and,
// for an unprivileged process, the mode) it had: the archive's for a directory it named,
// the lower layer's otherwise.
func (a *applier) inParent(p *dirHandle, fn func() error) error {
	var st unix.Stat_t
	if err := unix.Fstat(p.fd(), &st); err != nil {
		return fsErr("stat", p.path, err)
	}
	var err error
	if !a.t.privileged && st.Mode&0o700 != 0o700 {
		err = a.openParentFor(p.f, fn)
	} else {
		err = fn()
	}
	if terr := emptyPathTimes(p.fd(), []unix.Timespec{st.Atim, st.Mtim}); terr != nil && err == nil {
		err = fsErr("set times of", p.path, terr)
	}
	return err
}

// lstatAt stats name in dir without following it; ok is false when it is not there.
func lstatAt(dir int, name string) (unix.Stat_t, bool, error) {
	var st unix.Stat_t
	err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		return st, true, nil
	}
	if isNotExist(err) {
		return st, false, nil
	}
	return st, false, err
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// errExists says that a name create tried to make new is there already.
var errExists = errors.New("exists")

// create makes the entry hdr as base in p, replacing what is there (a directory over a
// directory is merged instead).
func (a *applier) create(p *dirHandle, base string, hdr *tar.Header, r io.Reader) error {
	child := childOf(p.path, base)
	var m meta
	var err error
	if hdr.Typeflag != tar.TypeLink {
		// A hard link has no metadata of its own: it is the file it links.
		if m, err = a.metaOf(hdr); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink:
		// Most names are new to the tree: make them at once (O_EXCL and the like, which
		// never follow the name), and look at what is there only when something is.
		fresh := m
		if fresh.chown && a.ownsNew(m) {
			fresh.chown = false // what the kernel gives a new file already
		}
		switch err = a.make(p.fd(), base, child, hdr, fresh, r, true); {
		case err == nil:
			a.upper.add(child)
			return nil
		case !errors.Is(err, errExists):
			return err
		}
	}
	st, exists, err := lstatAt(p.fd(), base)
	if err != nil {
		return fsErr("stat", child, err)
	}
	var lt *linkTarget
	if hdr.Typeflag == tar.TypeLink {
		if lt, err = a.linkTarget(hdr.Linkname); err != nil {
			return err
		}
		defer lt.close()
		if exists && st.Dev == lt.st.Dev && st.Ino == lt.st.Ino {
			a.upper.add(child)
			return nil // already that file
		}
	}
	overWhiteout := false
	if exists && !(isDir(&st) && hdr.Typeflag == tar.TypeDir) {
		overWhiteout = a.t.form == overlay && a.isWhiteout(p.fd(), base, &st)
		if err := a.remove(p.fd(), base, &st, child); err != nil {
			return err
		}
		exists = false
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse, tar.TypeSymlink:
		err = a.make(p.fd(), base, child, hdr, m, r, false)
	case tar.TypeDir:
		err = a.dir(p.fd(), base, child, hdr, m, exists, overWhiteout, false)
	case tar.TypeLink:
		err = unix.Linkat(lt.dir.fd(), lt.base, p.fd(), base, 0)
		if err != nil {
			err = fsErr("link", child, err)
		}
	case tar.TypeFifo, tar.TypeChar, tar.TypeBlock:
		var made bool
		made, err = a.node(p.fd(), base, child, hdr, m)
		if err == nil && !made {
			return nil
		}
	}
	if err != nil {
		return err
	}
	a.upper.add(child)
	return nil
}

// make makes a regular file, a new directory or a symbolic link. With fresh, a name
// that is there already is errExists, and nothing is changed.
func (a *applier) make(dir int, base, p string, hdr *tar.Header, m meta, r io.Reader, fresh bool) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		return a.dir(dir, base, p, hdr, m, false, false, fresh)
	case tar.TypeSymlink:
		return a.symlink(dir, base, p, hdr, m, fresh)
	}
	return a.file(dir, base, p, hdr, m, r, fresh)
}

// ownsNew says whether a file this process makes now in the cached directory gets m's
// owner without a chown: its user is the process's, and its group is the process's or
// the directory's (which one depends on the directory's set-group-ID bit and on the
// mount's grpid option), so both must be m's.
func (a *applier) ownsNew(m meta) bool {
	return m.uid == a.t.uid && m.gid == a.t.gid && int(a.cache.st.Gid) == m.gid
}

// alreadyThere reports, for a name create tried to make new, that it was there.
func alreadyThere(err error, fresh bool) bool { return fresh && errors.Is(err, unix.EEXIST) }

// remove removes name from dir, a whole tree if it is a directory.
func (a *applier) remove(dir int, name string, st *unix.Stat_t, p string) error {
	a.dropCache()
	if !isDir(st) {
		if err := unix.Unlinkat(dir, name, 0); err != nil && !isNotExist(err) {
			return fsErr("remove", p, err)
		}
		return nil
	}
	return a.removeTree(dir, name, p)
}

// removeTree removes the directory name in dir and everything in it, through directory
// handles opened with O_NOFOLLOW (a symbolic link in it is removed, never followed). It
// holds one handle per level of depth.
func (a *applier) removeTree(dir int, name, p string) error {
	if err := unix.Unlinkat(dir, name, unix.AT_REMOVEDIR); err == nil || isNotExist(err) {
		return nil
	}
	type frame struct {
		f       *os.File
		parent  int
		name    string
		pending []string
		reread  bool
	}
	open := func(parent int, name string) (*os.File, error) {
		if !a.t.privileged {
			// An unprivileged process must be able to read and empty it.
			if err := chmodAt(parent, name, 0o700); err != nil {
				return nil, err
			}
		}
		return openat(parent, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	}
	f, err := open(dir, name)
	if err != nil {
		return fsErr("remove", p, err)
	}
	stack := []*frame{{f: f, parent: dir, name: name}}
	defer func() {
		for _, fr := range stack {
			_ = fr.f.Close()
		}
	}()
	for len(stack) > 0 {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		top := stack[len(stack)-1]
		if len(top.pending) == 0 {
			names, err := top.f.Readdirnames(256)
			if err != nil && err != io.EOF {
				return fsErr("read directory", p, err)
			}
			top.pending = names
		}
		if len(top.pending) == 0 {
			err := unix.Unlinkat(top.parent, top.name, unix.AT_REMOVEDIR)
			if errors.Is(err, unix.ENOTEMPTY) && !top.reread {
				// Names added while it was read: read it once more.
				top.reread = true
				if _, err := top.f.Seek(0, io.SeekStart); err != nil {
					return fsErr("read directory", p, err)
				}
				continue
			}
			if err != nil && !isNotExist(err) {
				return fsErr("remove", p, err)
			}
			_ = top.f.Close()
			stack = stack[:len(stack)-1]
			continue
		}
		n := top.pending[0]
		top.pending = top.pending[1:]
		fd := int(top.f.Fd())
		err := unix.Unlinkat(fd, n, 0)
		if err == nil || isNotExist(err) {
			continue
		}
		if err != unix.EISDIR {
			return fsErr("remove", p, err)
		}
		sub, err := open(fd, n)
		if err != nil {
			return fsErr("remove", p, err)
		}
		stack = append(stack, &frame{f: sub, parent: fd, name: n})
	}
	return nil
}

// meta is what an entry's header says about ownership, mode, times and attributes.
type meta struct {
	chown    bool
	uid, gid int
	mode     uint32
	times    []unix.Timespec // atime, mtime
	xattrs   [][2]string
}

func (a *applier) metaOf(hdr *tar.Header) (meta, error) {
	m := meta{mode: uint32(hdr.Mode) & 0o7777}
	switch {
	case len(a.t.cfg.uids) > 0:
		var ok bool
		if m.uid, ok = mapID(a.t.cfg.uids, hdr.Uid); !ok {
			return m, invalid("uid %d has no mapping", hdr.Uid)
		}
		if m.gid, ok = mapID(a.t.cfg.gids, hdr.Gid); !ok {
			return m, invalid("gid %d has no mapping", hdr.Gid)
		}
		m.chown = true
	case a.t.privileged:
		if hdr.Uid < 0 || hdr.Gid < 0 || hdr.Uid > 1<<32-2 || hdr.Gid > 1<<32-2 {
			return m, invalid("owner %d:%d is out of range", hdr.Uid, hdr.Gid)
		}
		m.uid, m.gid, m.chown = hdr.Uid, hdr.Gid, true
	}
	mtime := hdr.ModTime
	if mtime.IsZero() {
		mtime = time.Now()
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = mtime
	}
	m.times = []unix.Timespec{timespec(atime), timespec(mtime)}
	for k, v := range hdr.PAXRecords {
		name, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || name == "" {
			continue
		}
		if reason := refusedXattr(name); reason != "" {
			a.res.skip(hdr.Name, "xattr "+name+": "+reason)
			continue
		}
		m.xattrs = append(m.xattrs, [2]string{name, v})
	}
	slices.SortFunc(m.xattrs, func(x, y [2]string) int { return strings.Compare(x[0], y[0]) })
	return m, nil
}

func timespec(t time.Time) unix.Timespec {
	return unix.Timespec{Sec: t.Unix(), Nsec: int64(t.Nanosecond())}
}

// refusedXattr says why an attribute from an archive is not applied, or "".
func refusedXattr(name string) string {
	switch {
	case strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay."):
		// overlayfs reads these (opaque, redirect, metacopy): a layer must not forge them.
		return "overlayfs's own attribute, not taken from a layer"
	case keptXattr(name):
		return "host-specific, not taken from a layer"
	}
	return ""
}

// keptXattr says whether an attribute the host set is left alone when a layer
// re-declares a directory (SELinux labels and NFSv4 ACLs belong to the host).
func keptXattr(name string) bool {
	return name == "security.selinux" || name == "system.nfs4_acl"
}

// owner applies ownership through chown (on fd, or name in fd without following it).
func (a *applier) chown(fd int, name, p string, m meta) error {
	if !m.chown {
		return nil
	}
	var err error
	if name == "" {
		err = unix.Fchownat(fd, "", m.uid, m.gid, unix.AT_EMPTY_PATH)
	} else {
		err = unix.Fchownat(fd, name, m.uid, m.gid, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return fsErr("chown", p, err)
	}
	return nil
}

// setXattrs sets m's attributes on fd's file (lpath == "") or, without following it, on
// the file at lpath; what the file system refuses is skipped and reported.
func (a *applier) setXattrs(fd int, lpath, entry string, m meta) {
	for _, x := range m.xattrs {
		var err error
		if lpath == "" {
			err = unix.Fsetxattr(fd, x[0], []byte(x[1]), 0)
		} else {
			err = unix.Lsetxattr(lpath, x[0], []byte(x[1]), 0)
		}
		if err != nil {
			a.res.skip(entry, "xattr "+x[0]+": "+err.Error())
		}
	}
}

// file writes a regular file, leaving holes where whole blocks are zero (or, merging a
// staged layer, moves its staged file into place).
func (a *applier) file(dir int, base, p string, hdr *tar.Header, m meta, r io.Reader, fresh bool) error {
	if a.staged != nil {
		return a.staged.place(dir, base, p, fresh)
	}
	f, err := openat(dir, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if alreadyThere(err, fresh) {
		return errExists
	}
	if err != nil {
		return fsErr("create", p, err)
	}
	defer f.Close()
	if err := a.copyData(f, p, hdr.Size, r); err != nil {
		return err
	}
	fd := int(f.Fd())
	if err := a.chown(fd, "", p, m); err != nil {
		return err
	}
	if err := unix.Fchmod(fd, m.mode); err != nil {
		return fsErr("chmod", p, err)
	}
	a.setXattrs(fd, "", hdr.Name, m)
	if err := emptyPathTimes(fd, m.times); err != nil {
		return fsErr("set times of", p, err)
	}
	return nil
}

func (a *applier) copyData(f *os.File, p string, size int64, r io.Reader) error {
	var off int64
	a.end = 0
	for off < size {
		if err := a.ctx.Err(); err != nil {
			return err
		}
		n := int64(len(a.buf))
		if size-off < n {
			n = size - off
		}
		got, err := io.ReadFull(r, a.buf[:n])
		if err := a.writeData(f, p, a.buf[:got], off); err != nil {
			return err
		}
		off += int64(got)
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return &readError{err: err}
		}
	}
	if a.end < size {
		// It ends in a hole: the size is set, not written.
		if err := f.Truncate(size); err != nil {
			return fsErr("truncate", p, err)
		}
	}
	return nil
}

// writeData writes b at off, skipping the whole zero blocks (the file's size is set at
// the end, so trailing holes count).
func (a *applier) writeData(f *os.File, p string, b []byte, off int64) error {
	start := -1 // start of the run of data blocks not written yet
	flush := func(end int) error {
		if start < 0 {
			return nil
		}
		if _, err := f.WriteAt(b[start:end], off+int64(start)); err != nil {
			return fsErr("write", p, err)
		}
		a.end = off + int64(end)
		start = -1
		return nil
	}
	for i := 0; i < len(b); i += holeBlock {
		j := min(i+holeBlock, len(b))
		if bytes.Equal(b[i:j], zeroBlock[:j-i]) {
			if err := flush(i); err != nil {
				return err
			}
			continue
		}
		if start < 0 {
			start = i
		}
	}
	return flush(len(b))
}

// dir makes (or, over a directory, updates) a directory.
func (a *applier) dir(dir int, base, p string, hdr *tar.Header, m meta, there, overWhiteout, fresh bool) error {
	if !there {
		err := unix.Mkdirat(dir, base, 0o700)
		if alreadyThere(err, fresh) {
			return errExists
		}
		if err != nil {
			return fsErr("mkdir", p, err)
		}
	}
	f, err := openat(dir, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fsErr("open", p, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if there {
		// The archive's attributes replace the lower layer's.
		names, _ := listXattrs(fd)
		for _, n := range names {
			if keptXattr(n) || strings.Contains(n, ".overlay.") || slices.ContainsFunc(m.xattrs, func(x [2]string) bool { return x[0] == n }) {
				continue
			}
			if err := unix.Fremovexattr(fd, n); err != nil {
				a.res.skip(hdr.Name, "remove xattr "+n+": "+err.Error())
			}
		}
	}
	if err := a.chown(fd, "", p, m); err != nil {
		return err
	}
	mode := m.mode
	if !a.t.privileged {
		if mode&0o700 != 0o700 {
			// Keep it open to this process while the tree fills; finish sets the mode.
			a.t.late[p] = mode
			mode |= 0o700
		} else {
			delete(a.t.late, p)
		}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		return fsErr("chmod", p, err)
	}
	a.setXattrs(fd, "", hdr.Name, m)
	if overWhiteout {
		// A directory over a whiteout of this layer: the lower one is gone, so this one
		// must not merge with it.
		if err := unix.Fsetxattr(fd, a.t.xattrNS+".overlay.opaque", []byte("y"), 0); err != nil {
			return fsErr("mark opaque", p, err)
		}
	}
	if err := emptyPathTimes(fd, m.times); err != nil {
		return fsErr("set times of", p, err)
	}
	return nil
}

func (a *applier) symlink(dir int, base, p string, hdr *tar.Header, m meta, fresh bool) error {
	if hdr.Linkname == "" {
		return invalid("symbolic link with an empty target")
	}
	err := unix.Symlinkat(hdr.Linkname, dir, base)
	if alreadyThere(err, fresh) {
		return errExists
	}
	if err != nil {
		return fsErr("symlink", p, err)
	}
	if err := a.chown(dir, base, p, m); err != nil {
		return err
	}
	if len(m.xattrs) > 0 {
		a.setXattrs(-1, procPath(dir, base), hdr.Name, m)
	}
	if err := unix.UtimesNanoAt(dir, base, m.times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fsErr("set times of", p, err)
	}
	return nil
}

// node makes a FIFO or a device node; made is false when the process may not make
// device nodes (then it is skipped and reported).
func (a *applier) node(dir int, base, p string, hdr *tar.Header, m meta) (made bool, err error) {
	var mode uint32
	var dev int
	kind := "fifo"
	switch hdr.Typeflag {
	case tar.TypeFifo:
		mode = unix.S_IFIFO
	case tar.TypeChar:
		mode, kind = unix.S_IFCHR, "char device"
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	case tar.TypeBlock:
		mode, kind = unix.S_IFBLK, "block device"
		dev = int(unix.Mkdev(uint32(hdr.Devmajor), uint32(hdr.Devminor)))
	}
	if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 1<<32-1 || hdr.Devminor > 1<<32-1 {
		return false, invalid("device number %d:%d is out of range", hdr.Devmajor, hdr.Devminor)
	}
	if err := unix.Mknodat(dir, base, mode|0o600, dev); err != nil {
		if mode != unix.S_IFIFO && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) {
			a.res.skip(hdr.Name, fmt.Sprintf("%s %d:%d: %v", kind, hdr.Devmajor, hdr.Devminor, err))
			return false, nil
		}
		return false, fsErr("mknod", p, err)
	}
	if err := a.chown(dir, base, p, m); err != nil {
		return false, err
	}
	if err := chmodAt(dir, base, m.mode); err != nil {
		return false, fsErr("chmod", p, err)
	}
	if len(m.xattrs) > 0 {
		a.setXattrs(-1, procPath(dir, base), hdr.Name, m)
	}
	if err := unix.UtimesNanoAt(dir, base, m.times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return false, fsErr("set times of", p, err)
	}
	return true, nil
}

// top applies an entry for the tree's top directory ("./"): only a directory, and its
// mode is given when the tree is finished, so that the tree stays private while it fills.
func (a *applier) top(hdr *tar.Header) error {
	if hdr.Typeflag != tar.TypeDir {
		return invalid("the root can only be a directory, not a %s", typeName(hdr.Typeflag))
	}
	m, err := a.metaOf(hdr)
	if err != nil {
		return err
	}
	// The top may be the cached directory: its times are to be the entry's, not the
	// ones the cache would give back later.
	if err := a.flushCache(); err != nil {
		return err
	}
	f, err := openat(int(a.t.fd.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fsErr("open", "/", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := a.chown(fd, "", "/", m); err != nil {
		return err
	}
	a.setXattrs(fd, "", hdr.Name, m)
	if err := emptyPathTimes(fd, m.times); err != nil {
		return fsErr("set times of", "/", err)
	}
	a.t.rootMode = m.mode
	a.upper.add("/")
	return nil
}

// linkTarget is the file a hard link entry names, open by its directory.
type linkTarget struct {
	dir  *dirHandle
	base string
	st   unix.Stat_t
}

func (l *linkTarget) close() { _ = l.dir.f.Close() }

// linkTarget resolves a hard link's target inside the tree, without following its last
// component: a link to a symbolic link links the symbolic link (as tar does), but not one
// whose target climbs above the root.
func (a *applier) linkTarget(linkname string) (*linkTarget, error) {
	if linkname == "" {
		return nil, invalid("hard link with an empty target")
	}
	n := path.Clean("/" + linkname)
	if n == "/" {
		return nil, invalid("hard link to the root directory")
	}
	missing := func() error {
		if a.t.form == overlay {
			return &pullkit.UnsupportedError{What: "layer entry", Reason: fmt.Sprintf("hard link to %s, which is not in this layer: a snapshot holds one layer and cannot link into the layers below", quote(linkname))}
		}
		return invalid("hard link to %s, which does not exist", quote(linkname))
	}
	d, err := a.resolve(parentOf(n), false)
	if err != nil {
		if isNotExist(err) {
			return nil, missing()
		}
		return nil, err
	}
	l := &linkTarget{dir: d, base: path.Base(n)}
	st, ok, err := lstatAt(d.fd(), l.base)
	switch {
	case err != nil:
		l.close()
		return nil, fsErr("stat", childOf(d.path, l.base), err)
	case !ok || (a.t.form == overlay && a.isWhiteout(d.fd(), l.base, &st)):
		l.close()
		return nil, missing()
	case isDir(&st):
		l.close()
		return nil, invalid("hard link to %s, a directory", quote(linkname))
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		target, err := readlinkAt(d.fd(), l.base)
		if err != nil {
			l.close()
			return nil, fsErr("readlink", childOf(d.path, l.base), err)
		}
		if !path.IsAbs(target) && climbs(d.path, target) {
			l.close()
			return nil, invalid("hard link to %s, a symbolic link that leaves the root (to %s)", quote(linkname), quote(target))
		}
	}
	l.st = st
	return l, nil
}

func readlinkAt(dir int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dir, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// climbs says whether the relative link target, read from the directory dir (clean,
// absolute), goes above the root.
func climbs(dir, target string) bool {
	depth := strings.Count(dir, "/")
	if dir == "/" {
		depth = 0
	}
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "", ".":
		case "..":
			depth--
			if depth < 0 {
				return true
			}
		default:
			depth++
		}
	}
	return false
}

// typeName names a tar entry type for a message.
func typeName(t byte) string {
	switch t {
	case tar.TypeReg, tar.TypeGNUSparse:
		return "regular file"
	case tar.TypeDir:
		return "directory"
	case tar.TypeSymlink:
		return "symbolic link"
	case tar.TypeLink:
		return "hard link"
	case tar.TypeFifo:
		return "fifo"
	case tar.TypeChar:
		return "char device"
	case tar.TypeBlock:
		return "block device"
	}
	return fmt.Sprintf("%q", t)
}

// quote quotes a name from the archive for a message (the message's own cleaning escapes
// what is not printable).
func quote(s string) string { return fmt.Sprintf("%q", s) }
