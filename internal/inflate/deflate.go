package inflate

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"sync/atomic"
	"unsafe"
)

// This file is the speculative decoder: a DEFLATE (RFC 1951) decoder that starts at a
// block boundary without knowing the 32 KiB window before it. A back-reference into that
// unknown window yields a marker (256 + the window index it names) instead of a byte, in
// an output of uint16; once the last 32 KiB of output hold no marker, nothing later can
// reach one, and the decoder goes on in bytes. The in-order reader resolves the markers
// once the previous part's output, and so the window, is known.
//
// It is at least as strict as klauspost's flate, which decodes every part that is not
// decoded speculatively: a part it decodes without error is one flate decodes without
// error, to the same bytes (the fuzz test compares them). Anything it refuses is decoded
// again by flate, which then says what is wrong.

const (
	windowSize  = 32 << 10
	primaryBits = 10
	maxLit      = 286
	maxDist     = 30
)

var (
	errCorrupt = errors.New("inflate: corrupt deflate stream")
	errInput   = errors.New("inflate: part runs past the bytes read for it")
	errTooBig  = errors.New("inflate: part output over the limit")
)

// huffman is a decoding table: a primary table indexed by the next primaryBits input
// bits, and sub-tables for longer codes. An entry is value<<8 | length, or, for a link,
// offset<<8 | 0x80 | sub-table bits; 0 is a code that does not exist.
type huffman struct {
	table [1 << primaryBits]uint32
	sub   []uint32
}

// init builds the table for the code lengths; false when they do not make a complete
// prefix code (a single code of length 1 is allowed, as zlib and flate do). No lengths
// at all makes an empty table, which fails on any use.
func (h *huffman) init(lengths []uint8) bool {
	var count [16]int
	maxLen := 0
	for _, n := range lengths {
		if n > 0 {
			count[n]++
			maxLen = max(maxLen, int(n))
		}
	}
	clear(h.table[:])
	h.sub = h.sub[:0]
	if maxLen == 0 {
		return true
	}
	code := 0
	var next [16]int
	for l := 1; l <= maxLen; l++ {
		code = (code + count[l-1]) << 1
		next[l] = code
	}
	// Kraft sum, in units of 2^-maxLen.
	sum := 0
	for l := 1; l <= maxLen; l++ {
		sum += count[l] << (maxLen - l)
	}
	if sum != 1<<maxLen && !(maxLen == 1 && count[1] == 1) {
		return false
	}
	subBits := max(0, maxLen-primaryBits)
	for sym, n := range lengths {
		if n == 0 {
			continue
		}
		c := next[n]
		next[n]++
		rev := int(bits.Reverse16(uint16(c)) >> (16 - n))
		e := uint32(sym)<<8 | uint32(n)
		if int(n) <= primaryBits {
			for i := rev; i < 1<<primaryBits; i += 1 << n {
				h.table[i] = e
			}
			continue
		}
		p := rev & (1<<primaryBits - 1)
		link := h.table[p]
		if link == 0 {
			link = uint32(len(h.sub))<<8 | 0x80 | uint32(subBits)
			h.table[p] = link
			h.sub = append(h.sub, make([]uint32, 1<<subBits)...)
		}
		off := int(link >> 8)
		for j := rev >> primaryBits; j < 1<<subBits; j += 1 << (int(n) - primaryBits) {
			h.sub[off+j] = e
		}
	}
	return true
}

