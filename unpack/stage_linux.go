//go:build linux

package unpack

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/scratch"
)

// Layers of a root filesystem applied in parallel.
//
// A flattened root filesystem takes its layers in order: a layer's names resolve through
// what the layers below made (a symbolic link of a lower layer is followed, a whiteout
// removes what is below, a hard link may name a lower layer's file), so applying it
// before the layers below are in place gives another tree. What costs the time, though,
// is not the order: it is inflating, hashing and writing the files' contents, which do
// not depend on the tree at all. So a layer is applied in two steps:
//
//   - staging, in parallel with other layers: the blob is read, inflated and verified
//     (diffID) as Apply does, every regular file is written with its metadata (owner,
//     mode, attributes, times, holes) into a staging directory of its own beside the
//     tree, named by its position in the layer, and every entry's header is recorded in
//     order, without its data;
//   - merging, in layer order, once the layers below are merged: the headers are applied
//     to the tree exactly as Apply applies them (the same code: resolution inside the
//     root, whiteouts, opaque directories, replacement, hard links, directories and their
//     times), except that a regular file is moved into place from the staging directory
//     with a rename instead of being written.
//
// So the tree is the one a serial Apply makes, name for name and attribute for
// attribute, while the inflating and the writing of several layers run at once; and a
// layer reaches the tree only once it verified. The staging directory and the tree are
// on one file system (siblings), so the renames are cheap, and a file's inode (with its
// metadata) is the one written while staging. This is simpler than containerd's rebase
// of parent-less snapshots (which must reconcile whole directory trees and cannot follow
// a lower layer's symbolic links the way a flattened tree does) and costs one rename per
// file instead of a write of its data in the serial part.

// stagedLayer is a layer staged for a merge.
type stagedLayer struct {
	layer digest.Digest
	dir   string   // the staging directory
	fd    *os.File // it, open
	rec   *os.File // the recorded headers (unnamed)
	files int      // files staged
	next  int      // the next file a merge places
	res   Result   // what staging found (entries, skips, diffID, size, stages)
}

// fileName is the name of the nth file staged.
func fileName(n int) string { return strconv.Itoa(n) }

func (s *stagedLayer) close() {
	if s.rec != nil {
		_ = s.rec.Close()
		s.rec = nil
	}
	if s.fd != nil {
		_ = s.fd.Close()
		s.fd = nil
	}
}

// place moves the next staged file to base in dir: the merge's way of making a regular
// file. With fresh, a name that is there already is errExists and nothing moves.
func (s *stagedLayer) place(dir int, base, p string, fresh bool) error {
	flags := uint(unix.RENAME_NOREPLACE)
	err := unix.Renameat2(int(s.fd.Fd()), fileName(s.next), dir, base, flags)
	if alreadyThere(err, fresh) {
		return errExists
	}
	if err != nil {
		return fsErr("create", p, err)
	}
	s.next++
	return nil
}

