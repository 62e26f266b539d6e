//go:build linux

package unpack

import (
	"errors"
	"io"
	"strings"

	"golang.org/x/sys/unix"
)

// isWhiteout says whether name is an overlay whiteout: a 0/0 character device, or an
// empty file with the whiteout attribute.
func (a *applier) isWhiteout(dir int, name string, st *unix.Stat_t) bool {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		return st.Rdev == 0
	case unix.S_IFREG:
		if st.Size != 0 {
			return false
		}
		_, ok := getXattrPath(procPath(dir, name), a.t.xattrNS+".overlay.whiteout")
		return ok
	}
	return false
}

// whiteout applies a whiteout entry: base is ".wh.<name>" or ".wh..wh..opq" in dir.
func (a *applier) whiteout(entry, dir, base string) error {
	if strings.HasPrefix(base, whMeta) && base != whOpaque {
		a.res.skip(entry, "reserved whiteout name")
		return nil
	}
	target := strings.TrimPrefix(base, whPrefix)
	if base != whOpaque && (target == "" || target == "." || target == "..") {
		return invalid("whiteout %s names no file", quote(entry))
	}
	// What it removes may be where the cached directory resolves: give that its times
	// now, and resolve it again next.
	if err := a.flushCache(); err != nil {
		return err
	}
	if a.t.form == overlay {
		return a.overlayWhiteout(dir, base, target)
	}
	d, err := a.resolve(dir, false)
	if err != nil {
		if isNotExist(err) {
			return nil // nothing below to hide
		}
		return err
	}
	defer d.f.Close()
	return a.inParent(d, func() error {
		if base == whOpaque {
			return a.removeLowerChildren(d.fd(), d.path, 0)
		}
		return a.removeLower(d.fd(), target, childOf(d.path, target), 0)
	})
}

// removeLower removes name (at p) from dir unless this layer wrote it; a directory that
// holds something this layer wrote loses only the rest.
func (a *applier) removeLower(dir int, name, p string, depth int) error {
	if err := a.ctx.Err(); err != nil {
		return err
	}
	if depth > maxDepth {
		return invalid("a whiteout reaches more than %d levels of directories this layer wrote into", maxDepth)
	}
	st, ok, err := lstatAt(dir, name)
	if err != nil {
		return fsErr("stat", p, err)
	}
	if !ok {
		return nil
	}
	if !a.upper.has(p) {
		return a.remove(dir, name, &st, p)
	}
	if !isDir(&st) {
		return nil
	}
	f, err := openat(dir, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return fsErr("open", p, err)
	}
	defer f.Close()
	return a.removeLowerChildren(int(f.Fd()), p, depth+1)
}

func (a *applier) removeLowerChildren(dir int, p string, depth int) error {
	f, err := openat(dir, ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return fsErr("open", p, err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fsErr("stat", p, err)
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if err := a.removeLower(int(f.Fd()), n, childOf(p, n), depth); err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			break
		}
		if err != nil {
			return fsErr("read directory", p, err)
		}
	}
	if err := emptyPathTimes(int(f.Fd()), ts); err != nil {
		return fsErr("set times of", p, err)
	}
	return nil
}

// overlayWhiteout records a whiteout the way overlayfs reads it in a lower directory.
func (a *applier) overlayWhiteout(dir, base, target string) error {
	d, err := a.resolve(dir, true)
	if err != nil {
		return err
	}
	defer d.f.Close()
	return a.inParent(d, func() error {
		if base == whOpaque {
			f, err := openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
			if err != nil {
				return fsErr("open", d.path, err)
			}
			defer f.Close()
			if err := unix.Fsetxattr(int(f.Fd()), a.t.xattrNS+".overlay.opaque", []byte("y"), 0); err != nil {
				return fsErr("mark opaque", d.path, err)
			}
			a.upper.add(d.path)
			return nil
		}
		p := childOf(d.path, target)
		if _, ok, err := lstatAt(d.fd(), target); err != nil {
			return fsErr("stat", p, err)
		} else if ok {
			return nil // this layer's own file (or whiteout) stays
		}
		var err error = unix.EPERM
		if !a.t.cfg.xattrWhiteouts {
			err = unix.Mknodat(d.fd(), target, unix.S_IFCHR, 0)
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EPERM) {
			return fsErr("mknod whiteout", p, err)
		}
		// No 0/0 device for this process (before Linux 5.8, without CAP_MKNOD): an empty
		// file with the whiteout attribute, and its directory marked to have overlayfs
		// look for such files.
		f, err := openat(d.fd(), target, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW, 0)
		if err != nil {
			return fsErr("create whiteout", p, err)
		}
		defer f.Close()
		if err := unix.Fsetxattr(int(f.Fd()), a.t.xattrNS+".overlay.whiteout", []byte("y"), 0); err != nil {
			return fsErr("mark whiteout", p, err)
		}
		df, err := openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fsErr("open", d.path, err)
		}
		defer df.Close()
		if v, ok := getXattrPath(procPath(int(df.Fd()), ""), a.t.xattrNS+".overlay.opaque"); ok && v == "y" {
			return nil
		}
		if err := unix.Fsetxattr(int(df.Fd()), a.t.xattrNS+".overlay.opaque", []byte("x"), 0); err != nil {
			return fsErr("mark whiteouts", d.path, err)
		}
		return nil
	})
}
