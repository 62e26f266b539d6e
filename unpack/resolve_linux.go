//go:build linux

package unpack

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// parent resolves dir inside the tree, creating what is missing, through the cache,
// and reads its times (to give them back once its entries are done). The handle stays
// valid until the next call or dropCache.
func (a *applier) parent(dir string) (*dirHandle, error) {
	if a.cache.h != nil && !a.cache.stale && a.cache.dir == dir {
		return a.cache.h, nil
	}
	if err := a.flushCache(); err != nil {
		return nil, err
	}
	h, err := a.resolve(dir, true)
	if err != nil {
		return nil, err
	}
	if err := unix.Fstat(h.fd(), &a.cache.st); err != nil {
		_ = h.f.Close()
		return nil, fsErr("stat", h.path, err)
	}
	a.cache.dir, a.cache.h = dir, h
	return h, nil
}

// resolve opens dir (a clean absolute name from the archive) inside the tree, following
// symbolic links as if the tree were the root (RESOLVE_IN_ROOT). With create, missing
// directories are made (0755, as tar does), also where a symbolic link points at one that
// is not there yet: then they are made where the link points, inside the tree.
func (a *applier) resolve(dir string, create bool) (*dirHandle, error) {
	f, err := pathrs.OpenatInRoot(a.t.fd, dir)
	if err == nil {
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			_ = f.Close()
			return nil, fsErr("stat", dir, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			_ = f.Close()
			return nil, &resolveError{dir: dir, err: unix.ENOTDIR}
		}
		return &dirHandle{f: f, path: a.inTree(f.Name(), dir)}, nil
	}
	if (errors.Is(err, unix.ENOENT) && create) || errors.Is(err, unix.ENAMETOOLONG) {
		// Something to make, or a name longer than the kernel takes in one piece.
		return a.walk(dir, create)
	}
	return nil, a.resolveErr(dir, err)
}

// maxLinks is how many symbolic links one resolution may follow, as in the kernel.
const maxLinks = 40

// maxDepth bounds how many directories deep a name may go (and resolve to), so that the
// handles held while walking one stay few: far deeper than any image needs, and PATH_MAX
// (4096 bytes) already stops most tools at half of it.
const maxDepth = 4096

// walk resolves dir one component at a time from the top of the tree, with the same
// semantics as resolve: each step opens one name under the handle of the directory
// before it, with O_NOFOLLOW, so a symbolic link is only ever followed here, by reading
// it and going on from the top (absolute) or from where it is (relative); ".." goes back
// up the handles walked, and stops at the top. Missing directories are made when create
// is set. It holds one handle per level of depth.
func (a *applier) walk(dir string, create bool) (*dirHandle, error) {
	type level struct {
		f    *os.File
		path string
	}
	root, err := openat(int(a.t.fd.Fd()), ".", unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fsErr("open", "/", err)
	}
	stack := []level{{root, "/"}}
	defer func() {
		for _, l := range stack {
			_ = l.f.Close()
		}
	}()
	rest := strings.Split(dir, "/")
	links := 0
	for len(rest) > 0 {
		if err := a.ctx.Err(); err != nil {
			return nil, err
		}
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				_ = stack[len(stack)-1].f.Close()
				stack = stack[:len(stack)-1]
			}
			continue
		}
		top := stack[len(stack)-1]
		next := childOf(top.path, c)
		f, err := openat(int(top.f.Fd()), c, unix.O_PATH|unix.O_NOFOLLOW, 0)
		if errors.Is(err, unix.ENOENT) && create {
			f, err = a.mkdir(top.f, c, next)
		}
		if err != nil {
			return nil, a.resolveErr(dir, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			_ = f.Close()
			return nil, fsErr("stat", next, err)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			stack = append(stack, level{f, next})
			if len(stack) > maxDepth {
				return nil, invalid("%s resolves more than %d directories deep", quote(dir), maxDepth)
			}
		case unix.S_IFLNK:
			_ = f.Close()
			if links++; links > maxLinks {
				return nil, &resolveError{dir: dir, err: unix.ELOOP}
			}
			target, err := readlinkAt(int(top.f.Fd()), c)
			if err != nil {
				return nil, fsErr("readlink", next, err)
			}
			if path.IsAbs(target) {
				for _, l := range stack[1:] {
					_ = l.f.Close()
				}
				stack = stack[:1]
			}
			rest = append(strings.Split(target, "/"), rest...)
		default:
			_ = f.Close()
			return nil, &resolveError{dir: dir, err: unix.ENOTDIR}
		}
	}
	top := stack[len(stack)-1]
	stack = stack[:len(stack)-1]
	return &dirHandle{f: top.f, path: top.path}, nil
}

