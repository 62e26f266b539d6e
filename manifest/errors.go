package manifest

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	digest "github.com/opencontainers/go-digest"
)

// Sentinel errors; every error this package returns wraps one of them, so callers can
// test with errors.Is and get details with errors.As on the typed errors below.
var (
	// ErrUnsupported: the document is well-formed but not an image pullkit can pull
	// (an artifact, an unknown media type, an encrypted layer).
	ErrUnsupported = errors.New("unsupported manifest")
	// ErrInvalid: the document is malformed or contradicts itself.
	ErrInvalid = errors.New("invalid manifest")
	// ErrSignature: a signed schema 1 manifest failed verification.
	ErrSignature = errors.New("schema 1 signature verification failed")
	// ErrDigestMismatch: content does not hash to the digest it was asked for by.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrNoMatch: an index has no manifest for the wanted platform.
	ErrNoMatch = errors.New("no manifest for platform")
)

// printable escapes what a terminal or log should not receive raw: invalid UTF-8 and
// non-printing characters, which network input can put into media types and reasons.
func printable(s string) string {
	if utf8.ValidString(s) && strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	q := strconv.QuoteToASCII(s)
	return q[1 : len(q)-1]
}

// UnsupportedError reports a document pullkit understands but will not treat as an image.
type UnsupportedError struct {
	// MediaType is the media type that was served or found.
	MediaType string
	// Reason says what was found, e.g. "artifact manifest" or "encrypted layer sha256:…".
	Reason string
}

func (e *UnsupportedError) Error() string {
	if e.MediaType == "" {
		return fmt.Sprintf("unsupported manifest: %s", printable(e.Reason))
	}
	return fmt.Sprintf("unsupported manifest (%s): %s", printable(e.MediaType), printable(e.Reason))
}

// Unwrap returns ErrUnsupported.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// InvalidError reports a malformed document.
type InvalidError struct {
	// MediaType is the format the document was parsed as, when known.
	MediaType string
	// Reason says what is wrong.
	Reason string
	// Err is the underlying error (for example a JSON syntax error), if any.
	Err error
}

func (e *InvalidError) Error() string {
	s := "invalid manifest"
	if e.MediaType != "" {
		s += " (" + printable(e.MediaType) + ")"
	}
	s += ": " + printable(e.Reason)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns both ErrInvalid and the underlying error.
func (e *InvalidError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// SignatureError reports which check of a signed schema 1 manifest failed.
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

// Unwrap returns both ErrSignature and the underlying error.
func (e *SignatureError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrSignature, e.Err}
	}
	return []error{ErrSignature}
}

// DigestMismatchError reports content that does not hash to the digest it was asked by.
type DigestMismatchError struct {
	// What names the content, e.g. "manifest" or "config".
	What string
	// Want is the digest that was asked for.
	Want digest.Digest
	// Got is the digest the content has.
	Got digest.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s digest mismatch: want %s, got %s", e.What, e.Want, e.Got)
}

// Unwrap returns ErrDigestMismatch.
func (e *DigestMismatchError) Unwrap() error { return ErrDigestMismatch }

// NoMatchError reports an index with no entry for the wanted platform; it lists every
// platform the index offers.
type NoMatchError struct {
	// Want is the platform asked for.
	Want Platform
	// Offered are the platforms of the index's entries, in index order.
	Offered []Platform
}

func (e *NoMatchError) Error() string {
	offered := make([]string, len(e.Offered))
	for i, p := range e.Offered {
		offered[i] = p.String()
	}
	list := strings.Join(offered, ", ")
	if list == "" {
		list = "none"
	}
	return fmt.Sprintf("no manifest for platform %s; offered: %s", e.Want, list)
}

// Unwrap returns ErrNoMatch.
func (e *NoMatchError) Unwrap() error { return ErrNoMatch }
