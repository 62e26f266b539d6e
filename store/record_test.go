package store

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pullkit/pullkit/internal/ranges"
)

func record(rs ...ranges.Range) []byte {
	b := []byte(recordHeader)
	for _, r := range rs {
		b = append(b, recordLine(r)...)
	}
	return b
}

// TestParseRecord: a record is read up to its first torn or damaged line, and what it
// lists is clipped to the partial's length.
func TestParseRecord(t *testing.T) {
	a, b, c := ranges.Range{Start: 0, End: 100}, ranges.Range{Start: 300, End: 400}, ranges.Range{Start: 350, End: 900}
	whole := record(a, b, c)
	torn := whole[:len(whole)-3]
	damaged := bytes.Replace(record(a, b, c), []byte("300 400"), []byte("300 500"), 1)
	for _, tc := range []struct {
		name  string
		in    []byte
		limit int64
		want  ranges.Set
		valid bool
	}{
		{"whole", whole, 1000, ranges.Set{{Start: 0, End: 100}, {Start: 300, End: 900}}, true},
		{"clipped to the partial", whole, 380, ranges.Set{{Start: 0, End: 100}, {Start: 300, End: 380}}, true},
		{"torn last line", torn, 1000, ranges.Set{{Start: 0, End: 100}, {Start: 300, End: 400}}, false},
		{"a line that does not check", damaged, 1000, ranges.Set{{Start: 0, End: 100}}, false},
		{"no header", []byte("0 100 00000000\n"), 1000, nil, false},
		{"empty", nil, 1000, nil, false},
		{"header only", []byte(recordHeader), 1000, nil, true},
		{"start after end", append([]byte(recordHeader), "9 3 00000000\n"...), 1000, nil, false},
		{"a sign", append([]byte(recordHeader), []byte(string(recordLine(a))[:0]+"-1 3 00000000\n")...), 1000, nil, false},
	} {
		got, valid := parseRecord(tc.in, tc.limit)
		if !slices.Equal(got, tc.want) || valid != tc.valid {
			t.Errorf("%s: %v, %v; want %v, %v", tc.name, got, valid, tc.want, tc.valid)
		}
	}
}

func FuzzParseRecord(f *testing.F) {
	f.Add(record(ranges.Range{Start: 0, End: 100}, ranges.Range{Start: 300, End: 400}), int64(1000))
	f.Add([]byte(recordHeader+"1 2 3\n"), int64(10))
	f.Add([]byte(recordHeader+"999999999999999999 9999999999999999999 ffffffff\n"), int64(1<<62))
	f.Fuzz(func(t *testing.T, b []byte, limit int64) {
		if limit < 0 {
			limit = -limit
		}
		s, _ := parseRecord(b, limit)
		var prev int64 = -1
		for _, r := range s {
			// Sorted, disjoint, not touching, within [0, limit), never empty.
			if r.Start < 0 || r.Start >= r.End || r.End > limit || r.Start <= prev {
				t.Fatalf("record %q: bad set %v", b, s)
			}
			prev = r.End
		}
		// What it lists reads back the same once rewritten.
		again, valid := parseRecord(record(s...), limit)
		if !valid || !slices.Equal(again, s) {
			t.Fatalf("record %q: %v rewritten reads %v (%v)", b, s, again, valid)
		}
	})
}

// TestWriterTakesOverARecord: a partial and a record left by a process that died are
// taken over as the record says, however it ended: a torn last line is lost, a line
// listing bytes past the partial is clipped, and Check finds (and repairs) what a
// writer would.
func TestWriterTakesOverARecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := OpenLayout(dir)
	if err != nil {
		t.Fatal(err)
	}
	b := randBytes(5, 3<<20)
	d := descOf("", b)
	partial := l.partialPath(d.Digest)
	// The process wrote [0, 1 MiB) and [2 MiB, 2.5 MiB) (recorded), and was appending a
	// line for [2.5 MiB, 3 MiB) when it died; the file holds the first 2.5 MiB of it.
	f, err := os.Create(partial)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(b[:1<<20], 0)
	f.WriteAt(b[2<<20:5<<19], 2<<20)
	f.Close()
	rec := record(ranges.Range{Start: 0, End: 1 << 20}, ranges.Range{Start: 2 << 20, End: 5 << 19}, ranges.Range{Start: 5 << 19, End: 3 << 20})
	rec = rec[:len(rec)-4]
	if err := os.WriteFile(recordPath(partial), rec, 0o644); err != nil {
		t.Fatal(err)
	}
	cr, err := l.Check(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if cr.Partials != 1 || cr.PartialsDamaged != 1 || cr.PartialsRepaired != 0 {
		t.Errorf("Check: %+v, want one partial, damaged, not repaired", cr)
	}
	cr, err = l.Check(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if cr.PartialsRepaired != 1 {
		t.Errorf("Check with repair: %+v, want the record repaired", cr)
	}
	if cr, _ = l.Check(ctx, false); cr.PartialsDamaged != 0 {
		t.Errorf("Check after repair: %+v, want nothing damaged", cr)
	}

	w, err := l.Writer(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	rw := w.(RangeWriter)
	if w.Offset() != 1<<20 || !slices.Equal(rw.Held(), []Range{{Start: 2 << 20, End: 5 << 19}}) {
		t.Fatalf("took over at %d holding %v", w.Offset(), rw.Held())
	}
	w.Close()

	// A record that lists more than the partial holds (the partial was cut short
	// behind its back) is clipped to what is there.
	if err := os.Truncate(partial, 2<<20+100); err != nil {
		t.Fatal(err)
	}
	w, err = l.Writer(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	rw = w.(RangeWriter)
	if !slices.Equal(rw.Held(), []Range{{Start: 2 << 20, End: 2<<20 + 100}}) {
		t.Fatalf("held %v, want the stretch clipped to the partial", rw.Held())
	}
	w.Write(b[1<<20 : 2<<20])
	buf := make([]byte, 1<<20)
	rw.Absorb(buf)
	w.Write(b[2<<20+100:])
	if err := w.Commit(ctx, int64(len(b)), d.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(recordPath(partial)); !os.IsNotExist(err) {
		t.Errorf("the record is still there after the commit: %v", err)
	}

	// An orphan record (its partial gone) is damaged for Check, and removed by GC once
	// it expires.
	orphan := filepath.Join(dir, IngestDir, "sha256-"+string(bytes.Repeat([]byte("ab"), 32))+recordSuffix)
	os.WriteFile(orphan, record(ranges.Range{Start: 0, End: 10}), 0o644)
	if cr, _ := l.Check(ctx, false); cr.PartialsDamaged != 1 {
		t.Errorf("Check with an orphan record: %+v", cr)
	}
	if _, err := l.GC(ctx, WithIngestExpiry(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("GC left an orphan record: %v", err)
	}
}
