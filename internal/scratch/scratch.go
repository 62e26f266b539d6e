// Package scratch makes the module's scratch files: unnamed files that hold bytes for a
// while (a transfer's out-of-order ranges, a layer spooled for unpacking) and leave
// nothing behind, whatever happens to the process.
package scratch

import "os"

// File returns an unnamed file in dir ("" for the system's temporary directory): an
// O_TMPFILE where the system has them, else a file made with pattern (as os.CreateTemp
// takes it) and removed at once. Either way it disappears when closed.
func File(dir, pattern string) (*os.File, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	if f, err := Unnamed(dir); err == nil {
		return f, nil
	}
	f, err := os.CreateTemp(dir, pattern)
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name())
	return f, nil
}
