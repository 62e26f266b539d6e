package pullkit

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/text"
)

// The error vocabulary of the whole module. Every error a pullkit package returns wraps
// one of these (or a context error, or the operating system's own error when the local
// file system fails), so a program branches with errors.Is on a handful of values
// whichever package failed; the typed errors below, and a few next to the data they
// describe (platforms.NoMatchError, manifest.SignatureError, puller.StallError), carry
// the details for errors.As.
var (
	// ErrNotFound: the registry has no such repository, tag, manifest or blob, or the
	// store has no such blob or name.
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry wants credentials that were not sent, or refused
	// the ones that were (HTTP 401, or a failed token exchange).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDenied: the request was refused by policy: the registry's (HTTP 403) or
	// pullkit's own (plain HTTP to a host that is not loopback, a registry sending the
	// puller to loopback or link-local addresses).
	ErrDenied = errors.New("denied")
	// ErrTooManyRequests: the registry kept answering 429 through the retry policy, or
	// asked for a wait longer than the policy allows.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrDigestMismatch: content does not hash to the digest that names it (a manifest,
	// a blob, or a layer's uncompressed content against its diffID).
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrSizeMismatch: content is not the size its descriptor, or the server, says.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrNoMatch: no manifest for the wanted platform.
	ErrNoMatch = errors.New("no matching platform")
	// ErrUnsupported: well-formed, but not something pullkit does (an artifact pulled as
	// an image, an encrypted layer, a server without the feature asked of it).
	ErrUnsupported = errors.New("unsupported")
	// ErrInvalid: malformed or self-contradicting input: a reference, a manifest, a
	// config, a signature, a layer archive, a store directory, an option value, or an
	// answer that breaks the registry protocol.
	ErrInvalid = errors.New("invalid")
	// ErrTooLarge: a document or blob is larger than the cap configured for it.
	ErrTooLarge = errors.New("too large")
	// ErrUnreachable: the connection failed or stalled through the retry policy
	// (refused, reset, timed out, TLS failure, unknown host, no data for too long).
	ErrUnreachable = errors.New("unreachable")
	// ErrAlreadyExists: a store already holds the blob a writer was asked for.
	ErrAlreadyExists = errors.New("already exists")
	// ErrUntrusted: a trust policy refused the image: a signature or attestation it
	// requires is missing, does not verify, signs another digest or identity, or comes
	// from a signer it does not trust (trust.UntrustedError names each requirement
	// unmet). Nothing of a refused image is fetched past its manifests, or stored.
	ErrUntrusted = errors.New("untrusted")
)

// Error is the error of an operation on an image: the reference being pulled (when there
// is one), the step that failed, the digest involved (when there is one) and the cause.
// Each is named once: the packages fill in an Error they receive rather than wrap it in
// another.
type Error struct {
	// Reference is the image reference as the caller gave it, or "".
	Reference string
	// Op is the step that failed: one of the Op constants (OpResolve,
	// OpFetchManifest, OpFetchBlob, …), for a program to compare.
	Op string
	// Detail says more of the step, for people: the platform of an index's entry, the
	// mirror asked, the image name, "layer" or "config". It is printed after Op; it is
	// not for comparing.
	Detail string
	// Digest is the manifest or blob involved, or "".
	Digest digest.Digest
	// Err is the cause; it wraps one of the sentinels above.
	Err error
}

func (e *Error) Error() string {
	var cause string
	if e.Err != nil {
		cause = e.Err.Error()
	}
	var parts []string
	if e.Reference != "" {
		parts = append(parts, text.Clean(e.Reference, 300))
	}
	head := e.Op
	if e.Detail != "" {
		head = strings.TrimSpace(head + " " + text.Clean(e.Detail, 300))
	}
	// The digest beside the step; a later mention (in a URL, say) is shortened below, and
	// a reference that names it already (repo@digest) is not repeated.
	if d := string(e.Digest); d != "" && !strings.Contains(e.Reference, d) {
		head = strings.TrimSpace(head + " " + text.Clean(d, 140))
	}
	if head != "" {
		parts = append(parts, head)
	}
	if cause != "" {
		parts = append(parts, cause)
	}
	return nameDigestsOnce(text.OneLine(strings.Join(parts, ": ")))
}

