package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	// Register the hashes go-digest's algorithms need.
	_ "crypto/sha256"
	_ "crypto/sha512"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/scratch"
	"github.com/pullkit/pullkit/internal/text"
)

// Names inside a Layout's directory.
const (
	// LayoutFile is the OCI image layout's marker file.
	LayoutFile = "oci-layout"
	// IndexFile is the layout's index, which names the images.
	IndexFile = "index.json"
	// BlobsDir holds the committed blobs, as blobs/<algorithm>/<encoded digest>.
	BlobsDir = "blobs"
	// IngestDir holds the partial files of writers that were closed without committing,
	// and of writers at work. It is not part of the OCI layout (readers ignore it). A pull
	// that succeeds leaves nothing of its own there; one that failed or was interrupted
	// leaves its partial files for a later pull of the same blobs to resume, until GC
	// expires them (DefaultIngestExpiry, or WithIngestExpiry).
	IngestDir = "ingest"
	// StateDir holds the lock files and leases through which several processes share one
	// layout. It is not part of the OCI layout either.
	StateDir = ".pullkit"
	// LayoutVersion is the imageLayoutVersion written to oci-layout.
	LayoutVersion = "1.0.0"
)

// Layout is an OCI image layout directory used as a Store: committed blobs under
// blobs/<alg>/<hex>, an index.json that names images, partial transfers under ingest/,
// and locks and leases under .pullkit/. Skopeo, umoci and crane read it as is.
//
// It is safe for concurrent use by goroutines and by processes: one writer per digest
// at a time (an in-process hand-over, and a flock on the partial file across
// processes), index updates under a file lock, leases that garbage collection honours.
// Layouts of one directory opened in one process share that state.
type Layout struct {
	dir string
	o   layoutOptions
	st  *layoutState
}

// layoutState is shared by every Layout of one directory in one process.
type layoutState struct {
	writers slots        // one open writer per digest in this process
	index   mutex        // one index update at a time in this process
	gc      sync.RWMutex // Lease.Add (read) against GC (write), in this process
	leases  sync.Map     // id -> struct{}: leases held by this process
	tmpOnce sync.Once    // probe for unnamed files
	// slowDirect is when a writer last found O_DIRECT writes slower than hashing (unix
	// nanoseconds; 0: never): writers then go through the page cache for a while.
	slowDirect atomic.Int64
	tmpOK      bool      //
	dioOnce    sync.Once // probe for O_DIRECT
	dioOK      bool      //
}

var (
	layoutsMu sync.Mutex
	layouts   = map[string]*layoutState{}
)

// layoutOptions are the settings of a Layout.
type layoutOptions struct {
	direct bool
	sync   bool
}

// A LayoutOption changes how OpenLayout opens a layout. It returns an error for a value
// it cannot take.
type LayoutOption func(*layoutOptions) error

// WithDirectIO chooses whether a writer writes a blob's large aligned pieces with
// O_DIRECT where the file system accepts it (the default): they go to the disk without
// passing through the page cache, whose pages must first be allocated, which is what a
// fast transfer would otherwise wait for. A later reader then reads from the disk; on a
// disk slower than the network, turn it off.
func WithDirectIO(on bool) LayoutOption {
	return func(o *layoutOptions) error { o.direct = on; return nil }
}

// WithSync chooses whether a blob is made durable (fsync of the file, then of its
// directory) before it gets its name, so that a name survives a power cut with its
// content. Off by default: a lost blob is fetched again, and Check finds a damaged one.
func WithSync(on bool) LayoutOption {
	return func(o *layoutOptions) error { o.sync = on; return nil }
}

