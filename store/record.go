package store

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/pullkit/pullkit/internal/ranges"
)

// The record of a partial file's stretches. A partial that holds bytes beyond its
// in-order prefix (the parallel ranges of a large blob) has a record beside it,
// ingest/<alg>-<hex>.ranges, which is then what says which bytes the partial holds:
// a header line, then one line per stretch written, appended once its bytes are
// written:
//
//	pullkit-ranges 1
//	<start> <end> <crc32 of "<start> <end">
//
// The stretches are the union of the lines, read up to the first line that is torn
// (no newline: the process ended while appending it), does not check, or is not one;
// each clipped to the partial file's length and the blob's size. The prefix is the
// stretch that starts at 0; the rest are held. A partial without a record holds its
// file's length as prefix. The record is created (with the prefix) before the first
// byte is written out of order, so a partial longer than its prefix always has one; it
// is rewritten whole (a new file renamed over it) when it grows long, and removed when
// the partial is committed, truncated or removed. The partial's lock covers it.
const (
	recordSuffix = ".ranges"
	recordHeader = "pullkit-ranges 1\n"
	// recordCompact is the length past which a record is rewritten whole.
	recordCompact = 64 << 10
)

// recordLine formats one stretch of a record.
func recordLine(r ranges.Range) []byte {
	s := strconv.FormatInt(r.Start, 10) + " " + strconv.FormatInt(r.End, 10)
	return fmt.Appendf(nil, "%s %08x\n", s, crc32.ChecksumIEEE([]byte(s)))
}

// parseRecord reads a record: the stretches it validly lists, each clipped to
// [0, limit), and whether all of it was valid (a record that is not one lists nothing).
func parseRecord(b []byte, limit int64) (ranges.Set, bool) {
	if !bytes.HasPrefix(b, []byte(recordHeader)) {
		return nil, false
	}
	b = b[len(recordHeader):]
	var s ranges.Set
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok {
			return s, false // torn: the process ended while appending it
		}
		r, ok := parseLine(line)
		if !ok {
			return s, false
		}
		s = s.Add(r.Start, min(r.End, limit))
		b = rest
	}
	return s, true
}

// parseLine reads "<start> <end> <crc>" with start < end.
func parseLine(line []byte) (ranges.Range, bool) {
	f := bytes.Split(line, []byte{' '})
	if len(f) != 3 || len(f[2]) != 8 {
		return ranges.Range{}, false
	}
	start, ok1 := decimal(f[0])
	end, ok2 := decimal(f[1])
	sum, err := strconv.ParseUint(string(f[2]), 16, 32)
	if !ok1 || !ok2 || err != nil || start >= end {
		return ranges.Range{}, false
	}
	if uint32(sum) != crc32.ChecksumIEEE(line[:len(f[0])+1+len(f[1])]) {
		return ranges.Range{}, false
	}
	return ranges.Range{Start: start, End: end}, true
}

// decimal parses 1-18 ASCII digits (no sign, no space).
func decimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// recordPath is the record beside a partial file.
func recordPath(partial string) string {
	return partial[:len(partial)-len(".partial")] + recordSuffix
}

// readRecord reads the record of partial, if it has one, clipped to limit.
func readRecord(partial string, limit int64) (s ranges.Set, found, valid bool, err error) {
	b, err := os.ReadFile(recordPath(partial))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, true, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	s, valid = parseRecord(b, limit)
	return s, true, valid, nil
}

// writeRecord replaces partial's record with one that lists s, through a new file
// renamed over it (a record is whole or the old one), and returns it open for appending.
func writeRecord(partial string, s ranges.Set, sync bool) (*os.File, error) {
	buf := []byte(recordHeader)
	for _, r := range s {
		buf = append(buf, recordLine(r)...)
	}
	dst := recordPath(partial)
	f, err := os.CreateTemp(filepath.Dir(dst), ".record-*.tmp")
	if err != nil {
		return nil, err
	}
	tmp := f.Name()
	_, err = f.Write(buf)
	if err == nil && sync {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return nil, err
	}
	// f is the record now, and writes to it go on at its end.
	return f, nil
}
