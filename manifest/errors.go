package manifest

import (
	"fmt"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/internal/text"
)

// Errors of this package wrap the module's sentinels (pullkit.ErrInvalid,
// pullkit.ErrUnsupported, pullkit.ErrDigestMismatch, pullkit.ErrNoMatch) and carry their
// details in the module's typed errors, or in a *SignatureError for schema 1 signatures.

// printable escapes what a terminal or log should not receive raw; media types and
// reasons can come from the network.
func printable(s string) string { return text.Clean(s, 200) }

// SignatureError reports which check of a signed schema 1 manifest failed. It wraps
// pullkit.ErrInvalid: a signature that does not verify makes the document invalid.
type SignatureError struct {
	// Check names the failed check: "signatures", "protected header", "payload",
	// "key", "signature" or "payload mismatch".
	Check string
	// KeyID is the libtrust key id of the signing key, when it could be read.
	KeyID string
	// Index is the position of the signature in the signatures array.
	Index int
	// Err is the underlying error, if any.
	Err error
}

func (e *SignatureError) Error() string {
	s := fmt.Sprintf("schema 1 signature %d: %s check failed", e.Index, e.Check)
	if e.KeyID != "" {
		s += " (key " + e.KeyID + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns pullkit.ErrInvalid and the underlying error.
func (e *SignatureError) Unwrap() []error {
	if e.Err != nil {
		return []error{pullkit.ErrInvalid, e.Err}
	}
	return []error{pullkit.ErrInvalid}
}
