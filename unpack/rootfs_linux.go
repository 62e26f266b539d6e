//go:build linux

package unpack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	digest "github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/pullkit/pullkit"
)

// Rootfs builds a flattened root filesystem: the layers of an image applied one on top of
// the other, in order, into one directory, which is what build tools, scanners and
// VM-based engines want (what `umoci unpack` and `crane export` give).
//
// The tree is built under a temporary name next to the directory (".<name>.unpack-*",
// mode 0700 until committed) and renamed into place by Commit, so the directory appears
// whole or not at all. A Rootfs is for one goroutine at a time: layers must be applied in
// order, so Apply calls are serialised.
type Rootfs struct {
	mu   sync.Mutex
	dir  string
	tmp  string
	t    *tree
	err  error // the first failed Apply: the tree is half-applied and cannot be committed
	done string

	smu    sync.Mutex                // guards staged (not mu: a merge holds mu for long)
	staged map[*stagedLayer]struct{} // layers staged and not merged yet (stage_linux.go)
}

// NewRootfs starts a root filesystem to be committed as dir. dir must not exist yet (an
// error wrapping pullkit.ErrAlreadyExists says it does); its parent must.
func NewRootfs(dir string, opts ...Option) (*Rootfs, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	if len(cfg.snapshotOnly) > 0 {
		return nil, &pullkit.InvalidError{What: "option " + cfg.snapshotOnly[0], Reason: "only for OpenSnapshots"}
	}
	if dir == "" {
		return nil, &pullkit.InvalidError{What: "rootfs directory", Reason: "empty path"}
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fsErr("resolve", dir, err)
	}
	if _, err := os.Lstat(dir); err == nil {
		return nil, fmt.Errorf("%w: rootfs directory %s", pullkit.ErrAlreadyExists, quote(dir))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fsErr("stat", dir, err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".unpack-")
	if err != nil {
		return nil, fsErr("create", dir, err)
	}
	t, err := openTree(tmp, flat, cfg)
	if err != nil {
		_ = os.Remove(tmp)
		return nil, err
	}
	return &Rootfs{dir: dir, tmp: tmp, t: t, staged: map[*stagedLayer]struct{}{}}, nil
}

// Apply applies the next layer. layer is the blob's digest (for messages); diffID is the
// digest the uncompressed layer must have, or "" to compute it without a check. blob is
// the layer blob as stored (gzip, zstd or plain tar) and must return io.EOF only once the
// blob's digest has verified; any other error aborts the layer and with it the rootfs.
//
// After an error the Rootfs can only be aborted: the layer may be half applied. Errors
// are *pullkit.Error values naming the layer, with an *EntryError inside naming the entry.
func (r *Rootfs) Apply(ctx context.Context, layer, diffID digest.Digest, blob io.Reader) (Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return Result{}, layerError(layer, "", err)
	}
	res, err := r.t.apply(ctx, layer, diffID, blob)
	if err != nil {
		r.err = err
	}
	return res, err
}

func (r *Rootfs) usable() error {
	switch {
	case r.done != "":
		return &pullkit.InvalidError{What: "rootfs " + r.dir, Reason: "already " + r.done}
	case r.err != nil:
		return fmt.Errorf("rootfs %s cannot take more layers after an error: %w", quote(r.dir), r.err)
	}
	return nil
}

// Commit renames the finished root filesystem into place. It fails if an Apply failed
// or if dir was created meanwhile (pullkit.ErrAlreadyExists); then call Abort.
func (r *Rootfs) Commit() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if err := r.t.finish(); err != nil {
		return err
	}
	r.t.close()
	r.removeStaged()
	if err := unix.Renameat2(unix.AT_FDCWD, r.tmp, unix.AT_FDCWD, r.dir, unix.RENAME_NOREPLACE); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("%w: rootfs directory %s", pullkit.ErrAlreadyExists, quote(r.dir))
		}
		return fsErr("rename to", r.dir, err)
	}
	r.done = "committed"
	return nil
}

// Abort removes the temporary tree. It does nothing after Commit, so it can be deferred.
func (r *Rootfs) Abort() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done != "" {
		return nil
	}
	r.done = "aborted"
	r.t.close()
	r.removeStaged()
	return removeAllPath(r.tmp)
}

// removeStaged removes the staging directories of layers never merged.
func (r *Rootfs) removeStaged() {
	r.smu.Lock()
	left := r.staged
	r.staged = map[*stagedLayer]struct{}{}
	r.smu.Unlock()
	for s := range left {
		s.close()
		_ = removeAllPath(s.dir)
	}
}

// removeAllPath removes the directory p (a temporary tree of this package) and what is in
// it, without following symbolic links.
func removeAllPath(p string) error {
	parent, err := os.OpenFile(filepath.Dir(p), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fsErr("remove", p, err)
	}
	defer parent.Close()
	a := &applier{ctx: context.Background(), t: &tree{privileged: os.Geteuid() == 0}}
	name := filepath.Base(p)
	return a.removeTree(int(parent.Fd()), name, p)
}

// spoolDir is where a Pipeline spools layers for the rootfs: beside it, on its file
// system.
func (r *Rootfs) spoolDir() string { return filepath.Dir(r.dir) }
