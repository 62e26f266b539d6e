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
// tiny or incompressible blocks) that makes complete codes and whose block decodes to
// its end, followed by a plausible header; or a stored block (incompressible data)
// whose length and its complement agree, with a plausible header before it. ok is false
// when there is none. A false find costs only speed: the in-order reader takes a part
// only where the real decode of what comes before ends exactly at its start.
func findBlock(in []byte, from, to int64, scratch *specDecoder) (boundary, bool) {
	last := int64(len(in)-16) * 8 // peek loads 8 bytes at a time
	to = min(to, last)
	for o := from; o < to; o++ {
		b := int(o >> 3)
		s := uint(o & 7)
		v := binary.LittleEndian.Uint64(in[b:]) >> s
		if s == 0 && o >= from+10 && storedAt(in, b) {
			return boundary{bit: o, stored: true}, true
		}
		// BFINAL = 0, BTYPE = 2; HLIT <= 29; HDIST <= 29.
		if v&7 != 4 || (v>>3)&31 > 29 || (v>>8)&31 > 29 {
			continue
		}
		nclen := int((v>>13)&15) + 4
		// The code-length code's lengths, 3 bits each from bit 17 on: a complete code.
		c := o + 17
		w := binary.LittleEndian.Uint64(in[c>>3:]) >> uint(c&7) // 57 bits at least
		sum := 0
		for i := range nclen {
			if l := (w >> (3 * uint(i))) & 7; l != 0 {
				sum += 128 >> l
			}
		}
		if sum != 128 {
			continue
		}
		if plausible(in, o, scratch) {
			return boundary{bit: o}, true
		}
	}
	return boundary{}, false
}

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

// plausible decodes the dynamic block at bit o (its first 64 Ki symbols' worth), in
// marker mode, and checks that another block can start where it ends.
func plausible(in []byte, o int64, d *specDecoder) bool {
	d.decoder = decoder{lit: d.lit, dist: d.dist, clen: d.clen}
	d.r = bitReader{in: in}
	d.r.seek(o)
	if d.blockHeader() != nil {
		return false
	}
	if cap(d.scratch) == 0 {
		d.scratch = make([]uint16, 64<<10)
	}
	n, ev, err := step(&d.decoder, d.scratch, 0, false, true)
	if err != nil || n == 0 {
		return false
	}
	if ev != evBlock || d.r.need(3) != nil {
		return true // a long block, or the end of what was read: as far as can be told
	}
	switch (d.r.b >> 1) & 3 {
	case 3:
		return false
	case 2:
		d.r.take(3)
		return d.r.dynamic(&d.lit, &d.dist, &d.clen) == nil
	case 0:
		p := int(d.r.bit()+3+7) >> 3
		if p+4 > len(in) {
			return true
		}
		return ^binary.LittleEndian.Uint16(in[p:]) == binary.LittleEndian.Uint16(in[p+2:])
	}
	return true
}
