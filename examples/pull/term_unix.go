//go:build unix

package main

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"
)

// termSize returns the columns and rows of the terminal f, or ok false when f is not a
// terminal.
func termSize(f *os.File) (cols, rows int, ok bool) {
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, false
	}
	return int(ws.Col), int(ws.Row), true
}

// isTerminal reports whether f is a terminal (not a pipe, a file or /dev/null).
func isTerminal(f *os.File) bool {
	_, _, ok := termSize(f)
	return ok
}

// watchResize delivers a value on every change of the terminal's size (SIGWINCH), until
// stop is called.
func watchResize() (<-chan os.Signal, func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, unix.SIGWINCH)
	return ch, func() { signal.Stop(ch) }
}
