// Package unpack applies image layers to a directory: a flattened root filesystem
// ([Rootfs]), or one overlayfs snapshot per layer keyed by chain ID ([Snapshots]).
//
// It is a package of its own because applying layers is neither transfer nor storage:
// it reads a layer blob as a stream (so it can run while the blob downloads) and writes
// a tree of files, and nothing else in pullkit writes outside its own store. It is also
// the most security-sensitive code an engine has: every engine that unpacks tars has
// shipped path-escape bugs in it (symlinks and hardlinks leading out, ".." names,
// whiteouts that remove host files, chmod through a symlink). Keeping it small and
// apart lets it be read and tested on its own.
//
// # What a layer does to the tree
//
// A layer is a tar archive, gzip- or zstd-compressed or not; the compression is read from
// the blob's first bytes, not from a media type. Entries are applied in order with the
// OCI image-spec semantics: a file replaces what was at its name (a directory over a
// directory is merged), ".wh.NAME" removes NAME from the layers below, ".wh..wh..opq"
// hides everything the layers below have in its directory, and whiteouts never remove
// what the same layer writes, whichever comes first in the archive. Regular files (with
// holes where the data is zero), directories, symbolic links, hard links (within the layer
// and, for a root filesystem, to lower layers), FIFOs and device nodes are made, with their
// mode (setuid, setgid and sticky bits included), modification time (set on directories
// after their children), extended attributes where the file system takes them, and
// ownership: the archive's when the process runs as root, mapped when [WithIDMap] is
// given, else the caller's. What the process may not create (device nodes without
// CAP_MKNOD, attributes the file system refuses) is skipped and listed in [Result], not
// an error.
//
// # Nothing outside the target
//
// Every entry name and link target is resolved inside the target as if it were "/"
// (chroot semantics, as openat2 with RESOLVE_IN_ROOT gives): absolute names and absolute
// symbolic links land inside, ".." stops at the top, a symbolic link made by an earlier
// entry or layer is followed inside, never out. The last component of a name is never
// followed. Resolution works on directory file descriptors (the *at system calls, through
// github.com/cyphar/filepath-securejoin), not path strings, so a symbolic link swapped in
// between a check and a use cannot redirect a write. A hard link to a symbolic link whose
// target climbs above the top is refused, and so is anything that cannot be resolved
// inside (a symlink loop, say): the error names the layer and the entry.
//
// # Streams and verification
//
// Apply reads the layer blob as it arrives and computes its diffID (the digest of the
// uncompressed tar) on the way, checking it against the one expected. The reader passed
// in must return io.EOF only once the blob's own digest has verified, and any other error
// aborts the layer: so a tree whose stream did not end in EOF, or whose diffID did not
// match, never gets its final name. A root filesystem is built under a temporary name
// next to its directory and renamed into place by Commit; a snapshot is built under a
// temporary name and renamed to its chain ID when its layer verifies.
//
// Memory does not grow with the size of a layer or of its files. What does grow while a
// layer is applied, by a small constant per entry (a 128-bit hash of each path, never
// the path), is the set of paths that layer has written, which its whiteouts must
// spare. Names may go 4096 directories deep. Every loop checks the context, also between reads
// of a decompressor, so a layer that expands without end is cancelled like any other.
package unpack
