//go:build !linux

package scratch

import (
	"errors"
	"os"
)

// ErrUnsupported is Unnamed's error where the system has no unnamed files.
var ErrUnsupported = errors.New("unnamed temporary files are not supported on this system")

// Unnamed is an error here: the system has no unnamed files.
func Unnamed(string) (*os.File, error) { return nil, ErrUnsupported }
