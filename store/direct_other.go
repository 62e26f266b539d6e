//go:build !linux

package store

import (
	"errors"
	"os"
)

func openDirect(string) (*os.File, error) {
	return nil, errors.New("O_DIRECT is not used on this system")
}

func isDirectRefused(error) bool { return true }
