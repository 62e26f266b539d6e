//go:build !unix

package main

import "os"

// termSize does not know the size here: the display assumes 80 x 24.
func termSize(f *os.File) (cols, rows int, ok bool) { return 0, 0, isTerminal(f) }

// isTerminal reports whether f is a character device (a console).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// watchResize has no signal to follow here.
func watchResize() (<-chan os.Signal, func()) { return nil, func() {} }