// stage stages one layer (see above) beside the tree; it may run while other layers are
// staged or merged. The caller merges it, or drops it.
func (r *Rootfs) stage(ctx context.Context, layer, want digest.Digest, blob io.Reader) (*stagedLayer, error) {
	// Whether the Rootfs can still take layers is the merge's to check: staging does not
	// take mu, which a merge holds while it runs.
	if err := ctx.Err(); err != nil {
		return nil, layerError(layer, "", err)
	}
	d, err := os.MkdirTemp(filepath.Dir(r.tmp), "."+filepath.Base(r.dir)+".layer-")
	if err != nil {
		return nil, layerError(layer, "", fsErr("create", filepath.Dir(r.tmp), err))
	}
	s := &stagedLayer{layer: layer, dir: d}
	ok := false
	defer func() {
		if !ok {
			r.drop(s)
		}
	}()
	r.smu.Lock()
	r.staged[s] = struct{}{}
	r.smu.Unlock()
	if s.fd, err = os.OpenFile(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
		return nil, layerError(layer, "", fsErr("open", d, err))
	}
	if s.rec, err = scratch.File(d, ".headers-*"); err != nil {
		return nil, layerError(layer, "", fsErr("create", d, err))
	}
	t, err := openTree(d, flat, r.t.cfg)
	if err != nil {
		return nil, layerError(layer, "", err)
	}
	defer t.close()
	if err := t.stage(ctx, layer, want, blob, s); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

// drop removes a staged layer's directory.
func (r *Rootfs) drop(s *stagedLayer) {
	s.close()
	_ = removeAllPath(s.dir)
	r.smu.Lock()
	delete(r.staged, s)
	r.smu.Unlock()
}

// stage reads the layer from blob into s: t is the staging directory, as a tree.
func (t *tree) stage(ctx context.Context, layer, want digest.Digest, blob io.Reader, s *stagedLayer) error {
	res := &s.res
	ls, err := openLayer(ctx, blob, want)
	if err != nil {
		return layerError(layer, "", err)
	}
	defer ls.Close()
	a := &applier{ctx: ctx, t: t, res: res, buf: make([]byte, copyBuffer)}
	// Files are made in the staging directory itself: what ownsNew asks of the parent.
	if err := unix.Fstat(int(s.fd.Fd()), &a.cache.st); err != nil {
		return layerError(layer, "", fsErr("stat", s.dir, err))
	}
	w := bufio.NewWriterSize(s.rec, 64<<10)
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
			return layerError(layer, "", &EntryError{Entry: prev, after: true, Err: ls.cause(err, "tar")})
		}
		res.Entries++
		prev = hdr.Name
		staged, err := a.stageEntry(hdr, data, s)
		if err == nil {
			err = writeHeader(w, hdr, staged)
		}
		entries += time.Since(t1)
		if err != nil {
			var re *readError
			if errors.As(err, &re) {
				err = ls.cause(re.err, "tar")
			}
			return layerError(layer, hdr.Name, err)
		}
	}
	if err := w.Flush(); err != nil {
		return layerError(layer, "", fsErr("write", s.dir, err))
	}
	diffID, err := ls.finish()
	if err != nil {
		return layerError(layer, "", err)
	}
	res.Size = ls.size
	res.Stages = pullkit.Stages{
		Inflate: ls.inflate,
		Tar:     max(0, next+data.d-ls.wait),
		Write:   max(0, entries-data.d),
		Wait:    ls.wait,
	}
	res.DiffID = diffID
	return nil
}

// stageEntry writes entry hdr's file into the staging directory when it is one a merge
// makes with a rename (what Apply would write: a regular file that is not a whiteout or
// aufs's metadata), and says so; the rest is left to the merge. An entry Apply refuses
// outright is refused here, with the same error.
func (a *applier) stageEntry(hdr *tar.Header, r io.Reader, s *stagedLayer) (bool, error) {
	if err := a.ctx.Err(); err != nil {
		return false, err
	}
	name, err := entryName(hdr)
	if err != nil || !makesFile(hdr, name) {
		return false, err
	}
	m, err := a.metaOf(hdr)
	if err != nil {
		return false, err
	}
	if m.chown && a.ownsNew(m) {
		m.chown = false
	}
	if err := a.file(int(s.fd.Fd()), fileName(s.files), name, hdr, m, r, true); err != nil {
		return false, err
	}
	s.files++
	return true, nil
}

// makesFile says whether entry hdr, named name (entryName's), is a regular file that
// Apply writes: not the top, not a whiteout, not aufs's metadata.
func makesFile(hdr *tar.Header, name string) bool {
	if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeGNUSparse || name == "/" {
		return false
	}
	if first, _, _ := strings.Cut(name[1:], "/"); strings.HasPrefix(first, whMeta) && name != "/"+whOpaque {
		return false
	}
	return !strings.HasPrefix(path.Base(name), whPrefix)
}

// merge applies a staged layer to the tree (see above), in its turn: the layers below
// must be merged or applied. After an error the Rootfs can only be aborted.
func (r *Rootfs) merge(ctx context.Context, s *stagedLayer) (Result, error) {
	defer r.drop(s)
	r.mu.Lock()
	defer r.mu.Unlock()
	res := s.res
	res.Skipped = append([]Skip(nil), s.res.Skipped...)
	if err := r.usable(); err != nil {
		return res, layerError(s.layer, "", err)
	}
	t0 := time.Now()
	err := r.t.replay(ctx, s, &res)
	res.Stages.Write += time.Since(t0)
	if err != nil {
		r.err = err
	}
	return res, err
}

