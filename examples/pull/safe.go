package main

import (
	"fmt"
	"io"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// safeWriter passes text on with every character a terminal could act on escaped: C0
// controls but the line break, DEL, C1 controls, and other characters that do not print
// (bidi overrides, zero-width ones), as \uXXXX (valid inside JSON strings too), and bytes
// that are not UTF-8 as \xNN. Everything the command prints goes through one, except the
// progress display's own cursor movements: the library escapes what the network sent, and
// this makes sure of it for every line of output.
type safeWriter struct {
	w    io.Writer
	tail []byte // an incomplete UTF-8 sequence at the end of the last Write
}

func newSafeWriter(w io.Writer) *safeWriter { return &safeWriter{w: w} }

func (s *safeWriter) Write(p []byte) (int, error) {
	in := p
	if len(s.tail) > 0 {
		in = append(s.tail, p...)
		s.tail = nil
	}
	out := make([]byte, 0, len(in))
	for len(in) > 0 {
		r, n := utf8.DecodeRune(in)
		if r == utf8.RuneError && n <= 1 {
			if !utf8.FullRune(in) {
				s.tail = append([]byte(nil), in...) // finished by the next Write
				break
			}
			out = fmt.Appendf(out, `\x%02x`, in[0])
			in = in[1:]
			continue
		}
		if r == '\n' || (r != utf8.RuneError && (r == ' ' || unicode.IsPrint(r))) {
			out = append(out, in[:n]...)
		} else if r > 0xffff {
			r1, r2 := utf16.EncodeRune(r)
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		in = in[n:]
	}
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
