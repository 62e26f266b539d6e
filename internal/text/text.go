// Package text makes strings from the network safe to print: every message pullkit builds
// from what a registry sent (a media type, a platform, an error body) goes through it, so
// no control character or terminal escape sequence reaches a terminal or a log raw.
package text

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Clean returns s on one line with at most max runes (an ellipsis marks a cut): invalid
// UTF-8 and non-printing characters (escape sequences, line breaks, bidi controls) are
// written as Go escapes (\x1b, \n, \u202e), so what is printed is what was sent, visibly.
func Clean(s string, max int) string {
	if safe(s) && utf8.RuneCountInString(s) <= max {
		return s
	}
	var b strings.Builder
	n := 0
	for i, r := range s {
		if n >= max {
			b.WriteString("…")
			break
		}
		switch {
		case r == utf8.RuneError && !validAt(s, i):
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i]), 16))
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		n++
	}
	return b.String()
}

// validAt reports whether the RuneError at s[i] was really encoded there.
func validAt(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size > 1
}

func safe(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || (r != ' ' && !unicode.IsPrint(r)) {
			return false
		}
	}
	return true
}

// OneLine folds runs of white space, line breaks included, into single spaces; it is
// for messages whose parts are already clean.
func OneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

// List formats at most max items of a list, each cleaned (Clean, 200 runes), then how
// many more there are: long lists from the network (the platforms of an index) stay
// readable in one line.
func List(items []string, max int) string {
	if max < 0 {
		max = 0
	}
	n := min(len(items), max)
	shown := make([]string, n)
	for i, s := range items[:n] {
		shown[i] = Clean(s, 200)
	}
	s := strings.Join(shown, ", ")
	if len(items) > max {
		s += ", and " + strconv.Itoa(len(items)-max) + " more"
	}
	return s
}
