//go:build linux

package unpack

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// Snapshots is a directory of overlayfs snapshots, one per layer, each named by its chain
// ID: <dir>/<algorithm>/<hex> holds the files of one layer, with its whiteouts as
// overlayfs reads them in a lower directory (0/0 character devices, and opaque
// directories marked with the trusted.overlay.opaque attribute, or user.overlay.opaque;
// see WithOverlayXattrs). An engine mounts an image as overlay with the snapshots of its
// chain IDs as lowerdirs, top layer first. A base layer shared by several images is
// unpacked once.
//
// Each snapshot is one layer unpacked on its own, into a temporary directory in dir that
// is renamed to the chain ID once the layer verified, so snapshots of different layers
// may be applied concurrently, in any order. Names resolve inside the snapshot alone: a
// layer that writes through a symbolic link of a lower layer, or hard-links a lower
// layer's file, cannot be represented this way (the second is an error wrapping
// pullkit.ErrUnsupported); layers made by diffing overlay upper directories, as image
// builders do, never need either. For the same reason a directory that a layer writes
// into without listing it gets mode 0755 and root's ownership in that layer's snapshot,
// which overlayfs shows for the merged directory. Temporary directories (".tmp-*") left
// by a process that died are not removed by OpenSnapshots.
type Snapshots struct {
	dir string
	cfg *config
	mu  sync.Mutex
	// busy holds the chain IDs being applied, so that a second Apply of one waits for the
	// first and reuses its snapshot rather than unpacking the layer twice.
	busy map[digest.Digest]chan struct{}
}

// OpenSnapshots opens (creating it, mode 0700, if needed) the snapshot directory dir.
func OpenSnapshots(dir string, opts ...Option) (*Snapshots, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, &pullkit.InvalidError{What: "snapshot directory", Reason: "empty path"}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fsErr("resolve", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fsErr("create", dir, err)
	}
	if cfg.xattrNS == "" {
		cfg.xattrNS = probeXattrNS(dir)
	}
	return &Snapshots{dir: dir, cfg: cfg, busy: map[digest.Digest]chan struct{}{}}, nil
}

// probeXattrNS says which overlay attributes this process can set in dir: "trusted" when
// privileged, "user" otherwise.
func probeXattrNS(dir string) string {
	tmp, err := os.MkdirTemp(dir, ".probe-")
	if err != nil {
		return "user"
	}
	defer os.Remove(tmp)
	if unix.Setxattr(tmp, "trusted.overlay.opaque", []byte("y"), 0) == nil {
		return "trusted"
	}
	return "user"
}

// Path returns the directory of the snapshot for chainID (which may not exist yet), or ""
// when chainID is not a valid digest.
func (s *Snapshots) Path(chainID digest.Digest) string {
	if chainID.Validate() != nil {
		return ""
	}
	return filepath.Join(s.dir, chainID.Algorithm().String(), chainID.Encoded())
}

// Has reports whether the snapshot for chainID is there (and so complete: snapshots get
// their name only once verified).
func (s *Snapshots) Has(chainID digest.Digest) bool {
	p := s.Path(chainID)
	if p == "" {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// Apply makes the snapshot of one layer: parent is the chain ID of the layers below ("" for
// a base layer), layer the blob's digest (for messages), diffID the digest the
// uncompressed layer must have ("" to compute it: then the chain ID is known, and a
// snapshot reused, only once the layer has been read). blob is the layer blob as stored
// (gzip, zstd or plain tar) and must return io.EOF only once the blob's digest has
// verified; any other error aborts the snapshot, and nothing is left under a chain ID.
//
// When the snapshot is already there, Apply returns at once with Reused set and does not
// read blob: an engine checks Has first to skip the download too.
func (s *Snapshots) Apply(ctx context.Context, parent, layer, diffID digest.Digest, blob io.Reader) (Result, error) {
	for what, d := range map[string]digest.Digest{"parent chain ID": parent, "diffID": diffID} {
		if d == "" {
			continue
		}
		if err := d.Validate(); err != nil {
			return Result{}, layerError(layer, "", &pullkit.InvalidError{What: what, Reason: string(d), Err: err})
		}
	}
	if diffID != "" {
		chain := ChainID(parent, diffID)
		reused, release, err := s.claim(ctx, chain)
		if err != nil {
			return Result{}, layerError(layer, "", err)
		}
		if reused {
			return Result{DiffID: diffID, ChainID: chain, Reused: true}, nil
		}
		defer release()
	}
	tmp, err := os.MkdirTemp(s.dir, ".tmp-")
	if err != nil {
		return Result{}, layerError(layer, "", fsErr("create", s.dir, err))
	}
	t, err := openTree(tmp, overlay, s.cfg)
	if err != nil {
		_ = os.Remove(tmp)
		return Result{}, layerError(layer, "", err)
	}
	t.xattrNS = s.cfg.xattrNS
	committed := false
	defer func() {
		t.close()
		if !committed {
			_ = removeAllPath(tmp)
		}
	}()
	res, err := t.apply(ctx, layer, diffID, blob)
	if err != nil {
		return res, err
	}
	if err := t.finish(); err != nil {
		return res, layerError(layer, "", err)
	}
	res.ChainID = ChainID(parent, res.DiffID)
	final := s.Path(res.ChainID)
	if err := os.Mkdir(filepath.Dir(final), 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return res, layerError(layer, "", fsErr("create", filepath.Dir(final), err))
	}
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		committed = true
	case errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY):
		res.Reused = true // made meanwhile by another process: the same content
	default:
		return res, layerError(layer, "", fsErr("rename to", final, err))
	}
	return res, nil
}

// claim waits until no other Apply of this Snapshots is making chain, then says whether
// the snapshot is there; if not, the caller makes it and calls release when done.
func (s *Snapshots) claim(ctx context.Context, chain digest.Digest) (reused bool, release func(), err error) {
	for {
		if s.Has(chain) {
			return true, nil, nil
		}
		s.mu.Lock()
		ch, busy := s.busy[chain]
		if !busy {
			ch = make(chan struct{})
			s.busy[chain] = ch
			s.mu.Unlock()
			return false, func() {
				s.mu.Lock()
				delete(s.busy, chain)
				s.mu.Unlock()
				close(ch)
			}, nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return false, nil, ctx.Err()
		}
	}
}

// spoolDir is where a Pipeline spools layers for the snapshots.
func (s *Snapshots) spoolDir() string { return s.dir }
