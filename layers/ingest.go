package layers

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"
)

// ingest is the temporary file of one blob transfer, in <layout>/ingest/.
//
// Its name is derived from the digest (<alg>-<hex>.partial), so a transfer that a killed
// process left behind is found and resumed by the next one. The file is flock'ed while in
// use; a second process that finds it locked writes a private temporary file instead
// (never resumed, always removed on failure).
//
// A blob of known size under smallBlob bytes gets an unnamed file instead (O_TMPFILE on
// Linux), linked to its final name once verified: one metadata operation less than a
// create and a rename, which is most of the cost of a small blob, and nothing to clean up
// after a crash. It is resumed within the process (the file stays open) but not across
// processes, which for such a blob would save nothing.
//
// A sequential transfer writes the file in order, so its length is how far it got. A
// parallel ranged transfer writes chunks out of order; it keeps in a sidecar file
// (<name>.prefix) the length of the prefix it has already hashed, which is known to be
// written, and only that prefix is trusted on resume.
type ingest struct {
	f       *os.File
	path    string
	side    string // sidecar path; "" for a private file
	private bool
	prefix  int64 // bytes at the start of f left by an earlier run, to be re-hashed
	sided   bool  // this transfer wrote the sidecar
	unnamed bool  // an O_TMPFILE file, linked into place by commit
}

// smallBlob is the size under which a blob is written to an unnamed file.
const smallBlob = 1 << 20

// tmpfileOK reports whether unnamed files can be created in ingest/ and linked into the
// layout; it is probed once per directory.
func (l *Layout) tmpfileOK() bool {
	l.st.tmpOnce.Do(func() {
		dir := filepath.Join(l.dir, IngestDir)
		f, err := openTmpfile(dir)
		if err != nil {
			return
		}
		defer f.Close()
		probe := filepath.Join(dir, fmt.Sprintf("probe-%d-%p.tmp", os.Getpid(), f))
		if linkTmpfile(f, probe) == nil {
			os.Remove(probe)
			l.st.tmpOK = true
		}
	})
	return l.st.tmpOK
}

// openUnnamed returns an unnamed ingest file, or nil when the system has none.
func (l *Layout) openUnnamed() *ingest {
	if !l.tmpfileOK() {
		return nil
	}
	f, err := openTmpfile(filepath.Join(l.dir, IngestDir))
	if err != nil {
		return nil
	}
	return &ingest{f: f, path: f.Name(), private: true, unnamed: true}
}

func (l *Layout) openIngest(d digest.Digest) (*ingest, error) {
	dir := filepath.Join(l.dir, IngestDir)
	name := string(d.Algorithm()) + "-" + d.Encoded()
	p := filepath.Join(dir, name+".partial")
	in := &ingest{path: p, side: p + ".prefix"}
	// The common case, a new transfer, costs one create: no stat, no sidecar lookup.
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, fs.ErrNotExist) {
		// ingest/ was removed behind our back.
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		f, err = os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	}
	fresh := err == nil
	if errors.Is(err, fs.ErrExist) {
		f, err = os.OpenFile(p, os.O_RDWR, 0o644)
	}
	if err != nil {
		return nil, err
	}
	if !tryLock(f) {
		f.Close()
		f, err = os.CreateTemp(dir, name+"-*.tmp")
		if err != nil {
			return nil, err
		}
		return &ingest{f: f, path: f.Name(), private: true}, nil
	}
	in.f = f
	if fresh {
		// A sidecar can outlive its data file only if a process died inside discard,
		// which removes the sidecar first; a stale one is overwritten before use.
		return in, nil
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	prefix := fi.Size()
	if b, err := os.ReadFile(in.side); err == nil {
		v, perr := parseDecimal(strings.TrimSpace(string(b)))
		if perr != nil {
			v = 0
		}
		prefix = min(v, prefix)
	} else if !errors.Is(err, fs.ErrNotExist) {
		prefix = 0
	}
	if prefix != fi.Size() {
		if err := f.Truncate(prefix); err != nil {
			f.Close()
			return nil, err
		}
	}
	if err := in.removeSide(); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(prefix, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	in.prefix = prefix
	return in, nil
}

// reset empties the file for a transfer that starts over.
func (in *ingest) reset() error {
	if err := in.removeSide(); err != nil {
		return err
	}
	if err := in.f.Truncate(0); err != nil {
		return err
	}
	_, err := in.f.Seek(0, io.SeekStart)
	in.prefix = 0
	return err
}

// setSide records that the first n bytes of the file are written and hashed.
func (in *ingest) setSide(n int64) error {
	if in.private {
		return nil
	}
	in.sided = true
	return os.WriteFile(in.side, []byte(strconv.FormatInt(n, 10)+"\n"), 0o644)
}

func (in *ingest) removeSide() error {
	if in.side == "" {
		return nil
	}
	if err := os.Remove(in.side); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	in.sided = false
	return nil
}

// discard removes the file and its sidecar (the sidecar first: see openIngest).
func (in *ingest) discard() {
	in.removeSide()
	in.f.Close()
	if !in.unnamed {
		os.Remove(in.path)
	}
}

// keep closes the file and leaves it for a later run to resume; a private or empty file
// is removed instead.
func (in *ingest) keep() {
	if in.private {
		in.discard()
		return
	}
	fi, err := in.f.Stat()
	if err != nil || fi.Size() == 0 {
		in.discard()
		return
	}
	in.f.Close()
}

// commit gives the verified file its final name dst.
func (in *ingest) commit(dst string, sync bool) error {
	if sync {
		if err := in.f.Sync(); err != nil {
			return err
		}
	}
	if in.private {
		if err := in.f.Chmod(0o644); err != nil {
			return err
		}
	}
	// Rename while the lock is held, so another process never resumes a file that is
	// being renamed away.
	publish := func() error { return os.Rename(in.path, dst) }
	if in.unnamed {
		publish = func() error {
			err := linkTmpfile(in.f, dst)
			if errors.Is(err, fs.ErrExist) {
				return nil // another process stored it meanwhile
			}
			return err
		}
	}
	err := publish()
	if errors.Is(err, fs.ErrNotExist) {
		// blobs/<alg>/ does not exist yet (a first sha512 blob, or removed).
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			err = publish()
		}
	}
	if err != nil {
		return err
	}
	in.f.Close()
	if in.sided {
		in.removeSide()
	}
	if sync {
		if d, err := os.Open(filepath.Dir(dst)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

// directOK reports whether files in ingest/ take O_DIRECT writes (tmpfs before Linux
// 6.6, some FUSE and network file systems do not); it is probed once per directory by
// writing one aligned block to a scratch file.
func (l *Layout) directOK() bool {
	l.st.dioOnce.Do(func() {
		f, err := os.CreateTemp(filepath.Join(l.dir, IngestDir), "probe-*.tmp")
		if err != nil {
			return
		}
		defer os.Remove(f.Name())
		defer f.Close()
		d, err := openDirect(f.Name())
		if err != nil {
			return
		}
		defer d.Close()
		if _, err := d.WriteAt(alignedBytes(directAlign), 0); err == nil {
			l.st.dioOK = true
		}
	})
	return l.st.dioOK
}