// digestInText matches a digest as messages print it.
var digestInText = regexp.MustCompile(`\b(?:sha256|sha384|sha512):[0-9a-f]{32,}`)

// nameDigestsOnce keeps the first mention of each digest in s whole and shortens the
// later ones to their first 12 hex digits, so that a message names each digest once
// however many of its parts (the reference, a URL, a mismatch) mention it.
func nameDigestsOnce(s string) string {
	seen := map[string]bool{}
	return digestInText.ReplaceAllStringFunc(s, func(d string) string {
		if !seen[d] {
			seen[d] = true
			return d
		}
		alg, hex, _ := strings.Cut(d, ":")
		return alg + ":" + hex[:12] + "…"
	})
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Wrap returns err as an *Error for reference, op and d. When err already is one, it is
// filled in (its empty Reference, Op or Digest) instead of wrapped, so that no digest or
// reference is printed twice. A nil err stays nil.
func Wrap(reference, op string, d digest.Digest, err error) error {
	return WrapDetail(reference, op, "", d, err)
}

// WrapDetail is Wrap with the step's Detail, which is filled in with Op: an Error that
// has its step already keeps its own.
func WrapDetail(reference, op, detail string, d digest.Digest, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		c := *e
		if c.Reference == "" {
			c.Reference = reference
		}
		if c.Op == "" && c.Detail == "" {
			c.Op, c.Detail = op, detail
		}
		if c.Digest == "" {
			c.Digest = d
		}
		if c.Reference == e.Reference && c.Op == e.Op && c.Detail == e.Detail && c.Digest == e.Digest {
			return err
		}
		if e == err {
			return &c
		}
		// err wraps e with more context: keep that context, and name the digest at the
		// outside only if e does not already.
		if e.Digest != "" {
			d = ""
		}
		if e.Reference != "" {
			reference = ""
		}
	}
	return &Error{Reference: reference, Op: op, Detail: detail, Digest: d, Err: err}
}

// DigestMismatchError reports content that does not hash to the digest it was asked by.
type DigestMismatchError struct {
	// What names the content: "manifest", "config", "blob", "diffID of layer", …
	What string
	// Want is the digest the content was asked by.
	Want digest.Digest
	// Got is the digest of what arrived.
	Got digest.Digest
}

func (e *DigestMismatchError) Error() string {
	return fmt.Sprintf("%s digest mismatch: got %s, want %s", e.What, text.Clean(string(e.Got), 140), text.Clean(string(e.Want), 140))
}

// Unwrap returns ErrDigestMismatch.
func (e *DigestMismatchError) Unwrap() error { return ErrDigestMismatch }

// SizeMismatchError reports content that is not the expected number of bytes.
type SizeMismatchError struct {
	// What names the content, e.g. "blob" or "manifest".
	What string
	// Want is the size expected, in bytes.
	Want int64
	// Got is the size found; for content that ran long it is what was read when the
	// transfer was stopped, so it may be less than the true length.
	Got int64
	// Source says where Got comes from: "body", "Content-Length", "Content-Range", …
	Source string
}

func (e *SizeMismatchError) Error() string {
	what := e.What
	if what == "" {
		what = "content"
	}
	src := ""
	if e.Source != "" {
		src = " (" + e.Source + ")"
	}
	return fmt.Sprintf("%s size mismatch: got %d bytes%s, want %d", what, e.Got, src, e.Want)
}

// Unwrap returns ErrSizeMismatch.
func (e *SizeMismatchError) Unwrap() error { return ErrSizeMismatch }

// TooLargeError reports content above a configured cap.
type TooLargeError struct {
	// What names the content, e.g. "manifest", "config", "blob".
	What string
	// Limit is the cap, in bytes.
	Limit int64
	// Size is the size announced (a header or a descriptor), or -1 when the content
	// simply ran past the cap.
	Size int64
}

func (e *TooLargeError) Error() string {
	if e.Size >= 0 {
		return fmt.Sprintf("%s is %d bytes, over the %d-byte limit", e.What, e.Size, e.Limit)
	}
	return fmt.Sprintf("%s is larger than the %d-byte limit", e.What, e.Limit)
}

