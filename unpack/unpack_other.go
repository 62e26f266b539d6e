//go:build !linux

package unpack

import (
	"context"
	"io"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// The unpacker resolves names with openat2 and the *at system calls of Linux; elsewhere
// every entry point says so.
var errNotLinux = &pullkit.UnsupportedError{What: "unpack", Reason: "layers are applied on Linux only"}

// Rootfs builds a flattened root filesystem (Linux only).
type Rootfs struct{}

// NewRootfs fails: layers are applied on Linux only.
func NewRootfs(dir string, opts ...Option) (*Rootfs, error) { return nil, errNotLinux }

// Apply fails: layers are applied on Linux only.
func (r *Rootfs) Apply(ctx context.Context, layer, diffID digest.Digest, blob io.Reader) (Result, error) {
	return Result{}, errNotLinux
}

// Commit fails: layers are applied on Linux only.
func (r *Rootfs) Commit() error { return errNotLinux }

// Abort does nothing.
func (r *Rootfs) Abort() error { return nil }

// Snapshots is a directory of overlayfs snapshots (Linux only).
type Snapshots struct{}

// OpenSnapshots fails: layers are applied on Linux only.
func OpenSnapshots(dir string, opts ...Option) (*Snapshots, error) { return nil, errNotLinux }

// Path returns "".
func (s *Snapshots) Path(chainID digest.Digest) string { return "" }

// Has returns false.
func (s *Snapshots) Has(chainID digest.Digest) bool { return false }

// Apply fails: layers are applied on Linux only.
func (s *Snapshots) Apply(ctx context.Context, parent, layer, diffID digest.Digest, blob io.Reader) (Result, error) {
	return Result{}, errNotLinux
}

func (r *Rootfs) spoolDir() string    { return "" }
func (s *Snapshots) spoolDir() string { return "" }
