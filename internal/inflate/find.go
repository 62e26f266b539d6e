package inflate

import "encoding/binary"

// A boundary is where a search found a block to start a part at: a dynamic Huffman block
// whose header starts at bit, or a stored block whose length field starts at byte bit/8
// (its header is somewhere in the 10 bits before: any of them decode alike).
type boundary struct {
	bit    int64
	stored bool
}

// findBlock returns the first boundary in [from, to) of in, searching bit by bit for a
// dynamic Huffman block header (what zlib, klauspost and most encoders emit for all but
// tiny or incompressible blocks) that makes complete codes; or a stored block
// (incompressible data) whose length and its complement agree, with a plausible header
// before it. ok is false when there is none. A false find costs only speed: the part's
// decode fails on it and the search goes on after it, and the in-order reader takes a
// part only where the real decode of what comes before ends exactly at its start.
func findBlock(in []byte, from, to int64, scratch *specDecoder) (boundary, bool) {
	last := int64(len(in)-16) * 8 // loads take 8 bytes at a time
	to = min(to, last)
	for byt := from >> 3; byt*8 < to; byt++ {
		v := binary.LittleEndian.Uint64(in[byt:])
		if byt*8 >= from+10 && storedAt(in, int(byt)) {
			if storedAt(in, int(byt)+1) && in[byt] == 0 && in[byt+2] == 0xff {
				// A stored block of 0xff00 bytes or more, seen one byte early through the
				// zero byte of its header (0, L&0xff | L>>8 = 0xff, ^L&0xff agree as a
				// length and its complement): the next byte is the real one.
				byt++
			}
			return boundary{bit: byt * 8, stored: true}, true
		}
		for s := uint(0); s < 8; s++ {
			o := byt*8 + int64(s)
			if o < from || o >= to || !headerOK[(v>>s)&(1<<13-1)] {
				continue
			}
			// The code-length code's lengths, 3 bits each from bit 17 on, must make a
			// complete code.
			nclen := int((v>>(s+13))&15) + 4
			c := o + 17
			w := binary.LittleEndian.Uint64(in[c>>3:]) >> uint(c&7) // 57 bits at least
			sum := 0
			for i := range nclen {
				if l := (w >> (3 * uint(i))) & 7; l != 0 {
					sum += 128 >> l
				}
			}
			if sum == 128 && plausible(in, o, scratch) {
				return boundary{bit: o}, true
			}
		}
	}
	return boundary{}, false
}

// headerOK says, for the first 13 bits of a block, whether they can start a non-final
// dynamic block: BFINAL 0, BTYPE 2, HLIT <= 29, HDIST <= 29.
var headerOK = func() (t [1 << 13]bool) {
	for v := range t {
		t[v] = v&7 == 4 && (v>>3)&31 <= 29 && (v>>8)&31 <= 29
	}
	return t
}()

// storedAt reports whether a non-final stored block's length field can start at byte b:
// the length and its complement agree, and the three header bits and the padding before
// it are zero, as encoders write them.
func storedAt(in []byte, b int) bool {
	n := binary.LittleEndian.Uint16(in[b:])
	if n == 0 || ^n != binary.LittleEndian.Uint16(in[b+2:]) {
		return false
	}
	return in[b-1]&0xe0 == 0 || in[b-1] == 0 // header bits (and padding) just before
}

// plausible reports whether a dynamic block header that makes complete literal and
// distance codes starts at bit o. It decodes no symbol: the part's decode, which follows,
// is what tells a real block from chance (a complete code decodes any bits without error,
// but the header after its end of block then fails), so a real block is decoded once,
// not once here and again for the part.
func plausible(in []byte, o int64, d *specDecoder) bool {
	d.decoder = decoder{lit: d.lit, dist: d.dist, clen: d.clen}
	d.r = bitReader{in: in}
	d.r.seek(o)
	return d.blockHeader() == nil && d.hl != nil
}
