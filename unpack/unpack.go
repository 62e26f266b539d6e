package unpack

import (
	"errors"
	"fmt"
	"math"
	"slices"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
	"github.com/pullkit/pullkit/manifest"
)

// Result says what applying one layer did.
type Result struct {
	// DiffID is the digest of the layer's uncompressed tar, as computed while it streamed.
	DiffID digest.Digest
	// ChainID is the chain ID of the snapshot (Snapshots only).
	ChainID digest.Digest
	// Reused is true when a snapshot for ChainID was already there (or was made by a
	// concurrent Apply), so nothing was unpacked (Snapshots only).
	Reused bool
	// Entries is how many tar entries the layer had, whiteouts included.
	Entries int
	// Skipped lists, up to 100 of them, what could not be made and was left out: device
	// nodes the process may not create, attributes the file system refuses or a layer
	// may not set, archive entries that mean nothing here (aufs metadata).
	Skipped []Skip
	// MoreSkipped counts what was skipped beyond the ones listed.
	MoreSkipped int
	// Size is the layer's uncompressed size (the tar stream the diffID covers).
	Size int64
	// Stages says where the layer's time went (Fetch only through a Pipeline).
	Stages pullkit.Stages
}

// maxSkipped bounds Result.Skipped, so that a layer of a million device nodes does not
// make a result of a million lines.
const maxSkipped = 100

// Skip is one thing a layer asked for that was left out.
type Skip struct {
	// Entry is the name of the tar entry, as in the archive.
	Entry string
	// Reason says what was skipped and why, e.g. "char device 1:3: operation not permitted".
	Reason string
}

func (r *Result) skip(entry, reason string) {
	if len(r.Skipped) >= maxSkipped {
		r.MoreSkipped++
		return
	}
	r.Skipped = append(r.Skipped, Skip{Entry: entry, Reason: reason})
}

// EntryError names the tar entry an error is about. It is the cause inside the
// *pullkit.Error that Apply returns (which names the layer digest); its own cause wraps a
// pullkit sentinel. Entry is "" when no entry was being read (the error came before the
// first one or after the last).
type EntryError struct {
	// Entry is the entry's name as in the archive (unescaped; Error escapes it).
	Entry string
	// Err is the cause.
	Err error
	// after is set when the error came reading the archive after Entry.
	after bool
}

// Error names the entry (escaped) and gives the cause.
func (e *EntryError) Error() string {
	switch {
	case e.after && e.Entry != "":
		return fmt.Sprintf("after entry %q: %v", text.Clean(e.Entry, 200), e.Err)
	case e.Entry == "":
		return e.Err.Error()
	}
	return fmt.Sprintf("entry %q: %v", text.Clean(e.Entry, 200), e.Err)
}

// Unwrap returns the cause.
func (e *EntryError) Unwrap() error { return e.Err }

// layerError wraps err for the layer and the entry, in the module's vocabulary.
func layerError(layer digest.Digest, entry string, err error) error {
	if err == nil {
		return nil
	}
	var pe *pullkit.Error
	if errors.As(err, &pe) && pe.Op == opUnpack {
		return err
	}
	var ee *EntryError
	if !errors.As(err, &ee) {
		err = &EntryError{Entry: entry, Err: err}
	}
	return &pullkit.Error{Op: opUnpack, Digest: layer, Err: err}
}

const opUnpack = pullkit.OpUnpack

// invalid reports an archive entry that cannot be applied safely or makes no sense.
func invalid(reason string, args ...any) error {
	return &pullkit.InvalidError{What: "layer entry", Reason: fmt.Sprintf(reason, args...)}
}

// ChainID returns the chain ID of a layer whose diffID is diffID on top of the layers
// whose chain ID is parent ("" for a base layer), as the OCI image spec defines it: a
// base layer's chain ID is its diffID, and every other is the SHA-256 of
// "<parent chain ID> <diffID>". It names a snapshot, because a snapshot holds one layer
// applied on top of exactly those below it.
func ChainID(parent, diffID digest.Digest) digest.Digest {
	if parent == "" {
		return diffID
	}
	// A stack's first chain ID is its first entry, so the chain of (parent, diffID) is
	// the step manifest.ChainIDs takes: one definition of the formula for the module.
	return manifest.ChainIDs([]digest.Digest{parent, diffID})[1]
}

// IDMap maps a range of user or group IDs in the image to IDs on the host:
// ContainerID+i becomes HostID+i for i < Size.
type IDMap struct {
	// ContainerID is the first ID of the range as the image records it.
	ContainerID uint32
	// HostID is the ID ContainerID becomes on the host.
	HostID uint32
	// Size is how many IDs the range holds.
	Size uint32
}

