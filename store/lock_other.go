//go:build !unix

package store

import "os"

// flockWorks reports whether flock keeps other processes out on this system: here it
// does not, and only the goroutines of one process exclude each other.
const flockWorks = false

// tryLock always succeeds where flock is not available: within one process the store's
// own exclusion keeps writers apart, and the digest check at commit keeps it sound.
func tryLock(*os.File, bool) (bool, error) { return true, errNoFlock }

// sameFile reports whether f is still the file that path names.
func sameFile(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Lstat(path)
	if err != nil {
		return false
	}
	return os.SameFile(a, b)
}