// OpenLayout opens the OCI image layout in dir, creating it (the directory, oci-layout,
// an empty index.json, blobs/sha256/) when dir is absent or empty. An existing layout
// must have an oci-layout of version 1.x and an index.json that is a JSON object. A
// directory that holds other files and no oci-layout is refused, so that a mistyped
// path is not turned into a store. Errors about the directory wrap pullkit.ErrInvalid.
func OpenLayout(dir string, opts ...LayoutOption) (*Layout, error) {
	o := layoutOptions{direct: true}
	for _, opt := range opts {
		if opt == nil {
			return nil, layoutErr(dir, &pullkit.InvalidError{What: "layout option", Reason: "nil"})
		}
		if err := opt(&o); err != nil {
			return nil, layoutErr(dir, err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, layoutErr(dir, err)
	}
	if err := checkLayoutDir(abs); err != nil {
		return nil, err
	}
	for _, d := range []string{filepath.Join(abs, StateDir), filepath.Join(abs, BlobsDir, string(digest.SHA256)), filepath.Join(abs, IngestDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, layoutErr(abs, err)
		}
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	l := &Layout{dir: abs, o: o}
	layoutsMu.Lock()
	l.st = layouts[abs]
	if l.st == nil {
		l.st = &layoutState{index: newMutex()}
		layouts[abs] = l.st
	}
	layoutsMu.Unlock()

	if err := l.initFile(LayoutFile, []byte(`{"imageLayoutVersion":"`+LayoutVersion+`"}`), checkLayoutFile); err != nil {
		return nil, err
	}
	if err := l.initFile(IndexFile, emptyIndex(), func(b []byte) error { _, err := parseIndex(b); return err }); err != nil {
		return nil, err
	}
	return l, nil
}

func layoutErr(dir string, err error) error {
	return &pullkit.Error{Op: pullkit.OpOpenStore, Detail: cleanPath(dir), Err: err}
}

// cleanPath makes a path printable.
func cleanPath(p string) string { return text.Clean(p, 400) }

// checkLayoutDir refuses a path that is not a directory, and a directory that is
// neither empty nor a layout (nor one being created: its entries are all ours).
func checkLayoutDir(dir string) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return layoutErr(dir, err)
	}
	if !fi.IsDir() {
		return layoutErr(dir, &pullkit.InvalidError{What: "layout directory", Reason: "not a directory"})
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return layoutErr(dir, err)
	}
	var foreign []string
	for _, e := range entries {
		switch e.Name() {
		case LayoutFile:
			return nil
		case IndexFile, BlobsDir, IngestDir, StateDir:
		default:
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		return layoutErr(dir, &pullkit.InvalidError{What: "layout directory", Reason: fmt.Sprintf("no %s file, and not empty (holds %s)", LayoutFile, text.Clean(strings.Join(foreign[:min(len(foreign), 3)], ", "), 200))})
	}
	return nil
}

// initFile checks the layout file name with check, or creates it with content when it
// is absent. Creation links a complete temporary file into place, so that a process
// never reads a half-written file and never replaces one another process made first.
func (l *Layout) initFile(name string, content []byte, check func([]byte) error) error {
	p := filepath.Join(l.dir, name)
	for range 2 {
		b, err := os.ReadFile(p)
		switch {
		case err == nil:
			if err := check(b); err != nil {
				return layoutErr(l.dir, &pullkit.InvalidError{What: name, Reason: "unreadable", Err: err})
			}
			return nil
		case errors.Is(err, fs.ErrNotExist):
			tmp, err := l.writeTemp(content)
			if err != nil {
				return layoutErr(l.dir, err)
			}
			err = os.Link(tmp, p)
			os.Remove(tmp)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				return layoutErr(l.dir, err)
			}
		default:
			return layoutErr(l.dir, err)
		}
	}
	return nil
}

func checkLayoutFile(b []byte) error {
	var f struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	if !strings.HasPrefix(f.Version, "1.") {
		return fmt.Errorf("imageLayoutVersion %q, want 1.x", text.Clean(f.Version, 40))
	}
	return nil
}

// writeTemp writes data to a new file in .pullkit/ (readable by all) and returns its
// name.
func (l *Layout) writeTemp(data []byte) (string, error) {
	dir := filepath.Join(l.dir, StateDir)
	f, err := os.CreateTemp(dir, "tmp-*")
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(dir, 0o755); err == nil {
			f, err = os.CreateTemp(dir, "tmp-*")
		}
	}
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// writeAtomic replaces path with a file holding data (temporary file and rename).
func (l *Layout) writeAtomic(path string, data []byte) error {
	tmp, err := l.writeTemp(data)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// Dir returns the layout's directory (absolute, symbolic links resolved).
func (l *Layout) Dir() string { return l.dir }

// Path returns the file of blob d, <dir>/blobs/<alg>/<encoded>, whether or not the
// layout holds it, for tools that need a file. It returns "" when d is not a valid
// digest of an available algorithm, so a digest from the network can never name a path
// outside blobs/.
func (l *Layout) Path(d digest.Digest) string {
	if d.Validate() != nil {
		return ""
	}
	return filepath.Join(l.dir, BlobsDir, string(d.Algorithm()), d.Encoded())
}

// partialPath is where a writer of d keeps its bytes between processes.
func (l *Layout) partialPath(d digest.Digest) string {
	return filepath.Join(l.dir, IngestDir, string(d.Algorithm())+"-"+d.Encoded()+".partial")
}

// Info describes blob d. Files get their names only once verified, so a file under
// blobs/ is a committed blob (Check finds one damaged later).
func (l *Layout) Info(ctx context.Context, d digest.Digest) (Info, error) {
	if err := checkDigest("stat blob", d); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(l.Path(d))
	if err == nil && !fi.Mode().IsRegular() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return Info{}, statErr(pullkit.OpStatBlob, d, err)
	}
	return Info{Digest: d, Size: fi.Size(), Committed: changeTime(fi)}, nil
}

// statErr turns a missing file into pullkit.ErrNotFound.
func statErr(op string, d digest.Digest, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return blobErr(op, d, pullkit.ErrNotFound)
	}
	return blobErr(op, d, err)
}

