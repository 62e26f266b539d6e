package unpack

import "hash/maphash"

// pathSet is the set of paths a layer has written (and their ancestors), which its
// whiteouts must spare. It keeps 128 bits of two seeded hashes per path rather than the
// path itself, so its memory is a small constant per entry whatever the names' lengths;
// the seeds are random per set, so an archive cannot be built to make two paths collide
// (the chance that two of a billion paths do is below 10^-20).
type pathSet struct {
	s1, s2 maphash.Seed
	m      map[[2]uint64]struct{}
}

func newPathSet() *pathSet {
	return &pathSet{s1: maphash.MakeSeed(), s2: maphash.MakeSeed(), m: make(map[[2]uint64]struct{})}
}

func (s *pathSet) key(p string) [2]uint64 {
	return [2]uint64{maphash.String(s.s1, p), maphash.String(s.s2, p)}
}

// has reports whether p (a clean absolute path inside the tree) or a path below it was
// added.
func (s *pathSet) has(p string) bool {
	_, ok := s.m[s.key(p)]
	return ok
}

// add adds p and its ancestors. It stops at the first ancestor already there, whose own
// ancestors were added with it.
func (s *pathSet) add(p string) {
	for {
		k := s.key(p)
		if _, ok := s.m[k]; ok {
			return
		}
		s.m[k] = struct{}{}
		if p == "/" {
			return
		}
		p = parentOf(p)
	}
}

// parentOf returns the parent of a clean absolute path ("/" for "/a" and for "/").
func parentOf(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// childOf joins a clean absolute path and a name.
func childOf(dir, name string) string {
	if dir == "/" {
		return "/" + name
	}
	return dir + "/" + name
}
