package layers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// errContentRangeSyntax is the cause of every parse failure of parseContentRange.
var errContentRangeSyntax = errors.New("malformed Content-Range")

// parseContentRange parses a 206 answer's Content-Range header (RFC 9110 section 14.4):
// "bytes first-last/complete" or "bytes first-last/*". total is -1 for "*". The unsatisfied
// form "bytes */complete" is an error, as are signs, spaces inside numbers, first > last and
// last >= complete.
func parseContentRange(h string) (start, end, total int64, err error) {
	h = strings.TrimSpace(h)
	unit, spec, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, fmt.Errorf("%w: %q: want \"bytes first-last/total\"", errContentRangeSyntax, h)
	}
	spec = strings.TrimLeft(spec, " ")
	rng, complete, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("%w: %q: no complete length", errContentRangeSyntax, h)
	}
	first, last, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("%w: %q: no range", errContentRangeSyntax, h)
	}
	if start, err = parseDecimal(first); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: %q: first byte: %v", errContentRangeSyntax, h, err)
	}
	if end, err = parseDecimal(last); err != nil {
		return 0, 0, 0, fmt.Errorf("%w: %q: last byte: %v", errContentRangeSyntax, h, err)
	}
	if start > end {
		return 0, 0, 0, fmt.Errorf("%w: %q: first byte after last", errContentRangeSyntax, h)
	}
	total = -1
	if complete != "*" {
		if total, err = parseDecimal(complete); err != nil {
			return 0, 0, 0, fmt.Errorf("%w: %q: complete length: %v", errContentRangeSyntax, h, err)
		}
		if end >= total {
			return 0, 0, 0, fmt.Errorf("%w: %q: last byte beyond complete length", errContentRangeSyntax, h)
		}
	}
	return start, end, total, nil
}

// parseDecimal parses a non-empty run of ASCII digits as a non-negative int64.
func parseDecimal(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("not a decimal number: %q", s)
		}
	}
	return strconv.ParseInt(s, 10, 64)
}