var (
	lenBase   = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lenExtra  = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase  = [30]uint32{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	codeOrder = [19]int{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}

	fixedLit, fixedDist huffman
)

func init() {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	fixedLit.init(l[:])
	var d [32]uint8
	for i := range d {
		d[i] = 5
	}
	fixedDist.init(d[:])
}

// bitReader reads the input least significant bit first, 64 bits at a time.
type bitReader struct {
	in  []byte
	pos int // the next byte to load
	b   uint64
	nb  uint
}

// bit is the position of the next unread bit.
func (r *bitReader) bit() int64 { return int64(r.pos)*8 - int64(r.nb) }

// seek positions the reader at bit (within in).
func (r *bitReader) seek(bit int64) {
	r.pos, r.b, r.nb = int(bit>>3), 0, 0
	if s := uint(bit & 7); s != 0 {
		r.refill()
		r.b >>= s
		r.nb -= s
	}
}

func (r *bitReader) refill() {
	if r.pos+8 <= len(r.in) {
		r.b |= binary.LittleEndian.Uint64(r.in[r.pos:]) << r.nb
		r.pos += int(63-r.nb) >> 3
		r.nb |= 56
		return
	}
	for r.nb <= 56 && r.pos < len(r.in) {
		r.b |= uint64(r.in[r.pos]) << r.nb
		r.pos++
		r.nb += 8
	}
}

// need makes n (<= 56) bits available, or fails at the end of the input.
func (r *bitReader) need(n uint) error {
	if r.nb < n {
		r.refill()
		if r.nb < n {
			return errInput
		}
	}
	return nil
}

func (r *bitReader) take(n uint) uint32 {
	v := uint32(r.b & (1<<n - 1))
	r.b >>= n
	r.nb -= n
	return v
}

// sym decodes one symbol of h; the caller has refilled.
func (r *bitReader) sym(h *huffman) (int, error) {
	if r.nb < 15 {
		r.refill()
	}
	e := h.table[r.b&(1<<primaryBits-1)]
	if e&0x80 != 0 {
		e = h.sub[int(e>>8)+int(r.b>>primaryBits)&(1<<(e&31)-1)]
	}
	n := uint(e & 31)
	if n == 0 {
		return 0, errCorrupt
	}
	if n > r.nb {
		return 0, errInput
	}
	r.b >>= n
	r.nb -= n
	return int(e >> 8), nil
}

// header reads a block header's dynamic tables (after BFINAL and BTYPE) into lit and dist.
func (r *bitReader) dynamic(lit, dist, clen *huffman) error {
	if err := r.need(14); err != nil {
		return err
	}
	nlit := int(r.take(5)) + 257
	ndist := int(r.take(5)) + 1
	nclen := int(r.take(4)) + 4
	if nlit > maxLit || ndist > maxDist {
		return errCorrupt
	}
	var cl [19]uint8
	for i := range nclen {
		if err := r.need(3); err != nil {
			return err
		}
		cl[codeOrder[i]] = uint8(r.take(3))
	}
	if !clen.init(cl[:]) {
		return errCorrupt
	}
	var lengths [maxLit + maxDist]uint8
	n := nlit + ndist
	for i := 0; i < n; {
		x, err := r.sym(clen)
		if err != nil {
			return err
		}
		if x < 16 {
			lengths[i] = uint8(x)
			i++
			continue
		}
		var rep int
		var nb uint
		var v uint8
		switch x {
		case 16:
			if i == 0 {
				return errCorrupt
			}
			rep, nb, v = 3, 2, lengths[i-1]
		case 17:
			rep, nb = 3, 3
		default:
			rep, nb = 11, 7
		}
		if err := r.need(nb); err != nil {
			return err
		}
		rep += int(r.take(nb))
		if i+rep > n {
			return errCorrupt
		}
		for range rep {
			lengths[i] = v
			i++
		}
	}
	if !lit.init(lengths[:nlit]) || !dist.init(lengths[nlit:n]) {
		return errCorrupt
	}
	if lengths[256] == 0 {
		return errCorrupt // no end of block: flate fails later on such a block, never sooner
	}
	return nil
}

// event says why a decode step returned.
type event int

const (
	evSpace event = iota // the output buffer is full (a symbol might not fit)
	evBlock              // a block ended; final says whether it was the last one
	evInput              // more input is needed, at a point the decode can resume from
)

// inputMargin is how many input bytes must be left for a symbol to be decoded from the
// fast path; with less, and no more to come, the decode stops (evInput) and flate
// decodes the end, as the serial reader does.
const inputMargin = 16

// decoder decodes DEFLATE blocks into a buffer the caller gives, resumably: it stops when
// the buffer is full, at a block's end, or when the input runs low.
type decoder struct {
	r               bitReader
	lit, dist, clen huffman
	hl, hd          *huffman
	inBlock         bool // between a block's header and its end
	storedLeft      int  // bytes left of the stored block (inBlock, hl == nil)
	final           bool // the current (or last) block is the final one
	// marker mode (uint16 output): how far before the part's start the markers reach,
	// and where the last marker (or copy of one) ends.
	need, lastMarker int
	// byte mode: the buffer index below which no byte belongs to the stream, so a
	// distance reaching there is corrupt.
	floor int
}

// blockHeader reads the next block's header.
func (d *decoder) blockHeader() error {
	r := &d.r
	if err := r.need(3); err != nil {
		return err
	}
	d.final = r.take(1) == 1
	switch r.take(2) {
	case 0:
		pos := int(r.bit()+7) >> 3
		r.b, r.nb, r.pos = 0, 0, pos
		if pos+4 > len(r.in) {
			return errInput
		}
		n := binary.LittleEndian.Uint16(r.in[pos:])
		if ^n != binary.LittleEndian.Uint16(r.in[pos+2:]) {
			return errCorrupt
		}
		r.pos += 4
		d.hl, d.storedLeft = nil, int(n)
	case 1:
		d.hl, d.hd = &fixedLit, &fixedDist
	case 2:
		if err := r.dynamic(&d.lit, &d.dist, &d.clen); err != nil {
			return err
		}
		d.hl, d.hd = &d.lit, &d.dist
	default:
		return errCorrupt
	}
	d.inBlock = true
	return nil
}

// storedStart starts a part at a stored block whose length field is at the reader's
// (byte-aligned) position; its header, before it, was a non-final stored block's.
func (d *decoder) storedStart() error {
	r := &d.r
	pos := r.pos
	if pos+4 > len(r.in) {
		return errInput
	}
	n := binary.LittleEndian.Uint16(r.in[pos:])
	if ^n != binary.LittleEndian.Uint16(r.in[pos+2:]) {
		return errCorrupt
	}
	r.pos += 4
	d.hl, d.storedLeft, d.final, d.inBlock = nil, int(n), false, true
	return nil
}

// step decodes into out from index n until out is full (evSpace), the block ends
// (evBlock) or the input runs low (evInput); eof says no more input will come. It
// returns the new n.
func step[E byte | uint16](d *decoder, out []E, n int, eof, marked bool) (int, event, error) {
	r := &d.r
	if !d.inBlock {
		if !eof && r.pos > len(r.in)-1024 {
			return n, evInput, nil // a dynamic header takes a few hundred bytes at most
		}
		if err := d.blockHeader(); err != nil {
			if err == errInput && !eof {
				return n, evInput, nil
			}
			return n, 0, err
		}
	}
	if d.hl == nil {
		k := min(d.storedLeft, len(out)-n, len(r.in)-r.pos)
		for i, c := range r.in[r.pos : r.pos+k] {
			out[n+i] = E(c)
		}
		n += k
		r.pos += k
		d.storedLeft -= k
		switch {
		case d.storedLeft == 0:
			d.inBlock = false
			return n, evBlock, nil
		case n == len(out):
			return n, evSpace, nil
		case eof:
			return n, 0, errInput
		}
		return n, evInput, nil
	}
	return huffLoop(d, out, n, eof, marked)
}

// huffLoop decodes the symbols of a Huffman block: the hot loop.
func huffLoop[E byte | uint16](d *decoder, out []E, n int, eof, marked bool) (int, event, error) {
	r := &d.r
	in := r.in
	b, nb, pos := r.b, r.nb, r.pos
	lit, dist := d.hl, d.hd
	ev, err := evSpace, error(nil)
	for {
		if n+258 > len(out) {
			ev = evSpace
			break
		}
		if pos > len(in)-inputMargin {
			ev = evInput
			break
		}
		if nb < 48 {
			b |= binary.LittleEndian.Uint64(in[pos:]) << nb
			pos += int(63-nb) >> 3
			nb |= 56
		}
		e := lit.table[b&(1<<primaryBits-1)]
		if e&0x80 != 0 {
			e = lit.sub[int(e>>8)+int(b>>primaryBits)&(1<<(e&31)-1)]
		}
		l := uint(e & 31)
		if l == 0 {
			err = errCorrupt
			break
		}
		b >>= l
		nb -= l
		v := int(e >> 8)
		if v < 256 {
			out[n] = E(v)
			n++
			continue
		}
		if v == 256 {
			d.inBlock = false
			ev = evBlock
			break
		}
		v -= 257
		if v >= 29 {
			err = errCorrupt
			break
		}
		length := int(lenBase[v])
		if x := uint(lenExtra[v]); x > 0 {
			length += int(b & (1<<x - 1))
			b >>= x
			nb -= x
		}
		if nb < 28 {
			b |= binary.LittleEndian.Uint64(in[pos:]) << nb
			pos += int(63-nb) >> 3
			nb |= 56
		}
		e = dist.table[b&(1<<primaryBits-1)]
		if e&0x80 != 0 {
			e = dist.sub[int(e>>8)+int(b>>primaryBits)&(1<<(e&31)-1)]
		}
		l = uint(e & 31)
		if l == 0 {
			err = errCorrupt
			break
		}
		b >>= l
		nb -= l
		ds := int(e >> 8)
		if ds >= maxDist {
			err = errCorrupt
			break
		}
		distance := int(distBase[ds])
		if x := uint(distExtra[ds]); x > 0 {
			distance += int(b & (1<<x - 1))
			b >>= x
			nb -= x
		}
		s := n - distance
		if s < d.floor {
			if !marked {
				err = errCorrupt
				break
			}
			// Reaches into the unknown window.
			d.need = max(d.need, -s)
			for k := range length {
				if s+k < 0 {
					out[n+k] = E(256 + windowSize + s + k)
				} else {
					out[n+k] = out[s+k]
				}
			}
			n += length
			d.lastMarker = n
			continue
		}
		if marked && s < d.lastMarker && hasMarker(out[s:min(n, s+length)]) {
			d.lastMarker = n + length
		}
		if w := 8 / int(unsafe.Sizeof(out[0])); distance >= w && length <= 2*w {
			// Short (most copies): two 8-byte moves, no call. Each reads only what is
			// written already (the distance is at least a move), and what lands past
			// the copy's end is inside out (258 entries are free) and written over next.
			p := unsafe.Pointer(unsafe.SliceData(out))
			es := unsafe.Sizeof(out[0])
			*(*uint64)(unsafe.Add(p, uintptr(n)*es)) = *(*uint64)(unsafe.Add(p, uintptr(s)*es))
			*(*uint64)(unsafe.Add(p, uintptr(n+w)*es)) = *(*uint64)(unsafe.Add(p, uintptr(s+w)*es))
			n += length
			continue
		}
		if length <= distance {
			copy(out[n:n+length], out[s:s+length])
			n += length
			continue
		}
		for length > 0 {
			k := min(length, n-s)
			copy(out[n:n+k], out[s:s+k])
			n += k
			length -= k
		}
	}
	r.b, r.nb, r.pos = b, nb, pos
	if ev == evInput && eof {
		return n, 0, errInput
	}
	return n, ev, err
}

// hasMarker reports whether v holds a marker (an entry over 255), eight entries at a
// time; with bytes, never. It runs on most back-references of a part that holds markers.
func hasMarker[E byte | uint16](v []E) bool {
	if len(v) == 0 || unsafe.Sizeof(v[0]) == 1 {
		return false
	}
	k := len(v) &^ 7
	var or uint64
	if k > 0 {
		// Native byte order: each entry's high byte is under the mask either way.
		raw := unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 2*k)
		for i := 0; i < len(raw); i += 16 {
			or |= binary.NativeEndian.Uint64(raw[i:]) | binary.NativeEndian.Uint64(raw[i+8:])
		}
	}
	for _, x := range v[k:] {
		or |= uint64(uint16(x)) & 0xff00
	}
	return or&0xff00ff00ff00ff00 != 0
}

