package puller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	digest "github.com/opencontainers/go-digest"
)

// Sentinel errors. Every error the package returns wraps one of these or one of
// manifest's (pullkit.ErrDigestMismatch, pullkit.ErrNoMatch, pullkit.ErrInvalid, …),
// so callers can branch with errors.Is.
var (
	// ErrNotFound: the registry has no such repository, manifest or blob (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrUnauthorized: the registry refused the credentials, or asked for some and
	// none were given (HTTP 401 or 403, or a failed token exchange).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTooManyRequests: the registry kept answering 429 after every retry.
	ErrTooManyRequests = errors.New("too many requests")
	// ErrRangeNotSatisfiable: the registry answered 416 to a Range request.
	ErrRangeNotSatisfiable = errors.New("range not satisfiable")
	// ErrUnexpectedStatus: any other HTTP status that is not a success.
	ErrUnexpectedStatus = errors.New("unexpected HTTP status")
	// ErrTooLarge: a manifest or config is larger than the configured cap.
	ErrTooLarge = errors.New("too large")
	// ErrInsecure: a plain-HTTP request to a host that is not loopback, without
	// WithPlainHTTP.
	ErrInsecure = errors.New("plain HTTP refused")
	// ErrProtocol: the registry broke the distribution protocol (for example a
	// malformed Docker-Content-Digest header, or a size that contradicts a descriptor).
	ErrProtocol = errors.New("registry protocol violation")
	// ErrBadReference: the reference could not be parsed.
	ErrBadReference = errors.New("invalid reference")
	// ErrUnreachable: the connection to the registry (or to where it redirected) failed
	// after every retry: refused, reset, timed out, TLS failure, unknown host.
	ErrUnreachable = errors.New("registry unreachable")
)

// connError marks a failed round trip as ErrUnreachable, keeping the cause (so
// context.Canceled, ErrInsecure and *url.Error stay visible to errors.Is/As). Context
// ends and our own refusals are returned unchanged.
func connError(err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrInsecure) || errors.Is(err, ErrUnreachable) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, err)
}

// Error is what every exported method returns on failure: the reference being pulled,
// the step that failed, the digest involved (when there is one) and the cause.
type Error struct {
	// Reference is the reference as the caller gave it.
	Reference string
	// Op is the step that failed, e.g. "resolve manifest", "fetch config".
	Op string
	// Digest is the manifest or blob digest involved, if any.
	Digest digest.Digest
	// Err is the cause; it wraps one of the sentinel errors.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("pull ")
	b.WriteString(e.Reference)
	b.WriteString(": ")
	b.WriteString(e.Op)
	if e.Digest != "" {
		b.WriteString(" ")
		b.WriteString(e.Digest.String())
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return oneLine(b.String())
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// HTTPError reports a response whose status was not the one expected. It wraps
// ErrNotFound (404), ErrUnauthorized (401, 403), ErrTooManyRequests (429),
// ErrRangeNotSatisfiable (416) or ErrUnexpectedStatus.
type HTTPError struct {
	// Method and URL are the request's (the URL without credentials or query).
	Method, URL string
	// StatusCode is the response status.
	StatusCode int
	// Codes are the registry's error codes from the body, e.g. "MANIFEST_UNKNOWN".
	Codes []string
	// Message is the registry's first error message, or a prefix of the body.
	Message string
	// Expected says what the request was for, e.g. "manifest for tag latest".
	Expected string
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d %s", e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Codes) > 0 {
		b.WriteString(" (")
		b.WriteString(strings.Join(e.Codes, ", "))
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Expected != "" {
		b.WriteString("; expected ")
		b.WriteString(e.Expected)
	}
	return oneLine(b.String())
}

// Unwrap returns the sentinel for the status.
func (e *HTTPError) Unwrap() error {
	switch e.StatusCode {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return ErrUnauthorized
	case http.StatusTooManyRequests:
		return ErrTooManyRequests
	case http.StatusRequestedRangeNotSatisfiable:
		return ErrRangeNotSatisfiable
	}
	return ErrUnexpectedStatus
}

// TooLargeError reports a document above the size cap.
type TooLargeError struct {
	// What names the document, e.g. "manifest" or "config".
	What string
	// Limit is the cap in bytes.
	Limit int64
	// Size is the size announced (Content-Length or descriptor), or -1 when the body
	// simply ran past the cap.
	Size int64
}

func (e *TooLargeError) Error() string {
	if e.Size >= 0 {
		return fmt.Sprintf("%s is %d bytes, more than the %d-byte limit", e.What, e.Size, e.Limit)
	}
	return fmt.Sprintf("%s is larger than the %d-byte limit", e.What, e.Limit)
}

// Unwrap returns ErrTooLarge.
func (e *TooLargeError) Unwrap() error { return ErrTooLarge }

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// registryErrors is the distribution spec's error body.
type registryErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// parseErrorBody extracts the registry's error codes and first message from an error
// response body; a body that is not the spec's JSON yields a short printable prefix.
func parseErrorBody(body []byte) (codes []string, message string) {
	var re registryErrors
	if err := json.Unmarshal(body, &re); err == nil && len(re.Errors) > 0 {
		for _, e := range re.Errors {
			if c := printable(e.Code, 64); c != "" {
				codes = append(codes, c)
			}
			if message == "" {
				message = printable(e.Message, 200)
			}
		}
		return codes, message
	}
	return nil, printable(string(body), 200)
}

// printable trims s to at most max runes of printable text on one line.
func printable(s string, max int) string {
	var b strings.Builder
	n := 0
	space := false
	for _, r := range strings.TrimSpace(s) {
		if n >= max {
			b.WriteString("…")
			break
		}
		if unicode.IsSpace(r) || !unicode.IsPrint(r) {
			if !space {
				b.WriteByte(' ')
				space = true
				n++
			}
			continue
		}
		space = false
		b.WriteRune(r)
		n++
	}
	return strings.TrimSpace(b.String())
}

// oneLine folds line breaks so an error always prints as one line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	return strings.Join(strings.Fields(strings.NewReplacer("\r", " ", "\n", " ").Replace(s)), " ")
}
