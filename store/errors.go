package store

import (
	"errors"
	"fmt"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit"
)

// blobErr names the operation and the blob an error is about.
func blobErr(op string, d digest.Digest, err error) error {
	return pullkit.Wrap("", op, d, err)
}

// nameErr names the operation and the image name an error is about.
func nameErr(op, name string, err error) error {
	return pullkit.Wrap(name, op, "", err)
}

// checkDigest refuses a digest that is malformed or of an unavailable algorithm: such
// a digest names no blob, and must never name a file.
func checkDigest(op string, d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return blobErr(op, d, &pullkit.InvalidError{What: "digest", Reason: err.Error()})
	}
	return nil
}

// errClosed is the error of a writer used after Commit or Close.
var errClosed = &pullkit.InvalidError{What: "writer", Reason: "used after Commit or Close"}

// checkName refuses an image name a store cannot hold: empty, or with bytes that are
// not printable text.
func checkName(op, name string) error {
	if name == "" {
		return nameErr(op, name, &pullkit.InvalidError{What: "image name", Reason: "empty"})
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == 0xfffd {
			return nameErr(op, name, &pullkit.InvalidError{What: "image name", Reason: fmt.Sprintf("contains %q", r)})
		}
	}
	return nil
}

// isNotFound reports whether err means something is absent.
func isNotFound(err error) bool { return errors.Is(err, pullkit.ErrNotFound) }
