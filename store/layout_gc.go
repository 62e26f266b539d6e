package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// tmpExpiry is the age after which GC removes temporary files a crashed process left
// in .pullkit/ (they live for the few system calls of an index update or a lease's
// start).
const tmpExpiry = time.Hour

// GC removes every committed blob that no entry of index.json reaches (named or not:
// index -> manifests -> config and layers, schema 1's fsLayers) and no live lease
// holds, then expires partial ingests that no writer holds. A lease whose process died
// is stale: its file is removed and holds nothing. GC holds the GC lock (which
// Lease.Add shares) and the index lock throughout, so a digest is either in a lease
// before it starts or added after it has finished, and no name is written meanwhile.
//
// A manifest that manifest.Parse cannot read (an artifact, a schema 1 whose signature
// fails, a format to come) is searched for anything that looks like a reference
// instead, and files under blobs/ whose names are not digests are left alone: GC only
// removes what it has a reason to.
func (l *Layout) GC(ctx context.Context, opts ...GCOption) (GCResult, error) {
	const op = pullkit.OpGC
	var res GCResult
	o, err := gcConfig(opts)
	if err != nil {
		return res, err
	}
	l.st.gc.Lock()
	defer l.st.gc.Unlock()
	g, err := lockPath(ctx, filepath.Join(l.dir, StateDir, gcLock), os.O_CREATE, false)
	if err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}
	defer g.Close()
	unlock, err := l.lockIndex(ctx)
	if err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}
	defer unlock()

	raw, err := os.ReadFile(filepath.Join(l.dir, IndexFile))
	if err == nil {
		_, err = parseIndex(raw)
	}
	if err != nil {
		// Without the index, every blob would look unreachable.
		return res, &pullkit.Error{Op: op, Err: &pullkit.InvalidError{What: "index " + cleanPath(filepath.Join(l.dir, IndexFile)), Reason: "unreadable", Err: err}}
	}
	held, stale, err := l.leased()
	if err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}
	res.Leases = stale

	m := newMarker(func(d digest.Digest) ([]byte, error) { return ReadBlob(ctx, l, d, manifestLimit) })
	refs(raw, func(d digest.Digest, _ bool) { m.walk(d) })
	for _, d := range held {
		m.walk(d)
	}
	if err := m.run(ctx); err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}

	var garbage []Info
	if err := l.Walk(ctx, func(i Info) error {
		if !m.marked[i.Digest] {
			garbage = append(garbage, i)
		}
		return nil
	}); err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}
	for _, i := range garbage {
		if err := l.Delete(ctx, i.Digest); err != nil {
			if isNotFound(err) {
				continue
			}
			return res, pullkit.Wrap("", op, "", err)
		}
		res.Blobs = append(res.Blobs, i.Digest)
		res.Bytes += i.Size
	}
	sortDigests(res.Blobs)

	if err := l.expireIngests(ctx, o, &res); err != nil {
		return res, &pullkit.Error{Op: op, Err: err}
	}
	l.removeOldTemps()
	return res, nil
}

// ingestVisit says what walkIngest does with each kind of file in ingest/.
type ingestVisit struct {
	// orphan is called for a record of held stretches whose partial file is gone.
	orphan func(p string, e fs.DirEntry)
	// other is called for a file that is neither a partial nor a record (an older
	// pullkit's temporary files, say).
	other func(p string, e fs.DirEntry)
	// free is called for a partial file that no writer holds, open and locked (so that
	// no writer takes it meanwhile) for as long as free runs.
	free func(p string, f *os.File)
}

// walkIngest calls v's functions (those not nil) for the regular files of ingest/,
// honouring ctx between them. A missing ingest/ is empty.
func (l *Layout) walkIngest(ctx context.Context, v ingestVisit) error {
	dir := filepath.Join(l.dir, IngestDir)
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := filepath.Join(dir, e.Name())
		switch {
		case !e.Type().IsRegular():
		case strings.HasSuffix(e.Name(), recordSuffix):
			partial := strings.TrimSuffix(p, recordSuffix) + ".partial"
			if _, err := os.Lstat(partial); errors.Is(err, fs.ErrNotExist) && v.orphan != nil {
				v.orphan(p, e)
			}
		case !strings.HasSuffix(e.Name(), ".partial"):
			if v.other != nil {
				v.other(p, e)
			}
		case v.free != nil:
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				continue // committed or removed meanwhile
			}
			if free, err := tryLock(f, false); free && err == nil && sameFile(f, p) {
				v.free(p, f)
			}
			f.Close()
		}
	}
	return nil
}