// ReaderAt opens blob d for reading.
func (l *Layout) ReaderAt(ctx context.Context, d digest.Digest) (ReaderAt, error) {
	if err := checkDigest("open blob", d); err != nil {
		return nil, err
	}
	f, err := os.Open(l.Path(d))
	if err != nil {
		return nil, statErr(pullkit.OpReadBlob, d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, blobErr(pullkit.OpReadBlob, d, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, blobErr(pullkit.OpReadBlob, d, pullkit.ErrNotFound)
	}
	return &fileReader{File: f, size: fi.Size()}, nil
}

// fileReader is a committed blob's file.
type fileReader struct {
	*os.File
	size int64
}

func (r *fileReader) Size() int64 { return r.size }

// Walk calls fn for every committed blob, directory by directory; files under blobs/
// whose names are not digests are skipped.
func (l *Layout) Walk(ctx context.Context, fn func(Info) error) error {
	algs, err := os.ReadDir(filepath.Join(l.dir, BlobsDir))
	if err != nil {
		return &pullkit.Error{Op: pullkit.OpWalkBlobs, Detail: "of " + cleanPath(l.dir), Err: err}
	}
	for _, a := range algs {
		alg := digest.Algorithm(a.Name())
		if !a.IsDir() || !alg.Available() {
			continue
		}
		dir := filepath.Join(l.dir, BlobsDir, a.Name())
		entries, err := os.ReadDir(dir)
		if err != nil {
			return &pullkit.Error{Op: pullkit.OpWalkBlobs, Detail: "of " + cleanPath(l.dir), Err: err}
		}
		for _, e := range entries {
			if err := ctx.Err(); err != nil {
				return err
			}
			d := digest.NewDigestFromEncoded(alg, e.Name())
			if d.Validate() != nil || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // deleted meanwhile
			}
			if err != nil {
				return blobErr(pullkit.OpWalkBlobs, d, err)
			}
			if err := fn(Info{Digest: d, Size: fi.Size(), Committed: changeTime(fi)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Delete removes blob d. Names pointing at it are left as they are: use DeleteImage
// and GC to remove an image.
func (l *Layout) Delete(ctx context.Context, d digest.Digest) error {
	if err := checkDigest("delete blob", d); err != nil {
		return err
	}
	if err := os.Remove(l.Path(d)); err != nil {
		return statErr(pullkit.OpDeleteBlob, d, err)
	}
	return nil
}

// tmpfileOK reports whether unnamed files can be created in ingest/ and linked into the
// layout; it is probed once per directory and process.
func (l *Layout) tmpfileOK() bool {
	l.st.tmpOnce.Do(func() {
		f, err := scratch.Unnamed(filepath.Join(l.dir, IngestDir))
		if err != nil {
			return
		}
		defer f.Close()
		probe := filepath.Join(l.dir, StateDir, fmt.Sprintf("probe-%d-%p", os.Getpid(), f))
		if linkTmpfile(f, probe) == nil {
			os.Remove(probe)
			l.st.tmpOK = true
		}
	})
	return l.st.tmpOK
}

// directOK reports whether the layout's file system takes O_DIRECT writes (tmpfs before
// Linux 6.6, some FUSE and network file systems do not); it is probed once per
// directory and process, by writing one aligned block to a scratch file.
func (l *Layout) directOK() bool {
	l.st.dioOnce.Do(func() {
		f, err := os.CreateTemp(filepath.Join(l.dir, StateDir), "probe-*")
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
