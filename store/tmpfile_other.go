//go:build !linux

package store

import (
	"errors"
	"os"
)

var errNoTmpfile = errors.New("unnamed temporary files are not supported on this system")

func linkTmpfile(*os.File, string) error { return errNoTmpfile }