// Unwrap returns ErrTooLarge.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// InvalidError reports malformed input.
type InvalidError struct {
	// What names the input, e.g. a media type, "reference", "image config", "layer".
	What string
	// Reason says what is wrong with it.
	Reason string
	// Err is an underlying error (a JSON syntax error, say), if any.
	Err error
}

func (e *InvalidError) Error() string {
	s := "invalid"
	if e.What != "" {
		s += " " + text.Clean(e.What, 200)
	}
	s += ": " + text.Clean(e.Reason, 500)
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns ErrInvalid and the underlying error.
func (e *InvalidError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrInvalid, e.Err}
	}
	return []error{ErrInvalid}
}

// UnsupportedError reports something well-formed that pullkit does not do.
type UnsupportedError struct {
	// What names the thing, e.g. a media type.
	What string
	// Reason says what was found, e.g. "an artifact, not an image".
	Reason string
}

func (e *UnsupportedError) Error() string {
	if e.What == "" {
		return "unsupported: " + text.Clean(e.Reason, 500)
	}
	return "unsupported " + text.Clean(e.What, 200) + ": " + text.Clean(e.Reason, 500)
}

// Unwrap returns ErrUnsupported.
func (e *UnsupportedError) Unwrap() error { return ErrUnsupported }

// HTTPError reports a registry's answer that was not the one expected: the status, the
// registry's own error codes and message, and what a program needs to act on it.
type HTTPError struct {
	// Method and URL are the request's (the URL without credentials or query).
	Method, URL string
	// StatusCode is the response status.
	StatusCode int
	// Codes are the registry's error codes, e.g. "NAME_UNKNOWN" (no such repository) or
	// "MANIFEST_UNKNOWN" (no such tag or manifest).
	Codes []string
	// Message is the registry's first error message, or a short prefix of the body (never
	// a token server's body), escaped for printing.
	Message string
	// Expected says what the request was for, e.g. "manifest for tag latest".
	Expected string
	// RetryAfter is, for a 429, how long the registry asked the client to wait (0 when
	// it did not say).
	RetryAfter time.Duration
	// CredentialsSent says, for a 401 or 403, whether the request carried credentials:
	// false means none were found for the registry, true that they were refused.
	CredentialsSent bool
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, text.Clean(e.URL, 300), e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Codes) > 0 {
		b.WriteString(" (")
		b.WriteString(text.Clean(strings.Join(e.Codes, ", "), 200))
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(text.Clean(e.Message, 300))
	}
	switch {
	case e.StatusCode == http.StatusUnauthorized && !e.CredentialsSent:
		b.WriteString("; no credentials were sent (none found for this registry)")
	case e.StatusCode == http.StatusUnauthorized || (e.StatusCode == http.StatusForbidden && e.CredentialsSent):
		b.WriteString("; the credentials sent were refused")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; Retry-After %v", e.RetryAfter)
	}
	if e.Expected != "" {
		b.WriteString("; expected ")
		b.WriteString(e.Expected)
	}
	return text.OneLine(b.String())
}

// Unwrap returns the sentinel for the status: ErrNotFound (404), ErrUnauthorized (401),
// ErrDenied (403), ErrTooManyRequests (429), ErrUnsupported (405, 501), ErrUnreachable
// (other 5xx), ErrInvalid (anything else).
func (e *HTTPError) Unwrap() error {
	switch s := e.StatusCode; {
	case s == http.StatusNotFound:
		return ErrNotFound
	case s == http.StatusUnauthorized:
		return ErrUnauthorized
	case s == http.StatusForbidden:
		return ErrDenied
	case s == http.StatusTooManyRequests:
		return ErrTooManyRequests
	case s == http.StatusMethodNotAllowed || s == http.StatusNotImplemented:
		return ErrUnsupported
	case s >= 500:
		return ErrUnreachable
	}
	return ErrInvalid
}

// Code returns the registry's first error code, or "".
func (e *HTTPError) Code() string {
	if len(e.Codes) == 0 {
		return ""
	}
	return e.Codes[0]
}
