package layers

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	digest "github.com/opencontainers/go-digest"

	"github.com/pullkit/pullkit/internal/regtest"
	"github.com/pullkit/pullkit/manifest"
)

// pushBlob uploads data to repo on the registry at base (POST, then PUT with the digest).
func pushBlob(t *testing.T, base, repo string, data []byte) {
	t.Helper()
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s, %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", string(digest.FromBytes(data)))
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put blob: %s", resp.Status)
	}
}

// TestAgainstDistribution runs resume and parallel ranges against the real registry
// (docker-registry 2.8), through a proxy that cuts the first body it relays.
func TestAgainstDistribution(t *testing.T) {
	reg := regtest.Start(t)
	base := "http://" + reg.Host
	tarball := makeTar(t, 90, 2<<20)
	blob := gzipBytes(t, tarball)
	pushBlob(t, base, "pullkit/layers", blob)
	target, _ := url.Parse(base)

	var mu sync.Mutex
	var ranges []string
	cutting := true
	cut := len(blob) / 3
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ranges = append(ranges, r.Header.Get("Range"))
		first := len(ranges) == 1 && cutting
		mu.Unlock()
		out, _ := http.NewRequestWithContext(r.Context(), r.Method, target.String()+r.URL.Path, nil)
		if h := r.Header.Get("Range"); h != "" {
			out.Header.Set("Range", h)
		}
		resp, err := http.DefaultClient.Do(out)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		if first {
			io.CopyN(w, resp.Body, int64(cut))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)

	desc := descOf(manifest.MediaTypeDockerLayer, blob)
	for _, tc := range []struct {
		name string
		cut  bool
		opts []Option
		want func([]string) error
	}{
		{"resume after a cut", true, nil, func(got []string) error {
			if want := []string{"", fmt.Sprintf("bytes=%d-", cut)}; !slices.Equal(got, want) {
				return fmt.Errorf("Range headers %q, want %q", got, want)
			}
			return nil
		}},
		{"parallel ranges", false, []Option{WithParallelRanges(1, 3), withChunkSize(256 << 10)}, func(got []string) error {
			if len(got) < 3 || slices.Contains(got, "") {
				return fmt.Errorf("Range headers %q, want several ranged requests", got)
			}
			return nil
		}},
		{"schema 1 style: unknown size", true, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			ranges, cutting = nil, tc.cut
			mu.Unlock()
			l := openTemp(t)
			d := desc
			if strings.HasPrefix(tc.name, "schema 1") {
				d.Size = -1
			}
			f := &httpFetcher{base: proxy.URL + "/v2/pullkit/layers/blobs", client: http.DefaultClient}
			res, err := Fetch(context.Background(), f, l, []Blob{{Desc: d, WantDiffID: digest.FromBytes(tarball)}}, append(tc.opts, fastRetry)...)
			if err != nil {
				t.Fatal(err)
			}
			assertStored(t, l, blob)
			if res[0].Size != int64(len(blob)) {
				t.Errorf("size %d, want %d", res[0].Size, len(blob))
			}
			if tc.want != nil {
				mu.Lock()
				got := slices.Clone(ranges)
				mu.Unlock()
				if err := tc.want(got); err != nil {
					t.Error(err)
				}
			}
		})
	}
}
