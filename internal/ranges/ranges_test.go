package ranges

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestSetAgainstBitmap checks every operation against a bitmap of the same bytes, over
// random sequences of additions and removals.
func TestSetAgainstBitmap(t *testing.T) {
	const n = 200
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		var s Set
		var bits [n]bool
		for op := 0; op < 20; op++ {
			a := rng.Int64N(n)
			b := a + rng.Int64N(n-a+1)
			if rng.IntN(3) == 0 {
				s = s.Sub(a, b)
				for i := a; i < b; i++ {
					bits[i] = false
				}
			} else {
				s = s.Add(a, b)
				for i := a; i < b; i++ {
					bits[i] = true
				}
			}
			check(t, s, bits[:])
		}
	}
}

func check(t *testing.T, s Set, bits []bool) {
	t.Helper()
	var want Set
	for i := 0; i < len(bits); i++ {
		if !bits[i] {
			continue
		}
		j := i
		for j < len(bits) && bits[j] {
			j++
		}
		want = append(want, Range{int64(i), int64(j)})
		i = j
	}
	if !slices.Equal(s, want) {
		t.Fatalf("set %v, want %v", s, want)
	}
	var total int64
	for _, b := range bits {
		if b {
			total++
		}
	}
	if s.Total() != total {
		t.Fatalf("Total %d, want %d", s.Total(), total)
	}
	gaps := s.Gaps(0, int64(len(bits)))
	for i := range bits {
		_, inS := s.At(int64(i))
		_, inGap := gaps.At(int64(i))
		if inS != bits[i] || inGap == bits[i] {
			t.Fatalf("byte %d: in set %v, in gaps %v, want %v", i, inS, inGap, bits[i])
		}
	}
	for a := 0; a < len(bits); a += 7 {
		for b := a; b <= len(bits); b += 11 {
			all := true
			for i := a; i < b; i++ {
				all = all && bits[i]
			}
			if s.Covers(int64(a), int64(b)) != all {
				t.Fatalf("Covers(%d, %d) = %v, want %v (set %v)", a, b, !all, all, s)
			}
		}
	}
	c := s.Clip(50, 150)
	for i := range bits {
		_, in := c.At(int64(i))
		if in != (bits[i] && i >= 50 && i < 150) {
			t.Fatalf("Clip: byte %d in %v", i, in)
		}
	}
}