// part is what a speculative decode made of one part of the stream.
type part struct {
	start, end int64 // bit positions in the input of the first block and after the last one
	final      bool  // the last block was the final one of the deflate stream
	marked     []uint16
	plain      []byte // after marked: output in bytes (its first windowSize bytes are history)
	need       int    // how many bytes of the window before start the markers name
}

// outLen is the part's output size.
func (p *part) outLen() int {
	if p.plain == nil {
		return len(p.marked)
	}
	return len(p.marked) + len(p.plain) - windowSize
}

// specDecoder decodes parts speculatively.
type specDecoder struct {
	decoder
	maxOut   int
	progress *atomic.Int64 // if set, the bit after the last block decoded, for the reader
	half     int64         // tests: onHalf is called once, at the first block ending past it
	onHalf   func()
}

// decode decodes blocks from bit start of in until the first block boundary at or after
// stopAt, or the end of the final block. stored says that start is the length field of
// a (non-final) stored block, whose header is before it.
func (d *specDecoder) decode(in []byte, start, stopAt int64, stored bool) (*part, error) {
	d.decoder = decoder{lit: d.lit, dist: d.dist, clen: d.clen}
	d.r = bitReader{in: in}
	d.r.seek(start)
	p := &part{start: start}
	if stored {
		if err := d.storedStart(); err != nil {
			return nil, err
		}
	}
	hint := int(partOut.Load())
	if hint <= 0 {
		hint = 1 << 20
	}
	hint = hint + hint/10 + 258
	marked := freeUint16s.get(min(d.maxOut+258, hint))
	var plain []byte
	fail := func(err error) (*part, error) {
		// Most searches meet false boundaries first: their buffers serve the next try.
		freeUint16s.put(marked)
		if plain != nil {
			freeBytes.put(plain)
		}
		return nil, err
	}
	n := 0
	for {
		var ev event
		var err error
		if plain == nil {
			n, ev, err = step(&d.decoder, marked, n, false, true)
		} else {
			n, ev, err = step(&d.decoder, plain, n, false, false)
		}
		if err != nil {
			return fail(err)
		}
		switch ev {
		case evInput:
			return fail(errInput)
		case evSpace:
			if plain == nil {
				if n >= d.maxOut {
					return fail(errTooBig)
				}
				grown := freeUint16s.get(min(len(marked)*3/2, d.maxOut+258))
				copy(grown, marked[:n])
				freeUint16s.put(marked)
				marked = grown
			} else {
				if n-windowSize+len(p.marked) >= d.maxOut {
					return fail(errTooBig)
				}
				grown := freeBytes.get(windowSize + min((len(plain)-windowSize)*3/2, d.maxOut-len(p.marked)+258))
				copy(grown, plain[:n])
				freeBytes.put(plain)
				plain = grown
			}
			continue
		}
		// evBlock
		if d.progress != nil {
			d.progress.Store(d.r.bit())
		}
		if d.onHalf != nil && d.r.bit() >= d.half {
			d.onHalf()
			d.onHalf = nil
		}
		if d.final || d.r.bit() >= stopAt {
			p.final = d.final
			break
		}
		if plain == nil && n-d.lastMarker >= windowSize {
			// Nothing later can reach a marker: go on in bytes, with the window as history.
			p.marked = marked[:n]
			plain = freeBytes.get(windowSize + min(d.maxOut, max(64<<10, hint-n)))
			for i, v := range marked[n-windowSize : n] {
				plain[i] = byte(v)
			}
			n = windowSize
			d.floor = 0
		}
	}
	p.end = d.r.bit()
	p.need = d.need
	defer func() { partOut.Store(int64(p.outLen())) }()
	if plain == nil {
		p.marked = marked[:n]
	} else {
		p.plain = plain[:n]
	}
	return p, nil
}