// expireIngests removes the files of ingest/ that no writer holds and that were last
// written longer ago than the expiry. A partial's record goes with its partial; one whose
// partial is gone, by age (a writer at work keeps its record fresh); anything else in
// ingest/, by age alone.
func (l *Layout) expireIngests(ctx context.Context, o gcOptions, res *GCResult) error {
	now := time.Now()
	return l.walkIngest(ctx, ingestVisit{
		orphan: func(p string, e fs.DirEntry) {
			if fi, err := e.Info(); err == nil && o.expired(fi.ModTime(), now) {
				os.Remove(p)
			}
		},
		other: func(p string, e fs.DirEntry) {
			if fi, err := e.Info(); err == nil && o.expired(fi.ModTime(), now) && os.Remove(p) == nil {
				res.Ingests++
				res.IngestBytes += fi.Size()
			}
		},
		free: func(p string, f *os.File) {
			if fi, err := f.Stat(); err == nil && o.expired(fi.ModTime(), now) {
				held := partialBytes(p, fi.Size())
				os.Remove(recordPath(p))
				if os.Remove(p) == nil {
					res.Ingests++
					res.IngestBytes += held
				}
			}
		},
	})
}

// partialBytes is how many bytes of the blob the partial file p of length n holds: its
// length, or what its record lists.
func partialBytes(p string, n int64) int64 {
	if rec, found, _, err := readRecord(p, n); err == nil && found {
		return rec.Total()
	}
	return n
}

// checkIngests looks at every partial ingest that no writer holds: a record that does
// not read whole (a torn or damaged line), or that lists bytes past its partial file,
// is damaged, and so is a record without a partial; with repair, the first is rewritten
// to what it validly lists and the second removed. A writer would do the same when it
// takes the partial over; Check says so beforehand.
func (l *Layout) checkIngests(ctx context.Context, repair bool, res *CheckResult) error {
	return l.walkIngest(ctx, ingestVisit{
		orphan: func(p string, _ fs.DirEntry) {
			res.PartialsDamaged++
			if repair && os.Remove(p) == nil {
				res.PartialsRepaired++
			}
		},
		free: func(p string, f *os.File) {
			res.Partials++
			fi, err := f.Stat()
			if err != nil {
				return
			}
			raw, err := os.ReadFile(recordPath(p))
			if err != nil {
				return
			}
			rec, valid := parseRecord(raw, fi.Size())
			full, _ := parseRecord(raw, 1<<62)
			if !valid || !slices.Equal(rec, full) {
				res.PartialsDamaged++
				if repair {
					if rf, err := writeRecord(p, rec, l.o.sync); err == nil {
						rf.Close()
						res.PartialsRepaired++
					}
				}
			}
		},
	})
}

// removeOldTemps removes temporary files that crashed processes left in .pullkit/.
func (l *Layout) removeOldTemps() {
	dir := filepath.Join(l.dir, StateDir)
	entries, _ := os.ReadDir(dir)
	now := time.Now()
	for _, e := range entries {
		if !e.Type().IsRegular() || !(strings.HasPrefix(e.Name(), "tmp-") || strings.HasPrefix(e.Name(), "probe-")) {
			continue
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) > tmpExpiry {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Check hashes every committed blob again (through a bounded buffer, honouring ctx) and
// reports those whose content does not match their name: truncated or damaged on disk.
// With repair, it removes them, so that a later pull fetches them again. It also looks
// at the partial ingests no writer holds: a record of held stretches that is torn,
// damaged or lists bytes its partial file lacks (or has no partial) is reported, and
// with repair rewritten to what it validly lists (or removed).
func (l *Layout) Check(ctx context.Context, repair bool) (CheckResult, error) {
	const op = pullkit.OpCheck
	var res CheckResult
	err := l.Walk(ctx, func(i Info) error {
		ok, err := l.verify(ctx, i.Digest)
		if isNotFound(err) {
			return nil // deleted meanwhile
		}
		if err != nil {
			return err
		}
		res.Checked++
		res.Bytes += i.Size
		if ok {
			return nil
		}
		res.Damaged = append(res.Damaged, i.Digest)
		if repair {
			if err := l.Delete(ctx, i.Digest); err != nil && !isNotFound(err) {
				return err
			}
			res.Removed = append(res.Removed, i.Digest)
		}
		return nil
	})
	if err == nil {
		err = l.checkIngests(ctx, repair, &res)
	}
	sortDigests(res.Damaged)
	sortDigests(res.Removed)
	return res, pullkit.Wrap("", op, "", err)
}
