package layers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestUnknownSizeIsCapped: a blob whose descriptor gives no size (schema 1) cannot make
// a transfer run without end. A body announced larger than the cap is refused before it
// is read; a chunked body that runs past the cap is cut there; nothing stays behind.
func TestUnknownSizeIsCapped(t *testing.T) {
	blob := randBytes(5, 3<<20)
	desc := descOf("", blob)
	desc.Size = -1
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprint("chunked=", chunked), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(len(blob)))
				}
				for off := 0; off < len(blob); off += 64 << 10 {
					_, _ = w.Write(blob[off:min(off+64<<10, len(blob))])
					if f, ok := w.(http.Flusher); ok && chunked {
						f.Flush()
					}
				}
			}))
			t.Cleanup(srv.Close)
			l := openTemp(t)
			f := &httpFetcher{base: srv.URL, client: srv.Client()}
			_, err := Fetch(context.Background(), f, l, []Blob{{Desc: desc}}, WithMaxUnknownSize(1<<20), WithMaxAttempts(1))
			var sm *SizeMismatchError
			if !errors.Is(err, ErrSizeMismatch) || !errors.As(err, &sm) || sm.Want != 1<<20 {
				t.Fatalf("Fetch = %v; want a SizeMismatchError against the 1 MiB cap", err)
			}
			if l.Has(desc.Digest) {
				t.Fatal("a blob over the cap got its final name")
			}
			if left := ingestEntries(t, l); len(left) != 0 {
				t.Fatalf("ingest not empty: %v", left)
			}
			// Under the cap the same blob, still of unknown size, is fetched and verified.
			res, err := Fetch(context.Background(), f, l, []Blob{{Desc: desc}}, WithMaxUnknownSize(4<<20))
			if err != nil || res[0].Size != int64(len(blob)) || !l.Has(desc.Digest) {
				t.Fatalf("under the cap: %v, %+v", err, res)
			}
			assertStored(t, l, blob)
		})
	}
}
