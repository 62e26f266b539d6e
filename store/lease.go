package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// Files under StateDir that coordinate processes.
const (
	leasesDir = "leases"  // one file per lease, flock'ed by its holder
	gcLock    = "gc.lock" // shared by Lease.Add, exclusive for GC
)

// Lease starts a lease: a file .pullkit/leases/<id> that the lease holds an exclusive
// flock on until it is released, and that lists the digests added to it. When the
// process ends without releasing it, the lock goes with the process and the next GC
// removes the file. The lock is held by an open file: a Lease dropped without Release
// ends when the Go garbage collector reclaims it.
func (l *Layout) Lease(ctx context.Context) (Lease, error) {
	const op = pullkit.OpLease
	dir := filepath.Join(l.dir, StateDir, leasesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, &pullkit.Error{Op: op, Err: err}
	}
	var idb [16]byte
	rand.Read(idb[:])
	id := hex.EncodeToString(idb[:])
	// The file is locked before it gets its name in leases/, so that GC never sees it
	// unlocked and takes it for the lease of a process that died.
	f, err := os.CreateTemp(filepath.Join(l.dir, StateDir), "tmp-lease-*")
	if err != nil {
		return nil, &pullkit.Error{Op: op, Err: err}
	}
	if ok, err := tryLock(f, false); (err != nil && !errors.Is(err, errNoFlock)) || !ok {
		f.Close()
		os.Remove(f.Name())
		if err == nil {
			err = errors.New("new lease file " + f.Name() + " is locked")
		}
		return nil, &pullkit.Error{Op: op, Err: err}
	}
	p := filepath.Join(dir, id)
	if err := os.Rename(f.Name(), p); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, &pullkit.Error{Op: op, Err: err}
	}
	l.st.leases.Store(id, struct{}{})
	return &layoutLease{l: l, id: id, path: p, f: f}, nil
}

// layoutLease is a lease of a Layout.
type layoutLease struct {
	l    *Layout
	id   string
	path string
	mu   sync.Mutex
	f    *os.File // nil once released
}

// Add appends the digests to the lease file, under a shared lock that GC takes
// exclusively: a digest is either in the file before a GC starts, or added after it
// has finished.
func (ls *layoutLease) Add(ctx context.Context, ds ...digest.Digest) error {
	const op = pullkit.OpLease
	var b strings.Builder
	for _, d := range ds {
		if err := checkDigest(op, d); err != nil {
			return err
		}
		b.WriteString(string(d))
		b.WriteByte('\n')
	}
	ls.l.st.gc.RLock()
	defer ls.l.st.gc.RUnlock()
	g, err := lockPath(ctx, filepath.Join(ls.l.dir, StateDir, gcLock), os.O_CREATE, true)
	if err != nil {
		return &pullkit.Error{Op: op, Err: err}
	}
	defer g.Close()
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.f == nil {
		return &pullkit.Error{Op: op, Err: &pullkit.InvalidError{What: "lease", Reason: "released"}}
	}
	if _, err := ls.f.Seek(0, 2); err != nil {
		return &pullkit.Error{Op: op, Err: err}
	}
	if _, err := ls.f.WriteString(b.String()); err != nil {
		return &pullkit.Error{Op: op, Err: err}
	}
	return nil
}

// Release removes the lease file (while it is still locked) and drops the lock.
func (ls *layoutLease) Release() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.f == nil {
		return nil
	}
	err := os.Remove(ls.path)
	ls.f.Close()
	ls.f = nil
	ls.l.st.leases.Delete(ls.id)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return &pullkit.Error{Op: pullkit.OpLease, Err: err}
	}
	return nil
}

// leased returns the digests that live leases hold, and removes the files of stale
// ones (whose lock is free: their process ended without releasing them). The caller
// holds the GC lock, so no Add is under way.
func (l *Layout) leased() (held []digest.Digest, stale int, err error) {
	dir := filepath.Join(l.dir, StateDir, leasesDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, 0, err
		}
		_, ours := l.st.leases.Load(e.Name())
		free, err := tryLock(f, false)
		if errors.Is(err, errNoFlock) {
			free, err = false, nil // no way to tell: live
		}
		if err != nil {
			f.Close()
			return nil, 0, err
		}
		if free && flockWorks && !ours {
			if sameFile(f, p) && os.Remove(p) == nil {
				stale++
			}
			f.Close()
			continue
		}
		var b bytes.Buffer
		_, err = b.ReadFrom(f)
		f.Close()
		if err != nil {
			return nil, 0, err
		}
		sc := bufio.NewScanner(&b)
		for sc.Scan() {
			if d := digest.Digest(strings.TrimSpace(sc.Text())); d.Validate() == nil {
				held = append(held, d)
			}
		}
	}
	return held, stale, nil
}