// Option configures a Rootfs or Snapshots. Options check their values: a bad one makes
// NewRootfs or OpenSnapshots fail with an error wrapping pullkit.ErrInvalid.
type Option func(*config) error

type config struct {
	uids, gids []IDMap
	// xattrNS is "trusted" or "user" for the overlay whiteout attributes; "" probes.
	xattrNS string
	// snapshotOnly names the snapshot-only options given, for NewRootfs to refuse.
	snapshotOnly []string
	// xattrWhiteouts makes snapshots record whiteouts as files with an attribute, as
	// when 0/0 devices cannot be made (for tests).
	xattrWhiteouts bool
}

// WithIDMap maps the ownership recorded in the layers through uids and gids before it is
// applied, as a rootless engine or one with user-namespace remapping needs: every file
// is chowned to the mapped IDs, and an ID outside every range is an error. Ranges must be
// non-empty, must not wrap around, and their container sides must not overlap. Without
// this option ownership is kept as in the archive when the process runs as root and
// left to the caller otherwise.
func WithIDMap(uids, gids []IDMap) Option {
	return func(c *config) error {
		for _, m := range [][]IDMap{uids, gids} {
			if err := checkIDMap(m); err != nil {
				return err
			}
		}
		if len(uids) == 0 || len(gids) == 0 {
			return &pullkit.InvalidError{What: "option WithIDMap", Reason: "needs at least one uid and one gid range"}
		}
		c.uids, c.gids = slices.Clone(uids), slices.Clone(gids)
		return nil
	}
}

func checkIDMap(m []IDMap) error {
	for i, r := range m {
		if r.Size == 0 {
			return &pullkit.InvalidError{What: "option WithIDMap", Reason: fmt.Sprintf("range %d is empty", i)}
		}
		if uint64(r.ContainerID)+uint64(r.Size) > math.MaxUint32+1 || uint64(r.HostID)+uint64(r.Size) > math.MaxUint32+1 {
			return &pullkit.InvalidError{What: "option WithIDMap", Reason: fmt.Sprintf("range %d runs past 2^32", i)}
		}
		for j, o := range m[:i] {
			if r.ContainerID < o.ContainerID+o.Size && o.ContainerID < r.ContainerID+r.Size {
				return &pullkit.InvalidError{What: "option WithIDMap", Reason: fmt.Sprintf("ranges %d and %d overlap", j, i)}
			}
		}
	}
	return nil
}

// mapID maps id through m; ok is false when no range holds it.
func mapID(m []IDMap, id int) (int, bool) {
	if id < 0 || id > math.MaxUint32 {
		return 0, false
	}
	for _, r := range m {
		if uint32(id) >= r.ContainerID && uint64(id) < uint64(r.ContainerID)+uint64(r.Size) {
			return int(r.HostID + (uint32(id) - r.ContainerID)), true
		}
	}
	return 0, false
}

// WithOverlayXattrs chooses the extended attributes a snapshot marks opaque directories
// (and, where a 0/0 character device cannot be made, whiteouts) with: "trusted" for
// trusted.overlay.*, which overlayfs reads by default and only a privileged process may
// set, or "user" for user.overlay.*, which overlayfs reads when mounted with the userxattr
// option (rootless). By default OpenSnapshots uses "trusted" when it can set such an
// attribute and "user" otherwise. Only for OpenSnapshots.
func WithOverlayXattrs(namespace string) Option {
	return func(c *config) error {
		if namespace != "trusted" && namespace != "user" {
			return &pullkit.InvalidError{What: "option WithOverlayXattrs", Reason: fmt.Sprintf("namespace %q is neither \"trusted\" nor \"user\"", namespace)}
		}
		c.xattrNS = namespace
		c.snapshotOnly = append(c.snapshotOnly, "WithOverlayXattrs")
		return nil
	}
}

// withXattrWhiteouts makes snapshots use the attribute form of whiteouts, which a process
// that may not make a 0/0 device falls back to. Tests use it to check that form.
func withXattrWhiteouts() Option {
	return func(c *config) error { c.xattrWhiteouts = true; return nil }
}

func newConfig(opts []Option) (*config, error) {
	c := &config{}
	for _, o := range opts {
		if o == nil {
			return nil, &pullkit.InvalidError{What: "option", Reason: "nil Option"}
		}
		if err := o(c); err != nil {
			return nil, err
		}
	}
	return c, nil
}