// replay applies s's recorded headers to the tree.
func (t *tree) replay(ctx context.Context, s *stagedLayer, res *Result) error {
	if _, err := s.rec.Seek(0, io.SeekStart); err != nil {
		return layerError(s.layer, "", fsErr("read", s.dir, err))
	}
	a := &applier{ctx: ctx, t: t, res: res, upper: newPathSet(), staged: s}
	defer a.closeCache()
	br := bufio.NewReaderSize(s.rec, 64<<10)
	for {
		hdr, err := readHeader(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return layerError(s.layer, "", fsErr("read", s.dir, err))
		}
		if err := a.entry(hdr, nil); err != nil {
			return layerError(s.layer, hdr.Name, err)
		}
	}
	if err := a.flushCache(); err != nil {
		return layerError(s.layer, "", err)
	}
	if s.next != s.files {
		return layerError(s.layer, "", fmt.Errorf("%w: %d of %d staged files placed", pullkit.ErrInvalid, s.next, s.files))
	}
	return nil
}

// The header records: what Apply reads of a header, without the data. A staged file's
// attributes are its inode's already: its record carries none, so that the merge does
// not set them (or report them skipped) again.
func writeHeader(w *bufio.Writer, hdr *tar.Header, staged bool) error {
	var b []byte
	b = append(b, hdr.Typeflag)
	if staged {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	b = binary.AppendUvarint(b, uint64(len(hdr.Name)))
	b = append(b, hdr.Name...)
	b = binary.AppendUvarint(b, uint64(len(hdr.Linkname)))
	b = append(b, hdr.Linkname...)
	for _, v := range []int64{hdr.Mode, int64(hdr.Uid), int64(hdr.Gid), hdr.Size, hdr.Devmajor, hdr.Devminor} {
		b = binary.AppendVarint(b, v)
	}
	for _, tm := range []time.Time{hdr.ModTime, hdr.AccessTime} {
		if tm.IsZero() {
			b = append(b, 0)
			continue
		}
		b = append(b, 1)
		b = binary.AppendVarint(b, tm.Unix())
		b = binary.AppendUvarint(b, uint64(tm.Nanosecond()))
	}
	var xattrs []string
	if !staged {
		for k := range hdr.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xattrs = append(xattrs, k)
			}
		}
	}
	b = binary.AppendUvarint(b, uint64(len(xattrs)))
	for _, k := range xattrs {
		v := hdr.PAXRecords[k]
		b = binary.AppendUvarint(b, uint64(len(k)))
		b = append(b, k...)
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	_, err := w.Write(b)
	return err
}

// errRecord is a header record that does not parse: the staging directory was changed
// under the merge.
var errRecord = errors.New("staged header record does not parse")

func readHeader(br *bufio.Reader) (*tar.Header, error) {
	typ, err := br.ReadByte()
	if err != nil {
		return nil, err // io.EOF between records: the end
	}
	if _, err := br.ReadByte(); err != nil {
		return nil, errRecord
	}
	str := func() (string, error) {
		n, err := binary.ReadUvarint(br)
		if err != nil || n > 1<<24 {
			return "", errRecord
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return "", errRecord
		}
		return string(b), nil
	}
	hdr := &tar.Header{Typeflag: typ}
	if hdr.Name, err = str(); err != nil {
		return nil, err
	}
	if hdr.Linkname, err = str(); err != nil {
		return nil, err
	}
	var v [6]int64
	for i := range v {
		if v[i], err = binary.ReadVarint(br); err != nil {
			return nil, errRecord
		}
	}
	hdr.Mode, hdr.Uid, hdr.Gid, hdr.Size, hdr.Devmajor, hdr.Devminor = v[0], int(v[1]), int(v[2]), v[3], v[4], v[5]
	for _, tm := range []*time.Time{&hdr.ModTime, &hdr.AccessTime} {
		set, err := br.ReadByte()
		if err != nil {
			return nil, errRecord
		}
		if set == 0 {
			continue
		}
		sec, err := binary.ReadVarint(br)
		if err != nil {
			return nil, errRecord
		}
		nsec, err := binary.ReadUvarint(br)
		if err != nil || nsec >= 1e9 {
			return nil, errRecord
		}
		*tm = time.Unix(sec, int64(nsec))
	}
	n, err := binary.ReadUvarint(br)
	if err != nil || n > 1<<20 {
		return nil, errRecord
	}
	for range n {
		k, err := str()
		if err != nil {
			return nil, err
		}
		v, err := str()
		if err != nil {
			return nil, err
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords[k] = v
	}
	return hdr, nil
}
