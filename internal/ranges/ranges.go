// Package ranges is a set of byte stretches of one blob, as the store keeps what a
// transfer received out of order and the transfer plans what it still lacks: sorted,
// disjoint, never touching, each [Start, End).
package ranges

import "sort"

// Range is the stretch of bytes [Start, End).
type Range struct{ Start, End int64 }

// Len is how many bytes r covers.
func (r Range) Len() int64 { return r.End - r.Start }

// Set is a sorted list of disjoint, non-adjacent, non-empty ranges.
type Set []Range

// Add returns s with [start, end) added (merged with what it touches).
func (s Set) Add(start, end int64) Set {
	if start >= end {
		return s
	}
	// The first range that ends at or after start, and the first that starts after end.
	i := sort.Search(len(s), func(i int) bool { return s[i].End >= start })
	j := sort.Search(len(s), func(j int) bool { return s[j].Start > end })
	if i < j {
		start = min(start, s[i].Start)
		end = max(end, s[j-1].End)
	}
	out := make(Set, 0, len(s)-(j-i)+1)
	out = append(out, s[:i]...)
	out = append(out, Range{start, end})
	return append(out, s[j:]...)
}

// Sub returns s without [start, end).
func (s Set) Sub(start, end int64) Set {
	if start >= end || len(s) == 0 {
		return s
	}
	var out Set
	for _, r := range s {
		if r.End <= start || r.Start >= end {
			out = append(out, r)
			continue
		}
		if r.Start < start {
			out = append(out, Range{r.Start, start})
		}
		if r.End > end {
			out = append(out, Range{end, r.End})
		}
	}
	return out
}

// Clip returns s within [start, end).
func (s Set) Clip(start, end int64) Set {
	var out Set
	for _, r := range s {
		r.Start, r.End = max(r.Start, start), min(r.End, end)
		if r.Start < r.End {
			out = append(out, r)
		}
	}
	return out
}

// Covers reports whether s holds all of [start, end).
func (s Set) Covers(start, end int64) bool {
	if start >= end {
		return true
	}
	i := sort.Search(len(s), func(i int) bool { return s[i].End > start })
	return i < len(s) && s[i].Start <= start && s[i].End >= end
}

// At returns the range that holds offset off, if one does.
func (s Set) At(off int64) (Range, bool) {
	i := sort.Search(len(s), func(i int) bool { return s[i].End > off })
	if i < len(s) && s[i].Start <= off {
		return s[i], true
	}
	return Range{}, false
}

// Total is how many bytes s covers.
func (s Set) Total() int64 {
	var n int64
	for _, r := range s {
		n += r.Len()
	}
	return n
}

// Gaps returns what [start, end) holds that s does not.
func (s Set) Gaps(start, end int64) Set {
	var out Set
	at := start
	for _, r := range s {
		if r.End <= at {
			continue
		}
		if r.Start >= end {
			break
		}
		if r.Start > at {
			out = append(out, Range{at, r.Start})
		}
		at = max(at, r.End)
	}
	if at < end {
		out = append(out, Range{at, end})
	}
	return out
}
