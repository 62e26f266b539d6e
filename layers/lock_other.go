//go:build !unix

package layers

import "os"

// tryLock is a no-op where flock is not available: within one process the download
// singleflight already keeps two transfers of one digest apart, and the final digest
// check keeps the store sound across processes.
func tryLock(*os.File) bool { return true }