// mkdir makes the directory name in d for an entry's parent (at p in the tree) and opens it.
func (a *applier) mkdir(d *os.File, name, p string) (*os.File, error) {
	mk := func() error { return unix.Mkdirat(int(d.Fd()), name, 0o700) }
	err := mk()
	if errors.Is(err, unix.EACCES) && !a.t.privileged {
		// A lower directory without u+w: open it for the time of the mkdir.
		err = a.openParentFor(d, mk)
	}
	made := err == nil
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fsErr("mkdir", p, err)
	}
	f, err := openat(int(d.Fd()), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	if made {
		if err := a.implicitDir(f, p); err != nil {
			_ = f.Close()
			return nil, err
		}
	}
	return f, nil
}

// implicitDir gives a directory made for an entry's parent (not named by the archive)
// what tar gives it: mode 0755, and the root's ownership when IDs are mapped.
func (a *applier) implicitDir(f *os.File, p string) error {
	if len(a.t.cfg.uids) > 0 {
		uid, uok := mapID(a.t.cfg.uids, 0)
		gid, gok := mapID(a.t.cfg.gids, 0)
		if uok && gok {
			if err := unix.Fchown(int(f.Fd()), uid, gid); err != nil {
				return fsErr("chown", p, err)
			}
		}
	}
	if err := unix.Fchmod(int(f.Fd()), 0o755); err != nil {
		return fsErr("chmod", p, err)
	}
	return nil
}

// openParentFor runs fn with the directory d made writable and searchable by its owner
// (for an unprivileged process, which cannot otherwise add or remove names in a
// directory whose mode says no), then gives d its mode back.
func (a *applier) openParentFor(d *os.File, fn func() error) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.Fd()), &st); err != nil {
		return err
	}
	mode := st.Mode & 0o7777
	if mode&0o700 == 0o700 {
		return fn()
	}
	if err := chmodFd(int(d.Fd()), mode|0o700); err != nil {
		return err
	}
	err := fn()
	if cerr := chmodFd(int(d.Fd()), mode); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

// inTree turns a handle's name (the kernel's path for it) into its path in the tree;
// fallback is the name it was opened by.
func (a *applier) inTree(name, fallback string) string {
	if rest, ok := strings.CutPrefix(name, a.t.real); ok && (rest == "" || rest[0] == '/') {
		return path.Clean("/" + rest)
	}
	return fallback
}

// resolveError is a name that cannot be resolved inside the tree.
type resolveError struct {
	dir string
	err error
}

func (e *resolveError) Error() string {
	switch {
	case errors.Is(e.err, unix.ELOOP):
		return fmt.Sprintf("invalid layer entry: %s cannot be resolved inside the root: too many levels of symbolic links", quote(e.dir))
	case errors.Is(e.err, unix.ENOTDIR):
		return fmt.Sprintf("invalid layer entry: %s is not a directory inside the root", quote(e.dir))
	case errors.Is(e.err, unix.ENAMETOOLONG):
		return fmt.Sprintf("invalid layer entry: %s has a component longer than the file system allows", quote(e.dir))
	}
	return fmt.Sprintf("invalid layer entry: %s cannot be resolved inside the root: %v", quote(e.dir), e.err)
}

func (e *resolveError) Unwrap() []error { return []error{pullkit.ErrInvalid, e.err} }

func (a *applier) resolveErr(dir string, err error) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.ELOOP, unix.ENOTDIR, unix.EXDEV, unix.ENAMETOOLONG, unix.ENOENT:
			return &resolveError{dir: dir, err: errno}
		}
	}
	return fsErr("resolve", dir, err)
}
