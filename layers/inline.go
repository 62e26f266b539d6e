package layers

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/pullkit/pullkit"
	"github.com/pullkit/pullkit/store"
)

// inline receives a small blob, or one of unknown size, in its worker alone: one request
// (resumed from what the writer holds when it breaks), read into one buffer, written,
// committed. A blob of unknown size streams through a block at a time, within the size
// cap.
func (e *engine) inline(ctx context.Context, j *job, w store.Writer) {
	size := j.desc.Size
	taps, err := e.openTaps(ctx, j, w)
	if err != nil {
		w.Close()
		e.failJob(j, err)
		return
	}
	e.started(j, w.Offset())
	err = e.receiveInline(ctx, j, w, taps, &size)
	if err == nil {
		if err = w.Commit(ctx, size, j.desc.Digest); err != nil {
			err = blobErr(j, pullkit.OpVerifyBlob, err)
			taps.close(err)
		}
	} else {
		w.Close()
		taps.close(err)
	}
	var res Result
	if err == nil {
		res = Result{Desc: j.desc, Fetched: true}
		res.Desc.Size = size
		res.DiffID, err = taps.close(nil)
	}
	switch {
	case err == nil:
		e.report(j, pullkit.Event{Kind: pullkit.EventVerified, Done: size, Total: size})
		e.done(j, res)
	case e.restart(j, err):
	default:
		e.failJob(j, err)
	}
}

// receiveInline brings the whole blob into w; for a blob of unknown size it sets *size
// once the body ends.
func (e *engine) receiveInline(ctx context.Context, j *job, w store.Writer, taps *taps, size *int64) error {
	var buf []byte
	if *size >= 0 {
		buf = make([]byte, *size+1) // one byte more, to notice a body that runs long
	} else {
		buf = e.pool.get()
		defer e.pool.put(buf)
	}
	// The request outlives ctx by the cancel grace: a cancelled call reads the answer on
	// its way to its end (within the grace) and keeps it, as a transfer's parts do (see
	// part.settle), rather than throw away what the server has sent.
	rc := newReqCtx(ctx, nil, e.o.cancelGrace)
	defer rc.close()
	var tries tries
	for {
		off := w.Offset()
		if *size >= 0 && off == *size {
			return ctx.Err() // done; after a cancel, kept for the next call to commit
		}
		if err := ctx.Err(); err != nil {
			return err // nothing more is asked for once the call is done
		}
		body, from, _, err := openBody(rc.ctx, e.f, j.desc, off, -1)
		if err == nil && from < off {
			// The whole blob for a resume: what the writer has is read past.
			if err = skip(rc.ctx, body, off-from); err != nil {
				body.Close()
			}
		}
		if err != nil {
			if err := tries.failed(e, j, ctx, 0, off, err); err != nil {
				return err
			}
			continue
		}
		var got int64
		for {
			var n int
			var rerr error
			want := buf
			if *size >= 0 {
				want = buf[:*size-off+1]
			}
			n, rerr = readFull(rc.ctx, body, want)
			if rerr != nil && rc.ctx.Err() != nil && n < len(want) {
				// The grace is over: take what the body holds already (see drainWait).
				dctx, cancel := drainCtx()
				var m int
				m, rerr = readFull(dctx, body, want[n:])
				cancel()
				n += m
			}
			if n > 0 {
				end := off + int64(n)
				switch {
				case *size >= 0 && end > *size:
					body.Close()
					return blobErr(j, pullkit.OpFetchBlob, &pullkit.SizeMismatchError{What: j.what, Want: *size, Got: end, Source: "body (at least)"})
				case *size < 0 && end > e.o.maxSize:
					body.Close()
					return blobErr(j, pullkit.OpFetchBlob, &pullkit.TooLargeError{What: j.what + " of unknown size", Limit: e.o.maxSize, Size: -1})
				}
				if _, err := w.Write(buf[:n]); err != nil {
					body.Close()
					return blobErr(j, pullkit.OpWriteBlob, err)
				}
				if err := taps.write(buf[:n]); err != nil {
					body.Close()
					return blobErr(j, pullkit.OpTee, err)
				}
				e.recv.Add(int64(n))
				off, got = end, got+int64(n)
				if *size < 0 || n >= smallBlob {
					e.report(j, pullkit.Event{Kind: pullkit.EventProgress, Done: off, Total: *size})
				}
			}
			if rerr == nil && *size < 0 {
				continue
			}
			if rerr == nil || errors.Is(rerr, io.EOF) {
				body.Close()
				if *size < 0 {
					*size = off
				}
				if off == *size {
					return ctx.Err() // after a cancel, kept for the next call to commit
				}
				rerr = fmt.Errorf("body ended at byte %d of %d: %w", off, *size, io.ErrUnexpectedEOF)
			} else {
				body.Close()
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := tries.failed(e, j, ctx, got, off, rerr); err != nil {
				return err
			}
			break
		}
	}
}
