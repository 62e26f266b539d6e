package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// vt is a small terminal emulator for tests: enough of xterm to replay what the progress
// display writes (printable text, CR, LF, cursor up, erase line, erase below) on a screen
// of a given size, with xterm's automatic margins (a character written in the last
// column wraps the next one to a new line) and a scrollback that receives the lines
// scrolled off the top. Any other control sequence is recorded as an error, so a test
// sees what the display emits that it does not expect.
type vt struct {
	cols, rows int
	screen     [][]rune
	scrollback []string
	row, col   int
	pending    bool // the cursor sits past the last column: the next character wraps
	wraps      int  // how many times a line wrapped
	errs       []string
	rest       []byte // an escape sequence or rune cut between two writes
}

func newVT(cols, rows int) *vt {
	v := &vt{cols: cols, rows: rows}
	for range rows {
		v.screen = append(v.screen, v.blank())
	}
	return v
}

func (v *vt) blank() []rune { return []rune(strings.Repeat(" ", v.cols)) }

// resize changes the size as xterm does without reflowing: lines are cut or padded; when
// the screen loses rows, lines above the cursor go to the scrollback first.
func (v *vt) resize(cols, rows int) {
	for i, l := range v.screen {
		if len(l) > cols {
			v.screen[i] = l[:cols]
		} else {
			v.screen[i] = append(l, []rune(strings.Repeat(" ", cols-len(l)))...)
		}
	}
	v.cols = cols
	for len(v.screen) > rows {
		if v.row > 0 {
			v.scrollback = append(v.scrollback, strings.TrimRight(string(v.screen[0]), " "))
			v.screen = v.screen[1:]
			v.row--
		} else {
			v.screen = v.screen[:len(v.screen)-1]
		}
	}
	for len(v.screen) < rows {
		v.screen = append(v.screen, v.blank())
	}
	v.rows = rows
	v.col = min(v.col, cols-1)
	v.pending = false
}

func (v *vt) Write(p []byte) (int, error) {
	n := len(p)
	b := append(v.rest, p...)
	v.rest = nil
	for len(b) > 0 {
		switch c := b[0]; {
		case c == '\r':
			v.col, v.pending = 0, false
			b = b[1:]
		case c == '\n':
			v.lineFeed()
			b = b[1:]
		case c == 0x1b:
			used, ok := v.escape(b)
			if !ok {
				v.rest = append([]byte(nil), b...)
				return n, nil
			}
			b = b[used:]
		case c < 0x20 || c == 0x7f:
			v.errs = append(v.errs, fmt.Sprintf("control character %#x", c))
			b = b[1:]
		default:
			if !utf8.FullRune(b) {
				v.rest = append([]byte(nil), b...)
				return n, nil
			}
			r, size := utf8.DecodeRune(b)
			v.put(r)
			b = b[size:]
		}
	}
	return n, nil
}

func (v *vt) put(r rune) {
	if v.pending {
		v.wraps++
		v.col, v.pending = 0, false
		v.lineFeed()
	}
	v.screen[v.row][v.col] = r
	if v.col == v.cols-1 {
		v.pending = true
	} else {
		v.col++
	}
}

func (v *vt) lineFeed() {
	v.pending = false
	if v.row < v.rows-1 {
		v.row++
		return
	}
	v.scrollback = append(v.scrollback, strings.TrimRight(string(v.screen[0]), " "))
	v.screen = append(v.screen[1:], v.blank())
}

// escape interprets the sequence at the start of b; ok is false when it is incomplete.
func (v *vt) escape(b []byte) (used int, ok bool) {
	if len(b) < 2 {
		return 0, false
	}
	if b[1] != '[' {
		v.errs = append(v.errs, fmt.Sprintf("escape %q", b[:2]))
		return 2, true
	}
	i := 2
	for i < len(b) && (b[i] >= '0' && b[i] <= '9' || b[i] == ';' || b[i] == '?') {
		i++
	}
	if i >= len(b) {
		return 0, false
	}
	param, final := string(b[2:i]), b[i]
	n := 1
	if param != "" {
		var err error
		if n, err = strconv.Atoi(param); err != nil {
			v.errs = append(v.errs, fmt.Sprintf("sequence %q", b[:i+1]))
			return i + 1, true
		}
	}
	switch {
	case final == 'A':
		v.row, v.pending = max(v.row-max(n, 1), 0), false
	case final == 'K' && (param == "" || param == "0"):
		copy(v.screen[v.row][v.col:], v.blank())
	case final == 'K' && param == "2":
		v.screen[v.row] = v.blank()
	case final == 'J' && (param == "" || param == "0"):
		copy(v.screen[v.row][v.col:], v.blank())
		for r := v.row + 1; r < v.rows; r++ {
			v.screen[r] = v.blank()
		}
	default:
		v.errs = append(v.errs, fmt.Sprintf("sequence %q", b[:i+1]))
	}
	return i + 1, true
}

// lines returns the screen's lines, trailing spaces and trailing blank lines dropped.
func (v *vt) lines() []string {
	var out []string
	for _, l := range v.screen {
		out = append(out, strings.TrimRight(string(l), " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// all is the scrollback followed by the screen.
func (v *vt) all() []string { return append(append([]string(nil), v.scrollback...), v.lines()...) }
