package store

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	digest "github.com/opencontainers/go-digest"
)

// slots keeps one holder per digest among the goroutines of a process. A waiter is
// woken when the holder leaves, so it does not poll.
type slots struct {
	mu sync.Mutex
	m  map[digest.Digest]chan struct{}
}

// acquire waits until d is free (or ctx is done) and takes it; release gives it back. A
// wait is reported to ctx's WithWriterWait function.
func (s *slots) acquire(ctx context.Context, d digest.Digest) (release func(), err error) {
	reported := false
	for {
		s.mu.Lock()
		if s.m == nil {
			s.m = map[digest.Digest]chan struct{}{}
		}
		ch, busy := s.m[d]
		if !busy {
			ch = make(chan struct{})
			s.m[d] = ch
			s.mu.Unlock()
			var once sync.Once
			return func() {
				once.Do(func() {
					s.mu.Lock()
					delete(s.m, d)
					s.mu.Unlock()
					close(ch)
				})
			}, nil
		}
		s.mu.Unlock()
		if !reported {
			reported = true
			ReportWriterWait(ctx, WaitOtherWriter, 0)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// mutex is a mutual exclusion lock whose Lock honours a context.
type mutex chan struct{}

func newMutex() mutex { return make(mutex, 1) }

func (m mutex) lock(ctx context.Context) error {
	select {
	case m <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m mutex) unlock() { <-m }

// errNoFlock says that a file system does not take locks: the lock was not taken, and
// nothing can be known of other holders.
var errNoFlock = errors.New("file locks are not supported here")

// Polling a lock held by another process: the first retry comes soon (most holders are
// quick), later ones less often.
const (
	pollFirst = time.Millisecond
	pollMax   = 50 * time.Millisecond
)

// lockPath opens path with flag (creating its directory when flag has O_CREATE and the
// directory is missing) and takes a flock on it, waiting while another open file holds
// it by polling with a growing sleep, until ctx is done. Once it holds the lock, it
// checks that path still names the file it locked: the holder may have renamed the
// file away (a committed ingest) or removed it (an expired one), and then it starts
// over.
func lockPath(ctx context.Context, path string, flag int, shared bool) (*os.File, error) {
	return lockPathWaiting(ctx, path, flag, shared, nil)
}

// lockPathWaiting is lockPath that calls waiting (when not nil) the first time it finds
// the lock held.
func lockPathWaiting(ctx context.Context, path string, flag int, shared bool, waiting func()) (*os.File, error) {
	sleep := pollFirst
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		f, err := os.OpenFile(path, flag|os.O_RDWR, 0o644)
		if errors.Is(err, fs.ErrNotExist) && flag&os.O_CREATE != 0 {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				return nil, err
			}
			f, err = os.OpenFile(path, flag|os.O_RDWR, 0o644)
		}
		if err != nil {
			return nil, err
		}
		for {
			ok, err := tryLock(f, shared)
			if errors.Is(err, errNoFlock) {
				ok, err = true, nil
			}
			if err != nil {
				f.Close()
				return nil, err
			}
			if ok {
				break
			}
			if timer == nil {
				if waiting != nil {
					waiting()
				}
				timer = time.NewTimer(sleep)
			} else {
				timer.Reset(sleep)
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
				f.Close()
				return nil, ctx.Err()
			}
			sleep = min(sleep*3/2+time.Millisecond, pollMax)
		}
		if sameFile(f, path) {
			return f, nil
		}
		f.Close()
		if flag&os.O_CREATE == 0 {
			if _, err := os.Lstat(path); err != nil {
				return nil, err
			}
		}
	}
}
